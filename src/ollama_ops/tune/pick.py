"""The pick (pure): the setting with the best throughput that still meets the SLO, and why
each other setting lost.

A setting qualifies when at least ``min_share`` of its requests succeeded
and, with an SLO, at least ``min_share`` of its requests met every bound
(bench's per-request SLO: a failed request never meets it). Among those, the
most output tokens per second wins; on a tie the one measured first (the
current setting comes first, so a tie never changes anything).
"""

from __future__ import annotations

from dataclasses import dataclass

from ollama_ops.bench.slo import Slo
from ollama_ops.bench.summary import StageSummary

from .params import Setting

#: A winner closer than this to the runner-up is reported as within the noise of one run.
CLOSE_CALL = 0.05
_SLO_DIST = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2e": "e2e"}


@dataclass(frozen=True)
class Figures:
    """What one benchmark run of a setting showed (from bench's stage summary)."""

    requests: int
    ok: int
    errors: int
    busy: int
    tokens_per_s: float  # output tokens/s, the server's counts
    req_per_s: float
    ttft_p50: float | None
    ttft_p99: float | None
    tpot_p50: float | None
    tpot_p99: float | None
    itl_p99: float | None
    e2e_p99: float | None
    slo_met: int | None
    top_error: str
    client_bound: str  # why the client was the bottleneck, or ""
    load_waits: int

    @property
    def ok_share(self) -> float:
        return self.ok / self.requests if self.requests else 0.0

    @property
    def slo_share(self) -> float | None:
        if self.slo_met is None:
            return None
        return self.slo_met / self.requests if self.requests else 0.0

    def p99(self, metric: str) -> float | None:
        value: float | None = getattr(self, f"{_SLO_DIST[metric]}_p99")
        return value


def figures_of(stage: StageSummary) -> Figures:
    def p(d: object, name: str) -> float | None:
        return None if d is None else float(getattr(d, name))

    return Figures(
        requests=stage.requests,
        ok=stage.ok,
        errors=stage.errors,
        busy=stage.busy,
        tokens_per_s=stage.output_tokens_per_s,
        req_per_s=stage.req_per_s,
        ttft_p50=p(stage.ttft, "median"),
        ttft_p99=p(stage.ttft, "p99"),
        tpot_p50=p(stage.tpot, "median"),
        tpot_p99=p(stage.tpot, "p99"),
        itl_p99=p(stage.itl, "p99"),
        e2e_p99=p(stage.e2e, "p99"),
        slo_met=stage.slo_met,
        top_error=stage.top_error,
        client_bound=stage.client.why if stage.client.bound else "",
        load_waits=stage.load_waits,
    )


@dataclass(frozen=True)
class Measurement:
    """One setting of the sweep: its figures, or why it could not be measured."""

    setting: Setting
    figures: Figures | None
    failure: str = ""  # the service would not run it, or the benchmark failed
    note: str = ""  # what applying it did, e.g. "applied generation 7"
    seconds: float | None = None  # how long measuring took, warm-up included


@dataclass(frozen=True)
class Verdict:
    winner: int | None  # index into the measurements
    why_lost: tuple[str, ...]  # per measurement; "" for the winner
    notes: tuple[str, ...]


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%" if share >= 0.01 or share == 0 else f"{share * 100:.1f}%"


def disqualified(m: Measurement, slo: Slo | None, min_share: float) -> str:
    """Why ``m`` cannot win, or "" when it qualifies."""
    f = m.figures
    if f is None:
        return m.failure or "not measured"
    if f.requests == 0:
        return "no request finished within the run; give a longer --duration"
    if f.ok_share < min_share:
        failed = f"{f.errors} failed, {f.busy} refused with 503" if f.busy else f"{f.errors} failed"
        top = f"; {f.top_error}" if f.top_error else ""
        return (
            f"only {_pct(f.ok_share)} of {f.requests} requests succeeded ({failed}{top}); "
            f"needs {_pct(min_share)}"
        )
    share = f.slo_share
    if slo is not None and share is not None and share < min_share:
        over = [
            f"{name.upper()} p99 {fmt_s(f.p99(name))} > {fmt_s(limit)}"
            for name, limit in slo.limits
            if (f.p99(name) or 0.0) > limit
        ]
        detail = f" ({', '.join(over)})" if over else ""
        return (
            f"breaks the SLO: {_pct(share)} of requests met {slo.describe()}{detail}; "
            f"needs {_pct(min_share)}"
        )
    return ""


def pick(measurements: list[Measurement], slo: Slo | None, min_share: float) -> Verdict:
    """The winner (best output tokens/s among the qualified) and a reason for every loser."""
    reasons = [disqualified(m, slo, min_share) for m in measurements]
    qualified = [i for i, why in enumerate(reasons) if not why]
    if not qualified:
        return Verdict(None, tuple(reasons), ("no setting qualified: every one lost, see why",))
    best = qualified[0]
    for i in qualified[1:]:
        if _tps(measurements[i]) > _tps(measurements[best]):
            best = i
    top = _tps(measurements[best])
    label = measurements[best].setting.label()
    for i in qualified:
        if i == best:
            continue
        tps = _tps(measurements[i])
        below = (top - tps) / top if top > 0 else 0.0
        reasons[i] = f"slower: {tps:,.1f} tokens/s, {below * 100:.1f}% below {label}"
    notes: list[str] = []
    runner_up = max((_tps(measurements[i]) for i in qualified if i != best), default=None)
    if runner_up is not None and top > 0 and (top - runner_up) / top < CLOSE_CALL:
        notes.append(
            f"the best two are within {CLOSE_CALL * 100:.0f}% of each other: one run cannot "
            "separate them reliably; a longer --duration can"
        )
    bound = measurements[best].figures
    if bound is not None and bound.client_bound:
        notes.append(
            f"the benchmark client was the bottleneck for the winner ({bound.client_bound}): "
            "its figures understate the server"
        )
    return Verdict(best, tuple(reasons), tuple(notes))


def _tps(m: Measurement) -> float:
    return m.figures.tokens_per_s if m.figures is not None else 0.0
