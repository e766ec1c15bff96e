"""Human text for `ollama-ops plan`: the worksheet with a reason per value."""

from __future__ import annotations

from ollama_ops.apply.diff import Change
from ollama_ops.model.config import format_size
from ollama_ops.model.deployment import Deployment, Section
from ollama_ops.model.facts import HostFacts


def host_summary(facts: HostFacts) -> str:
    gpus = (
        ", ".join(
            f"{g.vendor.value} {g.name or '?'} {format_size(g.memory_bytes)}" for g in facts.gpus
        )
        or "no GPU"
    )
    nodes = len(facts.numa_nodes) or 1
    ollama = facts.ollama
    installed = (
        f"ollama {ollama.binary} ({ollama.version or 'version unknown'})"
        if ollama.binary
        else "ollama not installed"
    )
    user = f"user {ollama.user}" if ollama.user else "no ollama user (DynamicUser)"
    return (
        f"host {facts.hostname or '?'}: {format_size(facts.memory_bytes)} RAM, {facts.cpus} CPUs, "
        f"{nodes} NUMA node(s), {gpus}, systemd {facts.systemd_version}; {installed}, {user}"
    )


def worksheet(deployment: Deployment) -> str:
    rows: list[tuple[str, str, str]] = []
    for s in deployment.settings:
        where = "env" if s.section is Section.ENV else s.section.value
        shown = f"{s.key}={s.value}" if s.value is not None else f"{s.key} (not written)"
        if s.value == "":
            shown = f"{s.key}= (reset)"
        rows.append((f"[{where}] {shown}", s.source.value, s.reason))
    width = min(60, max(len(r[0]) for r in rows))
    lines = [f"  {left:<{width}}  {source:<9}  {reason}" for left, source, reason in rows]
    return "\n".join(lines)


def report(
    facts: HostFacts, deployment: Deployment, changes: list[Change], diff_text: str, root: str
) -> str:
    out = [
        host_summary(facts),
        "",
        f"Settings for {deployment.unit_name} (value, source, reason):",
        worksheet(deployment),
    ]
    if deployment.notes:
        out += ["", "Notes:"] + [f"  - {n}" for n in deployment.notes]
    out += ["", f"Files (under {root}):"]
    changed = {c.path: c.kind for c in changes}
    paths = sorted({*changed, deployment.dropin_path})
    out += [f"  {changed.get(p, 'unchanged'):<9}  {p}" for p in paths]
    out += [
        "",
        diff_text.rstrip() if diff_text else "No changes: the installed files match the plan.",
    ]
    return "\n".join(out) + "\n"
