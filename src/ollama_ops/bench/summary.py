"""The figures of a run (pure): from a Result (and an SLO) to per-stage summaries and JSON.

Definitions (all times in seconds, JSON in base units):

* wall: from the stage's first send to its last response's end;
* request throughput: successful requests / wall;
* output tokens/s (server): the server's token counts (``eval_count`` or
  ``usage.completion_tokens``) of successful requests / wall; chunks/s
  (client): token chunks the client received, all requests, / wall;
* the guide's tokens/s: the mean over requests of eval_count / eval_duration
  (what ``ollama run --verbose`` calls the eval rate; per stream, not total);
* TTFT: first token chunk minus send; TPOT: (last chunk - first chunk) /
  (tokens - 1); ITL: every gap between consecutive chunks of every
  successful request; E2E: end minus send. Requests that waited for a model
  load (``load_duration`` >= 0.25 s) are counted apart and left out of these;
* goodput: successful requests meeting every SLO bound / wall;
* the client: event-loop lag (lateness of a 10 ms timer), send-time slip
  (sent minus when it could have been sent), CPU time of this process. The
  stage is marked client-bound when lag or slip p99 exceeds 10 ms or the
  process used 90 % of a core: its latencies include the client's delays.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any

from .records import LOAD_FLAG_S, Outcome, RequestRecord
from .runner import Result, StageResult
from .slo import Slo
from .stats import Dist, dist, percentile

FORMAT_VERSION = 1
LAG_LIMIT_S = 0.010
SLIP_LIMIT_S = 0.010
CPU_LIMIT = 0.90


@dataclass(frozen=True)
class ClientHealth:
    cpu_s: float
    cpu_share: float  # of one core
    cpu_per_1k_tokens: float | None
    lag_p99_s: float
    lag_max_s: float
    slip_p99_s: float
    slip_max_s: float
    bound: bool
    why: str  # the figures that made it client-bound, or ""


@dataclass(frozen=True)
class StageSummary:
    label: str
    level: float
    requests: int
    ok: int
    errors: int
    busy: int
    cut: int
    wall_s: float
    req_per_s: float
    output_tokens_per_s: float
    chunks_per_s: float
    total_tokens_per_s: float
    guide_tokens_per_s: float | None
    ttft: Dist | None
    tpot: Dist | None
    itl: Dist | None
    e2e: Dist | None
    load: Dist | None
    prompt_eval: Dist | None
    eval: Dist | None
    load_waits: int
    load_max_s: float
    slo_met: int | None
    goodput_req_per_s: float | None
    top_error: str
    client: ClientHealth

    @property
    def slo_share(self) -> float | None:
        if self.slo_met is None or not self.requests:
            return None
        return self.slo_met / self.requests


@dataclass(frozen=True)
class RunSummary:
    result: Result
    slo: Slo | None
    stages: tuple[StageSummary, ...]
    warmup_load_s: float | None  # the longest load_duration among warm-up requests

    @property
    def ok(self) -> int:
        return sum(s.ok for s in self.stages)

    @property
    def busy(self) -> int:
        return sum(s.busy for s in self.stages)

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.stages)


def _p99(values: list[float]) -> float:
    return percentile(sorted(values), 99) if values else 0.0


def client_health(stage: StageResult, chunks: int) -> ClientHealth:
    lag = list(stage.loop_lag)
    slips = [r.slip for r in stage.records if r.outcome is not Outcome.CUT]
    share = stage.cpu_s / stage.wall_s
    lag99, slip99 = _p99(lag), _p99(slips)
    reasons = []
    if lag99 > LAG_LIMIT_S:
        reasons.append(f"event-loop lag p99 {lag99 * 1e3:.1f} ms > {LAG_LIMIT_S * 1e3:g} ms")
    if slip99 > SLIP_LIMIT_S:
        reasons.append(f"send slip p99 {slip99 * 1e3:.1f} ms > {SLIP_LIMIT_S * 1e3:g} ms")
    if share >= CPU_LIMIT:
        reasons.append(f"CPU {share * 100:.0f} % of a core")
    return ClientHealth(
        cpu_s=stage.cpu_s,
        cpu_share=share,
        cpu_per_1k_tokens=stage.cpu_s / (chunks / 1000) if chunks else None,
        lag_p99_s=lag99,
        lag_max_s=max(lag, default=0.0),
        slip_p99_s=slip99,
        slip_max_s=max(slips, default=0.0),
        bound=bool(reasons),
        why="; ".join(reasons),
    )


def summarize_stage(stage: StageResult, slo: Slo | None) -> StageSummary:
    recs = stage.records
    ok = [r for r in recs if r.ok]
    timed = [r for r in ok if not r.waited_for_load]
    loads = [r for r in recs if r.waited_for_load]
    wall = stage.wall_s
    chunks = sum(len(r.times) for r in recs)
    out_tokens = sum(r.tokens for r in ok)
    prompt_tokens = sum(r.prompt_tokens or 0 for r in ok)
    errors = collections.Counter(
        r.error for r in recs if r.outcome in (Outcome.ERROR, Outcome.BUSY)
    )
    met = sum(1 for r in ok if slo.met(r.slo_values())) if slo else None
    rates = [r.decode_rate for r in ok if r.decode_rate is not None]
    return StageSummary(
        label=stage.stage.label,
        level=stage.stage.level,
        requests=len(recs),
        ok=len(ok),
        errors=sum(1 for r in recs if r.outcome is Outcome.ERROR),
        busy=sum(1 for r in recs if r.outcome is Outcome.BUSY),
        cut=sum(1 for r in recs if r.outcome is Outcome.CUT),
        wall_s=wall,
        req_per_s=len(ok) / wall,
        output_tokens_per_s=out_tokens / wall,
        chunks_per_s=chunks / wall,
        total_tokens_per_s=(out_tokens + prompt_tokens) / wall,
        guide_tokens_per_s=math.fsum(rates) / len(rates) if rates else None,
        ttft=dist(r.ttft for r in timed),
        tpot=dist(r.tpot for r in timed),
        itl=dist(g for r in timed for g in r.gaps()),
        e2e=dist(r.e2e for r in timed),
        load=dist(r.load_s for r in ok),
        prompt_eval=dist(r.prompt_eval_s for r in ok),
        eval=dist(r.eval_s for r in ok),
        load_waits=len(loads),
        load_max_s=max((r.load_s or 0.0 for r in loads), default=0.0),
        slo_met=met,
        goodput_req_per_s=met / wall if met is not None else None,
        top_error=errors.most_common(1)[0][0] if errors else "",
        client=client_health(stage, chunks),
    )


def summarize(result: Result, slo: Slo | None = None) -> RunSummary:
    loads = [r.load_s for r in result.warmup if r.load_s is not None]
    return RunSummary(
        result=result,
        slo=slo,
        stages=tuple(summarize_stage(s, slo) for s in result.stages),
        warmup_load_s=max(loads) if loads else None,
    )


# --------------------------------------------------------------------------- JSON


def _dist(d: Dist | None) -> dict[str, float] | None:
    return d.to_json() if d is not None else None


def stage_json(s: StageSummary) -> dict[str, Any]:
    c = s.client
    return {
        "label": s.label,
        "level": s.level,
        "requests": s.requests,
        "ok": s.ok,
        "errors": s.errors,
        "busy_503": s.busy,
        "cut": s.cut,
        "top_error": s.top_error,
        "wall_s": s.wall_s,
        "request_throughput_per_s": s.req_per_s,
        "output_tokens_per_s": s.output_tokens_per_s,
        "chunks_per_s": s.chunks_per_s,
        "total_tokens_per_s": s.total_tokens_per_s,
        "guide_tokens_per_s": s.guide_tokens_per_s,
        "ttft_s": _dist(s.ttft),
        "tpot_s": _dist(s.tpot),
        "itl_s": _dist(s.itl),
        "e2e_s": _dist(s.e2e),
        "server_load_s": _dist(s.load),
        "server_prompt_eval_s": _dist(s.prompt_eval),
        "server_eval_s": _dist(s.eval),
        "model_load_waits": s.load_waits,
        "model_load_max_s": s.load_max_s,
        "slo_met": s.slo_met,
        "slo_share": s.slo_share,
        "goodput_per_s": s.goodput_req_per_s,
        "client": {
            "cpu_s": c.cpu_s,
            "cpu_share": c.cpu_share,
            "cpu_s_per_1k_tokens": c.cpu_per_1k_tokens,
            "loop_lag_p99_s": c.lag_p99_s,
            "loop_lag_max_s": c.lag_max_s,
            "send_slip_p99_s": c.slip_p99_s,
            "send_slip_max_s": c.slip_max_s,
            "client_bound": c.bound,
            "client_bound_why": c.why,
        },
    }


def to_json(summary: RunSummary) -> dict[str, Any]:
    r = summary.result
    shape = r.shape
    return {
        "format": "ollama-ops-bench",
        "version": FORMAT_VERSION,
        "started_at": r.started_at,
        "partial": r.partial,
        "note": r.note,
        "target": {
            "url": r.target.url,
            "model": r.target.model,
            "api": r.target.api.value,
            "server_version": r.server_version,
        },
        "shape": {
            "name": shape.name,
            "kind": shape.kind,
            "levels": [s.level for s in shape.stages],
            "duration_s": shape.stop.duration_s,
            "requests": shape.stop.requests,
            "warmup": shape.warmup,
            "arrival": shape.stages[0].arrival.value if shape.kind == "rate" else None,
            "max_concurrency": shape.stages[0].max_concurrency if shape.stages else None,
        },
        "workload": {
            "prompts": r.workload.source,
            "output_tokens": r.workload.output.describe() if r.workload.output else None,
        },
        "slo": summary.slo.to_json() if summary.slo else None,
        "model_loaded_before": r.model_loaded_before,
        "warmup_load_s": summary.warmup_load_s,
        "load_flag_s": LOAD_FLAG_S,
        "stages": [stage_json(s) for s in summary.stages],
    }


def records(summary: RunSummary) -> list[RequestRecord]:
    return [*summary.result.warmup, *summary.result.records]
