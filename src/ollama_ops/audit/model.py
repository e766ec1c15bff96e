"""What an audit says: severities, findings, the report and its two forms.

A ``Finding`` names the file and line of the assignment it is about, the
directive (or, for Environment= and EnvironmentFile= settings, the variable),
one line of message and a concrete fix. A ``Report`` is the findings over one
unit plus the exposure score; ``to_json`` and ``format_text`` are its machine
and human forms. Pure data: nothing here reads the host.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from ollama_ops.cli.output import Doc


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


SEVERITY_STYLE = {
    Severity.CRITICAL: "bold red",
    Severity.ERROR: "red",
    Severity.WARNING: "yellow",
    Severity.INFO: "cyan",
}


def summary(report: Report) -> str:
    """The first line: how bad, the exposure, what to do next."""
    exposure = (
        f"; exposure {report.exposure:.1f} of 10 (systemd-analyze security, lower is safer)"
        if report.exposure is not None
        else ""
    )
    if not report.findings:
        return f"audit: {report.unit}: no findings{exposure}; nothing to do"
    return (
        f"audit: {report.unit}: {_found(report.findings)} (worst: {report.worst().label}){exposure}; "
        "each finding below says its fix, and `ollama-ops plan` shows the drop-in that "
        "fixes most of them"
    )


def _found(findings: Iterable[Finding]) -> str:
    """``2 warnings, 1 error``: how many of each severity, worst first."""
    seen = [f.severity for f in findings]
    counts = {s: seen.count(s) for s in Severity}
    return ", ".join(
        f"{n} {s.label if n == 1 or s in (Severity.INFO, Severity.CRITICAL) else s.label + 's'}"
        for s, n in sorted(counts.items(), reverse=True)
        if n
    )


def worst_of(reports: Sequence[Report]) -> Severity:
    """The worst severity over the main unit and its instances: it decides the exit code."""
    return max((r.worst() for r in reports), default=Severity.INFO)


def fleet_summary(reports: Sequence[Report]) -> str:
    """The first line over the main unit and its instances (one report: :func:`summary`)."""
    if len(reports) == 1:
        return summary(reports[0])
    main, rest = reports[0], reports[1:]
    units = f"{main.unit} and {len(rest)} instance{'s' if len(rest) > 1 else ''}"
    findings = [f for r in reports for f in r.findings]
    if not findings:
        return f"audit: {units}: no findings; nothing to do"
    worst = worst_of(reports)
    where = ", ".join(r.unit for r in reports if r.findings and r.worst() is worst)
    return (
        f"audit: {units}: {_found(findings)} (worst: {worst.label}, in {where}); each unit "
        "follows with its findings and their fixes, and `ollama-ops plan` shows the files "
        "that fix most of them"
    )


def fleet_doc(reports: Sequence[Report], width: int = 100) -> Doc:
    """:func:`text_doc` of each report under one summary (one report: its text_doc alone)."""
    if len(reports) == 1:
        return text_doc(reports[0], width)
    worst = worst_of(reports)
    doc = Doc(width)
    found = any(r.findings for r in reports)
    doc.summary(fleet_summary(reports), style=SEVERITY_STYLE[worst] if found else "")
    for report in reports:
        doc.blank()
        doc.extend(text_doc(report, width))
    return doc


def text_doc(report: Report, width: int = 100) -> Doc:
    """Summary first; then the unit's files; then one block per finding, worst first:
    severity, id, file:line and (directive) on its first line, the message and the fix under it."""
    doc = Doc(width)
    doc.summary(summary(report), style=SEVERITY_STYLE[report.worst()] if report.findings else "")
    doc.text(f"unit: {report.fragment or 'none found'}", indent="  ", hanging="    ")
    for dropin in report.dropins:
        doc.text(f"drop-in: {dropin}", indent="  ", hanging="    ")
    for f in report.findings:
        doc.blank()
        head = f"{f.severity.label.upper()} {f.id}"
        head += f" at {f.file}:{f.line}" if f.file else ""
        head += f" ({f.directive})" if f.directive else ""
        doc.text(head, hanging="    ", style=SEVERITY_STYLE[f.severity])
        doc.text(f.message, indent="    ", hanging="    ")
        doc.text(f"fix: {f.fix}", indent="    ", hanging="      ")
    return doc


def format_text(report: Report) -> str:
    """The human form of the report (plain text, 100 columns)."""
    return text_doc(report).plain()
