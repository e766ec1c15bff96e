"""Human text for the instances in `ollama-ops plan`: every per-instance value with its reason."""

from __future__ import annotations

import dataclasses

from ollama_ops.model.deployment import Deployment, Section, Setting, Source
from ollama_ops.model.instances import InstancesPlan
from ollama_ops.plan.explain import printable, worksheet


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


def _frontdoor(plan: InstancesPlan) -> list[str]:
    door = plan.frontdoor
    if door is None:
        return []
    width = min(60, max(len(f"{r.key} {r.value}") for r in door.rows))
    lines = [
        f"  {(r.key + ' ' + r.value) if r.value is not None else r.key + ' (not set)':<{width}}"
        f"  {r.source.value:<9}  {printable(r.reason)}"
        for r in door.rows
    ]
    return ["", f"Front door {door.path} (nginx; value, source, reason):", *lines]


def report_lines(main: Deployment) -> list[str]:
    """The template, each instance's worksheet, the front door and the notes; [] without any."""
    plan = main.instances
    if plan is None:
        return []
    names = ", ".join(d.unit_name for d in plan.instances)
    out = [
        "",
        f"Template {plan.template.unit_name} for {names}: the hardening and restart policy of "
        f"{main.unit_name} above, and (value, source, reason):",
        worksheet(_template_rows(plan, main)),
    ]
    for d in plan.instances:
        out += ["", f"Settings for {d.unit_name} (value, source, reason):", worksheet(d)]
    out += _frontdoor(plan)
    if plan.notes:
        out += ["", "Instance notes:"] + [f"  - {printable(n)}" for n in plan.notes]
    return out
