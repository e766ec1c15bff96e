"""Human text for the instances in `ollama-ops plan`: every per-instance value with its reason."""

from __future__ import annotations

import dataclasses

from ollama_ops.cli.output import Column, Doc, plural
from ollama_ops.model.deployment import Deployment, Section, Setting, Source
from ollama_ops.model.instances import InstancesPlan
from ollama_ops.plan.explain import SOURCE_STYLE, printable, worksheet_doc


def _template_rows(plan: InstancesPlan, main: Deployment) -> Deployment:
    """The template's own rows: its program and user, and what it leaves out of main's plan."""
    rows = [
        Setting(sec, key, value, Source.RULE, "the instances' program and service user")
        for sec, key, value in plan.template.base_unit
    ]
    kept = {(s.key, s.value) for s in plan.template.settings}
    per_instance = sorted(
        {
            s.key if s.section is not Section.ENV else "Environment"
            for s in main.active()
            if (s.key, s.value) not in kept
        }
    )
    rows.append(
        Setting(
            Section.SERVICE,
            " ".join(per_instance),
            None,
            Source.RULE,
            "left to each instance's drop-in below",
        )
    )
    rows += [s for s in plan.template.settings if s.value is None and s.reason.startswith("left")]
    return dataclasses.replace(plan.template, settings=tuple(rows))


def _frontdoor(doc: Doc, plan: InstancesPlan) -> None:
    door = plan.frontdoor
    if door is None:
        return
    doc.blank()
    doc.heading(f"Front door {printable(door.path)} (nginx; value, source, reason):")
    rows = [
        (
            (f"{r.key} {r.value}" if r.value is not None else f"{r.key} (not set)", ""),
            (r.source.value, SOURCE_STYLE[r.source]),
            (r.reason, ""),
        )
        for r in door.rows
    ]
    doc.table(rows, (Column(34, fixed=True), Column(9, fixed=True)))


def report_doc(doc: Doc, main: Deployment) -> None:
    """The template, each instance's worksheet, the front door and the notes; nothing without
    instances."""
    plan = main.instances
    if plan is None:
        return
    names = ", ".join(d.unit_name for d in plan.instances)
    doc.blank()
    doc.heading(
        f"Template {printable(plan.template.unit_name)} for {printable(names)}: the hardening "
        f"and restart policy of {printable(main.unit_name)} above, and (value, source, reason):"
    )
    worksheet_doc(doc, _template_rows(plan, main))
    for d in plan.instances:
        doc.blank()
        doc.heading(f"Settings for {printable(d.unit_name)} (value, source, reason):")
        worksheet_doc(doc, d)
    _frontdoor(doc, plan)
    if plan.notes:
        doc.blank()
        doc.heading("Instance notes:")
        doc.bullets(plan.notes, style="yellow")


def report_lines(main: Deployment, width: int = 100) -> list[str]:
    """:func:`report_doc` as plain lines (starting with a blank one); [] without instances."""
    doc = Doc(width)
    doc.lines.append(())
    report_doc(doc, main)
    return doc.plain().splitlines() if main.instances is not None else []


def headline(main: Deployment) -> str | None:
    """One line for the plan's summary: the instances and the front door; None without."""
    plan = main.instances
    if plan is None:
        return None
    door = f", behind the nginx front door {plan.frontdoor.path}" if plan.frontdoor else ""
    return (
        f"also {plural(len(plan.instances), 'instance')} of {plan.template.unit_name} "
        f"({', '.join(d.unit_name for d in plan.instances)}){door}"
    )


def _rows(d: Deployment) -> list[dict[str, object]]:
    return [
        {
            "section": s.section.value,
            "key": s.key,
            "value": s.value,
            "source": s.source.value,
            "reason": s.reason,
        }
        for s in d.settings
    ]


def report_json(main: Deployment) -> dict[str, object] | None:
    """The same facts for `plan --json`: template, instances, front door, notes; None without."""
    plan = main.instances
    if plan is None:
        return None
    door = plan.frontdoor
    return {
        "template": {"unit": plan.template.unit_name, "settings": _rows(plan.template)},
        "instances": [{"unit": d.unit_name, "settings": _rows(d)} for d in plan.instances],
        "frontdoor": None
        if door is None
        else {
            "path": door.path,
            "rows": [
                {"key": r.key, "value": r.value, "source": r.source.value, "reason": r.reason}
                for r in door.rows
            ],
        },
        "notes": list(plan.notes),
    }
