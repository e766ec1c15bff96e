"""Human text for `ollama-ops plan`: a summary, then the worksheet with a reason per value.

The order is what an operator needs first: what would change and the command
that does it, the host and the key sizes, the notes to act on, the files; then
the details: every setting with its source and reason, the diff, and the seed
guide setting by setting. Everything fits 100 columns (``cli.output``);
:func:`plan_json` is the same facts for ``plan --json``. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ollama_ops.apply.diff import Change
from ollama_ops.cli.output import Column, Doc, counts, plural, printable
from ollama_ops.model.config import format_size
from ollama_ops.model.deployment import Deployment, Section, Setting, Source
from ollama_ops.model.facts import Gpu, HostFacts, to_json_dict
from ollama_ops.plan import guide

__all__ = ["printable"]  # re-exported: other modules escape text through explain

KINDS = ("new", "changed", "removed")
# The values an operator checks first, in the summary.
KEY_VALUES = (
    "MemoryHigh",
    "MemoryMax",
    "CPUWeight",
    "AllowedCPUs",
    "OLLAMA_NUM_PARALLEL",
    "OLLAMA_MAX_LOADED_MODELS",
    "OLLAMA_HOST",
)
SOURCE_STYLE = {Source.RULE: "cyan", Source.CONFIG: "magenta", Source.HARDENING: "blue"}
KIND_STYLE = {"new": "green", "changed": "yellow", "removed": "red", "unchanged": "dim"}


def _gpus(gpus: Sequence[Gpu]) -> str:
    if not gpus:
        return "no GPU"
    groups: dict[tuple[str, int], int] = {}
    for g in gpus:
        name = printable(g.name) or "unnamed"
        if g.vendor.value.lower() not in name.lower():
            name = f"{g.vendor.value} {name}"
        groups[(name, g.memory_bytes)] = groups.get((name, g.memory_bytes), 0) + 1
    each = ", ".join(
        f"{n}x {name} with {format_size(mem)} each" if n > 1 else f"{name} with {format_size(mem)}"
        for (name, mem), n in groups.items()
    )
    return f"{plural(len(gpus), 'GPU')} ({each})"


def host_name(facts: HostFacts) -> str:
    """``host NAME``, or ``unnamed host`` when the facts have no hostname."""
    return f"host {printable(facts.hostname)}" if facts.hostname else "unnamed host"


def host_summary(facts: HostFacts) -> str:
    """One line: RAM, CPUs, NUMA nodes, GPUs, systemd, the ollama install."""
    nodes = len(facts.numa_nodes) or 1
    ollama = facts.ollama
    installed = (
        f"ollama {printable(ollama.binary)} ({printable(ollama.version or 'version unknown')})"
        if ollama.binary
        else "ollama not installed"
    )
    user = f"user {printable(ollama.user)}" if ollama.user else "no ollama user (DynamicUser)"
    return (
        f"{host_name(facts)}: {format_size(facts.memory_bytes)} RAM, "
        f"{plural(facts.cpus, 'CPU')}, {plural(nodes, 'NUMA node')}, {_gpus(facts.gpus)}, "
        f"systemd {facts.systemd_version}; {installed}, {user}"
    )


def _shown(s: Setting) -> str:
    if s.value is None:
        return f"{s.key} (not written)"
    if s.value == "":
        return f"{s.key}= (reset)"
    return f"{s.key}={s.value}"


SECTION_TITLES = {
    Section.UNIT: "[Unit]",
    Section.SERVICE: "[Service]",
    Section.ENV: "Environment= (in [Service])",
}


def worksheet_doc(doc: Doc, deployment: Deployment) -> None:
    """Every setting by section: the value (or why it is not written), its source, the reason."""
    for section in Section:
        settings = [s for s in deployment.settings if s.section is section]
        if not settings:
            continue
        doc.text(SECTION_TITLES[section], indent="  ", style="bold")
        rows = [
            (
                (_shown(s), "" if s.value is not None else "dim"),
                (s.source.value, SOURCE_STYLE[s.source]),
                (s.reason, ""),
            )
            for s in settings
        ]
        doc.table(rows, (Column(34, fixed=True), Column(9, fixed=True)), indent="    ")


def worksheet(deployment: Deployment) -> str:
    doc = Doc()
    worksheet_doc(doc, deployment)
    return doc.plain()


def guide_doc(doc: Doc, deployment: Deployment) -> None:
    """Every setting of the seed guide: the same, ours instead, or left out, with the reason."""
    accounts = guide.account(deployment)
    same = sorted({a.guide.key for a in accounts if a.verdict is guide.Verdict.SAME})
    doc.heading(
        f"The seed guide, setting by setting ({len(accounts)} settings in "
        f"{len({a.guide.file for a in accounts})} files):"
    )
    doc.text(f"same ({len(same)}): " + ", ".join(same), indent="  ", hanging="    ")
    seen: set[tuple[str, str, guide.Verdict]] = set()
    for verdict in (guide.Verdict.DIFFERS, guide.Verdict.LEFT_OUT):
        doc.text(f"{verdict.value}:", indent="  ", style="bold")
        for a in accounts:
            key = (a.guide.key, a.guide.value, a.verdict)
            if a.verdict is not verdict or key in seen:
                continue
            seen.add(key)
            ours = f" -> {a.ours}" if a.ours and verdict is guide.Verdict.DIFFERS else ""
            where = "" if a.guide.file == guide.DROPIN else f"[{a.guide.file}] "
            doc.text(
                f"{where}{a.guide.key}={a.guide.value}{ours}: {a.reason}",
                indent="    ",
                hanging="      ",
            )
    doc.text("other files of the guide:", indent="  ", style="bold")
    files: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for a in accounts:
        if a.verdict is guide.Verdict.OTHER:
            files.setdefault(a.guide.file, []).append(a.guide.key)
            reasons[a.guide.file] = a.reason
    for name, keys in files.items():
        doc.text(
            f"{name} ({', '.join(dict.fromkeys(keys))}): {reasons[name]}",
            indent="    ",
            hanging="      ",
        )


def guide_section(deployment: Deployment) -> list[str]:
    doc = Doc()
    guide_doc(doc, deployment)
    return doc.plain().splitlines()


def diff_doc(doc: Doc, diff_text: str) -> None:
    """A unified diff, line by line as it is, coloured; a line wider than the terminal is
    folded with a trailing backslash (``--json`` has the diff exactly)."""
    for line in diff_text.splitlines():
        style = ""
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("@@"):
            style = "cyan"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        doc.verbatim(line, style, line[:1] if line[:1] in "+- " else "")


def change_summary(changes: Sequence[Change]) -> str:
    """``2 files (1 new, 1 changed)``."""
    return f"{plural(len(changes), 'file')} ({counts((c.kind for c in changes), KINDS)})"


def key_values(deployment: Deployment) -> str:
    shown = [f"{k}={deployment.value(k)}" for k in KEY_VALUES if deployment.value(k) is not None]
    hardening = sum(1 for s in deployment.active() if s.source is Source.HARDENING)
    return ", ".join(shown) + f"; {plural(hardening, 'hardening setting')}"


def summary(changes: Sequence[Change], root: str, next_command: str) -> str:
    if not changes:
        return f"plan: nothing to change: the files under {root} already match the plan"
    return (
        f"plan: {change_summary(changes)} would change under {root}; "
        f"run `{next_command}` to write them"
    )


def _files(doc: Doc, deployment: Deployment, changes: Iterable[Change], root: str) -> None:
    changed = {c.path: c.kind for c in changes}
    paths = sorted({*changed, deployment.dropin_path})
    doc.heading(f"Files under {root}:")
    rows = [
        ((changed.get(p, "unchanged"), KIND_STYLE[changed.get(p, "unchanged")]), (p, ""))
        for p in paths
    ]
    doc.table(rows, (Column(9),))


def plan_doc(
    facts: HostFacts,
    deployment: Deployment,
    changes: Sequence[Change],
    diff_text: str,
    root: str,
    *,
    next_command: str = "ollama-ops apply",
    width: int = 100,
) -> Doc:
    doc = Doc(width)
    doc.summary(summary(changes, root, next_command))
    doc.text(f"for {host_summary(facts)}", indent="  ", hanging="    ")
    doc.text(f"sets {key_values(deployment)}", indent="  ", hanging="    ")
    from ollama_ops.plan import instance_explain

    more = instance_explain.headline(deployment)  # ollama@NAME instances, the front door
    if more:
        doc.text(more, indent="  ", hanging="    ")
    notes = len(deployment.notes) + (len(deployment.instances.notes) if deployment.instances else 0)
    if notes:
        doc.text(
            f"{plural(notes, 'note')} below to read before applying", indent="  ", style="yellow"
        )
    if deployment.notes:
        doc.blank()
        doc.heading("Notes:")
        doc.bullets(deployment.notes, style="yellow")
    doc.blank()
    _files(doc, deployment, changes, root)
    doc.blank()
    doc.heading(f"Settings for {printable(deployment.unit_name)} (value, source, reason):")
    worksheet_doc(doc, deployment)
    instance_explain.report_doc(doc, deployment)  # ollama@.service, instances, front door
    doc.blank()
    if diff_text:
        doc.heading("Diff (a/ as installed, b/ as planned):")
        diff_doc(doc, diff_text.rstrip())
    else:
        doc.heading("No changes: the installed files match the plan.")
    doc.blank()
    guide_doc(doc, deployment)
    return doc


def report(
    facts: HostFacts,
    deployment: Deployment,
    changes: Sequence[Change],
    diff_text: str,
    root: str,
    *,
    next_command: str = "ollama-ops apply",
) -> str:
    """The whole plan as plain text."""
    return plan_doc(facts, deployment, changes, diff_text, root, next_command=next_command).plain()


def plan_json(
    facts: HostFacts,
    deployment: Deployment,
    changes: Sequence[Change],
    diff_text: str,
    root: str,
    *,
    next_command: str = "ollama-ops apply",
) -> dict[str, object]:
    """The same facts as the text, for `plan --json` (stable keys)."""
    from ollama_ops.plan import instance_explain

    changed = {c.path: c.kind for c in changes}
    paths = sorted({*changed, deployment.dropin_path})
    return {
        "command": "plan",
        "summary": summary(changes, root, next_command),
        "root": root,
        "unit": deployment.unit_name,
        "host": to_json_dict(facts),
        "changes": {kind: sum(1 for c in changes if c.kind == kind) for kind in KINDS},
        "files": [{"path": p, "status": changed.get(p, "unchanged")} for p in paths],
        "next": next_command if changes else None,
        "notes": list(deployment.notes),
        "settings": [
            {
                "section": s.section.value,
                "key": s.key,
                "value": s.value,
                "source": s.source.value,
                "reason": s.reason,
            }
            for s in deployment.settings
        ],
        "instances": instance_explain.report_json(deployment),
        "diff": diff_text,
        "guide": [
            {
                "file": a.guide.file,
                "key": a.guide.key,
                "value": a.guide.value,
                "verdict": a.verdict.value,
                "ours": a.ours,
                "reason": a.reason,
            }
            for a in guide.account(deployment)
        ],
    }
