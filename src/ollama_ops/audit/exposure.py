"""The exposure score of ``systemd-analyze security --offline`` as one finding.

The score (0 safe .. 10 exposed) maps to a severity, and the message names
the three settings that cost the most. Without systemd-analyze the finding
says so at INFO and the report carries no score. This is the one rule that
runs a command (through the runtime's runner), so ``audit`` calls it, never ``check``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ollama_ops.audit.context import finding
from ollama_ops.audit.model import Finding, Severity
from ollama_ops.errors import CommandError
from ollama_ops.host import proc, systemd

if TYPE_CHECKING:
    from ollama_ops.runtime import Runner


def _exposure_severity(score: float) -> Severity:
    if score <= 2:
        return Severity.INFO
    if score <= 5:
        return Severity.WARNING
    if score <= 7.5:
        return Severity.ERROR
    return Severity.CRITICAL


def exposure(root: Path, unit_name: str, run: Runner = proc.run) -> tuple[float | None, Finding]:
    """The score of ``unit_name`` under ``root`` (None: unavailable) and its finding."""
    try:
        score = systemd.security_offline(root, unit_name, run)
    except CommandError as exc:
        return None, finding(
            "exposure-unavailable",
            Severity.INFO,
            None,
            None,
            f"no exposure score: {exc}",
            "install systemd (systemd-analyze) to get `systemd-analyze security --offline`",
        )
    scored: list[tuple[float, str]] = []
    for row in score.findings:
        value, name = row.get("exposure"), row.get("name")
        if isinstance(value, int | float) and name:
            scored.append((float(value), str(name)))
    top = ", ".join(name for _value, name in sorted(scored, key=lambda r: -r[0])[:3])
    return score.exposure, finding(
        "exposure",
        _exposure_severity(score.exposure),
        None,
        None,
        f"systemd-analyze security --offline: exposure {score.exposure:.1f} of 10"
        + (f" (largest: {top})" if top else ""),
        (
            "none needed; `ollama-ops plan` explains each directive left weaker than the maximum"
            if score.exposure <= 2
            else "apply ollama-ops' hardened drop-in (`ollama-ops apply`), or add the directives "
            f"`systemd-analyze security {unit_name}` marks with a cross"
        ),
    )
