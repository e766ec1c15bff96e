"""Human text for `ollama-ops plan`: the worksheet with a reason per value."""

from __future__ import annotations

import textwrap

from ollama_ops.apply.diff import Change
from ollama_ops.model.config import format_size
from ollama_ops.model.deployment import Deployment, Section
from ollama_ops.model.facts import HostFacts
from ollama_ops.plan import guide


def printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped (an ANSI escape from a
    hostname or a GPU name must not reach the terminal)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def host_summary(facts: HostFacts) -> str:
    gpus = (
        ", ".join(
            f"{g.vendor.value} {printable(g.name) or '?'} {format_size(g.memory_bytes)}"
            for g in facts.gpus
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
        f"host {printable(facts.hostname) or '?'}: {format_size(facts.memory_bytes)} RAM, "
        f"{facts.cpus} CPUs, "
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


def guide_section(deployment: Deployment) -> list[str]:
    """Every setting of the seed guide: the same, ours instead, or left out, with the reason."""
    accounts = guide.account(deployment)
    same = sorted({a.guide.key for a in accounts if a.verdict is guide.Verdict.SAME})
    out = [
        f"The seed guide, setting by setting ({len(accounts)} settings in "
        f"{len({a.guide.file for a in accounts})} files):",
        *textwrap.wrap(
            f"same ({len(same)}): " + ", ".join(same),
            width=98,
            initial_indent="  ",
            subsequent_indent="    ",
        ),
    ]
    seen: set[tuple[str, str, guide.Verdict]] = set()
    for verdict in (guide.Verdict.DIFFERS, guide.Verdict.LEFT_OUT):
        out.append(f"  {verdict.value}:")
        for a in accounts:
            key = (a.guide.key, a.guide.value, a.verdict)
            if a.verdict is not verdict or key in seen:
                continue
            seen.add(key)
            ours = f" -> {a.ours}" if a.ours and verdict is guide.Verdict.DIFFERS else ""
            where = "" if a.guide.file == guide.DROPIN else f"[{a.guide.file}] "
            out += _wrapped(f"{where}{a.guide.key}={a.guide.value}{ours}: {a.reason}")
    out.append("  other files of the guide:")
    files: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for a in accounts:
        if a.verdict is guide.Verdict.OTHER:
            files.setdefault(a.guide.file, []).append(a.guide.key)
            reasons[a.guide.file] = a.reason
    for name, keys in files.items():
        out += _wrapped(f"{name} ({', '.join(dict.fromkeys(keys))}): {reasons[name]}")
    return out


def _wrapped(text: str) -> list[str]:
    return textwrap.wrap(
        printable(text), width=100, initial_indent="    ", subsequent_indent="      "
    )


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
        out += ["", "Notes:"] + [f"  - {printable(n)}" for n in deployment.notes]
    from ollama_ops.plan import instance_explain

    out += instance_explain.report_lines(deployment)  # ollama@.service, instances, front door
    out += ["", f"Files (under {root}):"]
    changed = {c.path: c.kind for c in changes}
    paths = sorted({*changed, deployment.dropin_path})
    out += [f"  {changed.get(p, 'unchanged'):<9}  {p}" for p in paths]
    out += [
        "",
        diff_text.rstrip() if diff_text else "No changes: the installed files match the plan.",
        "",
        *guide_section(deployment),
    ]
    return "\n".join(out) + "\n"
