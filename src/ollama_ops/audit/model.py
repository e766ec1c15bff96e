"""What an audit says: severities, findings, the report and its two forms.

A ``Finding`` names the file and line of the assignment it is about, the
directive (or, for Environment= and EnvironmentFile= settings, the variable),
one line of message and a concrete fix. A ``Report`` is the findings over one
unit plus the exposure score; ``to_json`` and ``format_text`` are its machine
and human forms. Pure data: nothing here reads the host.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum


class Severity(IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    file: str | None  # path inside the root; None for the unit as a whole
    line: int | None
    directive: str | None  # a unit key, or the variable for Environment=/EnvironmentFile=
    message: str
    fix: str

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "severity": self.severity.label,
            "file": self.file,
            "line": self.line,
            "directive": self.directive,
            "message": self.message,
            "fix": self.fix,
        }


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Worst first, then by file, line and id."""
    return sorted(findings, key=lambda f: (-f.severity, f.file or "", f.line or 0, f.id))


@dataclass(frozen=True)
class Report:
    unit: str
    fragment: str | None
    dropins: tuple[str, ...]
    findings: tuple[Finding, ...]
    exposure: float | None

    def worst(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.INFO)

    def to_json(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "fragment": self.fragment,
            "dropins": list(self.dropins),
            "exposure": self.exposure,
            "worst": self.worst().label,
            "findings": [f.to_json() for f in self.findings],
        }


def format_text(report: Report) -> str:
    """A table: severity, id, file:line, directive, message, fix; one finding per line."""
    head = [f"{report.unit}: {report.fragment}"]
    head += [f"  drop-in: {d}" for d in report.dropins]
    if report.exposure is not None:
        head.append(f"  exposure: {report.exposure:.1f}")
    if not report.findings:
        return "\n".join([*head, "no findings"]) + "\n"
    rows = [
        (
            f.severity.label.upper(),
            f.id,
            f"{f.file}:{f.line}" if f.file else "-",
            f.directive or "-",
            f.message,
            f"fix: {f.fix}",
        )
        for f in report.findings
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] + " -- " + r[5]
        for r in rows
    ]
    counts = {s: sum(1 for f in report.findings if f.severity is s) for s in Severity}
    summary = ", ".join(f"{n} {s.label}" for s, n in sorted(counts.items(), reverse=True) if n)
    return "\n".join([*head, *lines, f"worst: {report.worst().label} ({summary})"]) + "\n"
