"""Events -> what happened to the service, in numbers and in order; its text and JSON. Pure.

Restarts get their reason from what ended the run before them (an OOM kill,
a hang, a crash, the exit status); model loads get their model from the load
that began them; access errors are grouped by the ReadWritePaths= line that
fixes them.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ollama_ops.logs.classify import Event, Kind

OOM_MERGE_S = 10.0  # systemd reports one OOM kill in two lines, sometimes Ollama a third
WIDTH = 100


@dataclass(frozen=True)
class Load:
    time: float
    seconds: float
    model: str
    slow: bool


@dataclass(frozen=True)
class Restart:
    time: float
    text: str
    reason: str


@dataclass(frozen=True)
class Fix:
    directive: str
    example: str
    count: int


@dataclass(frozen=True)
class Summary:
    unit: str
    since: str
    namespace: str | None
    records: int
    truncated: bool
    slow_load_s: float
    counts: dict[str, int]
    restarts: tuple[Restart, ...]
    loads: tuple[Load, ...]
    problems: tuple[Event, ...]
    fixes: tuple[Fix, ...]
    notes: tuple[str, ...] = field(default=())


_PROBLEMS = (
    Kind.OOM_KILL, Kind.RUNTIME_OOM, Kind.HANG, Kind.CRASH, Kind.LOAD_FAILED, Kind.GPU_ERROR,
    Kind.CPU_ONLY, Kind.ACCESS, Kind.FAILED,
)  # fmt: skip
_ENDINGS = (Kind.OOM_KILL, Kind.HANG, Kind.CRASH, Kind.RUNTIME_OOM, Kind.FAILED, Kind.EXIT)


def _merge_ooms(events: Sequence[Event]) -> list[Event]:
    out: list[Event] = []
    last: float | None = None
    for e in events:
        if e.kind is Kind.OOM_KILL:
            if last is not None and e.time - last <= OOM_MERGE_S:
                continue
            last = e.time
        out.append(e)
    return out


def _reason(run: Sequence[Event]) -> str:
    """Why a run ended: the most telling event since it started."""
    for kind in _ENDINGS:
        found = [e for e in run if e.kind is kind]
        if found:
            return f"{kind.value}: {found[-1].text}"
    return "no reason logged"


def _restarts(events: Sequence[Event]) -> list[Restart]:
    out: list[Restart] = []
    run: list[Event] = []
    for e in events:
        if e.kind is Kind.RESTART:
            out.append(Restart(e.time, e.text, _reason(run)))
            run = []
        elif e.kind is Kind.START:
            run = []
        else:
            run.append(e)
    return out


def _loads(events: Sequence[Event], slow_s: float) -> list[Load]:
    out: list[Load] = []
    model = "?"
    for e in events:
        if e.kind is Kind.MODEL_START and e.path:
            model = e.path
        elif e.kind is Kind.LOAD and e.seconds is not None:
            out.append(Load(e.time, e.seconds, model, e.seconds >= slow_s))
            model = "?"
    return out


def _fixes(events: Iterable[Event]) -> list[Fix]:
    counted = Counter(e.fix for e in events if e.kind is Kind.ACCESS and e.fix)
    examples = {e.fix: e.text for e in events if e.kind is Kind.ACCESS and e.fix}
    return [Fix(fix, examples[fix], n) for fix, n in counted.most_common()]


def summarize(
    events: Sequence[Event],
    *,
    unit: str,
    since: str,
    namespace: str | None,
    records: int,
    truncated: bool,
    slow_load_s: float,
) -> Summary:
    ordered = _merge_ooms(sorted(events, key=lambda e: e.time))
    counts = Counter(e.kind.value for e in ordered)
    loads = _loads(ordered, slow_load_s)
    counts["slow-load"] = sum(1 for load in loads if load.slow) + sum(
        1 for e in ordered if e.kind is Kind.LOAD_FAILED and "timed out" in e.text
    )
    if not counts.get(Kind.START.value):
        counts[Kind.START.value] = counts.get(Kind.LISTENING.value, 0)
    problems = tuple(e for e in ordered if e.kind in _PROBLEMS)
    notes = []
    if truncated:
        notes.append(f"only the newest {records} records were read; narrow --since for older ones")
    return Summary(
        unit=unit,
        since=since,
        namespace=namespace,
        records=records,
        truncated=truncated,
        slow_load_s=slow_load_s,
        counts=dict(counts),
        restarts=tuple(_restarts(ordered)),
        loads=tuple(loads),
        problems=problems,
        fixes=tuple(_fixes(ordered)),
        notes=tuple(notes),
    )


# ---------------------------------------------------------------- text


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "?"


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def headline(s: Summary) -> str:
    c = s.counts
    seconds = [load.seconds for load in s.loads]
    parts = [
        _n(c.get("start", 0), "start"),
        _n(c.get("stop", 0), "stop"),
        _n(len(s.restarts), "restart"),
        _n(c.get("oom-kill", 0), "OOM kill"),
        _n(c.get("runtime-oom", 0), "runtime OOM"),
        _n(c.get("hang", 0), "hang"),
        _n(c.get("crash", 0), "crash", "crashes"),
        _n(len(s.loads), "model load")
        + (
            f" (median {statistics.median(seconds):.1f} s, max {max(seconds):.1f} s)"
            if seconds
            else ""
        ),
        _n(c.get("slow-load", 0), "slow load"),
        _n(c.get("load-failed", 0), "failed load"),
        _n(c.get("gpu-error", 0), "GPU error"),
        _n(c.get("cpu-fallback", 0), "CPU fallback"),
        _n(c.get("access-error", 0), "permission/read-only error"),
        _n(c.get("busy", 0), "503"),
        _n(c.get("http-5xx", 0), "other 5xx"),
    ]
    where = f" (journal namespace {s.namespace})" if s.namespace else ""
    return f"{s.unit} since {s.since}{where}: " + ", ".join(parts)


def _wrap(text: str, width: int = WIDTH, indent: str = "  ") -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = indent + word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def render_text(s: Summary, *, limit: int = 20) -> str:
    out = _wrap(headline(s))
    if s.restarts:
        out += ["", "Restarts (why):"]
        out += [
            _cut(f"  {stamp(r.time)}  {r.text}: {r.reason}", WIDTH) for r in s.restarts[-limit:]
        ]
    if s.loads:
        out += ["", f"Model loads (slow from {s.slow_load_s:g} s):"]
        for load in s.loads[-limit:]:
            flag = "  SLOW" if load.slow else ""
            out.append(f"  {stamp(load.time)}  {load.seconds:7.2f} s  {load.model}{flag}")
    if s.problems:
        out += ["", "Problems:"]
        for e in s.problems[-limit:]:
            out.append(_cut(f"  {stamp(e.time)}  {e.kind.value:<13} {e.text}", WIDTH))
    if s.fixes:
        out += [
            "",
            "Fixes ([hardening] read_write_paths; for permission denied check the owner too):",
        ]
        for fix in s.fixes:
            out.append(_cut(f"  {fix.directive}   ({fix.example}; {_n(fix.count, 'time')})", WIDTH))
    if s.notes:
        out += ["", *(f"Note: {n}" for n in s.notes)]
    if not s.records:
        out += ["", "No journal records for this unit in that time."]
    return "\n".join(out) + "\n"


def _event_json(e: Event) -> dict[str, object]:
    data: dict[str, object] = {"time": stamp(e.time), "kind": e.kind.value, "text": e.text}
    for key in ("seconds", "path", "fix", "status"):
        value = getattr(e, key)
        if value is not None:
            data[key] = value
    return data


def render_json(s: Summary) -> str:
    data = {
        "unit": s.unit,
        "since": s.since,
        "namespace": s.namespace,
        "records": s.records,
        "truncated": s.truncated,
        "slow_load_seconds": s.slow_load_s,
        "summary": headline(s),
        "counts": dict(sorted(s.counts.items())),
        "restarts": [
            {"time": stamp(r.time), "text": r.text, "reason": r.reason} for r in s.restarts
        ],
        "loads": [
            {"time": stamp(x.time), "seconds": x.seconds, "model": x.model, "slow": x.slow}
            for x in s.loads
        ],
        "problems": [_event_json(e) for e in s.problems],
        "fixes": [
            {"directive": f.directive, "example": f.example, "count": f.count} for f in s.fixes
        ],
        "notes": list(s.notes),
    }
    return json.dumps(data, indent=2) + "\n"
