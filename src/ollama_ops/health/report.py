"""A verdict as a monitoring plugin prints it, and as JSON.

The plugin convention (Nagios, Icinga, Checkmk): one status line, performance
data after ``|`` as ``'label'=value[unit];warn;crit;min;max``, further lines
for details; the exit code is the status (errors.HealthStatus).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from ollama_ops.errors import HealthStatus
from ollama_ops.health.model import DeepOutcome, Snapshot, Verdict

_COLOURS = {
    HealthStatus.OK: "32",
    HealthStatus.WARNING: "33",
    HealthStatus.CRITICAL: "31",
    HealthStatus.UNKNOWN: "35",
}


def _num(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _perf(
    label: str,
    value: float,
    unit: str = "",
    *,
    warn: str = "",
    crit: str = "",
    lo: str = "",
    hi: str = "",
) -> str:
    text = f"'{label}'={_num(value)}{unit};{warn};{crit};{lo};{hi}"
    return text.rstrip(";")


def perfdata(s: Snapshot) -> list[str]:
    out = [_perf("live", s.api.live.latency_s, "s", lo="0")]
    if (
        s.deep is not None
        and s.deep.outcome is not DeepOutcome.SKIPPED
        and s.deep.latency_s is not None
    ):
        out.append(_perf("generate", s.deep.latency_s, "s", lo="0"))
    if s.api.models is not None:
        models = s.api.models
        out.append(_perf("models", len(models), lo="0"))
        out.append(_perf("models_size", sum(m.size for m in models), "B", lo="0"))
        out.append(_perf("models_vram", sum(m.size_vram for m in models), "B", lo="0"))
    if s.memory.available and s.memory.current is not None:
        hi = str(s.memory.limit) if s.memory.limit else ""
        out.append(_perf("memory", s.memory.current, "B", lo="0", hi=hi))
        out.append(_perf("oom_kills", s.memory.oom_kills, "c"))
    if s.unit.available:
        out.append(_perf("restarts", s.unit.n_restarts, "c"))
    if s.progress.readable:
        out.append(_perf("completed", s.progress.completions, lo="0"))
        out.append(_perf("rejected", s.progress.rejected, lo="0"))
    for g in s.gpu.gpus:
        if g.memory_used is not None:
            total = str(g.memory_total) if g.memory_total else ""
            out.append(_perf(f"gpu{g.index}_memory", g.memory_used, "B", lo="0", hi=total))
        if g.utilization_percent is not None:
            out.append(_perf(f"gpu{g.index}_util", g.utilization_percent, "%", lo="0", hi="100"))
        if g.temperature_c is not None:
            out.append(_perf(f"gpu{g.index}_temp", g.temperature_c))
        if g.power_w is not None:
            out.append(_perf(f"gpu{g.index}_power", g.power_w))
    return out


def plugin_text(s: Snapshot, v: Verdict, colour: bool = False) -> str:
    """The status line with its performance data, then one line per note."""
    status = v.status.name
    shown = f"\x1b[{_COLOURS[v.status]}m{status}\x1b[0m" if colour else status
    first = f"OLLAMA {shown} - {v.state.value}: {v.summary}"
    lines = [f"{first} | {' '.join(perfdata(s))}"]
    lines += [f"note: {n}" for n in v.notes]
    return "\n".join(lines) + "\n"


def unknown_text(message: str) -> str:
    """The line for a check that could not run at all."""
    return f"OLLAMA UNKNOWN - unknown: {message}\n"


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def as_json(s: Snapshot | None, v: Verdict) -> str:
    data = {
        "status": v.status.name,
        "exit_code": int(v.status),
        "verdict": v.state.value,
        "problems": [p.value for p in v.problems],
        "reasons": list(v.reasons),
        "notes": list(v.notes),
        "perfdata": perfdata(s) if s is not None else [],
        "snapshot": _plain(s) if s is not None else None,
    }
    return json.dumps(data, indent=2, sort_keys=False) + "\n"
