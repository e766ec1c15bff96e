"""One check, for `ollama-ops health`: every probe once, then the verdict.

Unlike the supervisor it has no history, so one failed generation is enough
for "hung" (``deep_failures=1``) — but only when the journal shows that
nothing else completed meanwhile either.
"""

from __future__ import annotations

from dataclasses import dataclass

from ollama_ops.health import api, journal, verdict
from ollama_ops.health.deep import pick_model
from ollama_ops.health.gpu import GpuReader
from ollama_ops.health.host import read_memory, read_unit
from ollama_ops.health.http import Http, probe_address
from ollama_ops.health.model import (
    ApiState,
    DeepOutcome,
    DeepProbe,
    GpuState,
    MemoryState,
    Progress,
    Snapshot,
    UnitState,
    Verdict,
)
from ollama_ops.runtime import Runtime


@dataclass(frozen=True)
class CheckOptions:
    url: str
    unit: str = "ollama.service"
    deep: bool = False
    deadline_s: float = 10.0  # for the generation
    live_deadline_s: float = 5.0
    window_s: float = 60.0
    system: bool = True  # read systemd, the cgroup, the journal and the GPU


def _deep(http: Http, snap_models: ApiState, opts: CheckOptions) -> DeepProbe:
    target = pick_model(snap_models.models, opts.deadline_s)
    if target is None:
        why = "no model loaded" if snap_models.models is not None else "loaded models unknown"
        return DeepProbe(DeepOutcome.SKIPPED, detail=why)
    outcome, latency, detail = api.generate_one(http, target.name, opts.deadline_s)
    failed = outcome is not DeepOutcome.OK
    return DeepProbe(
        outcome, target.name, latency, detail, failures=int(failed), failing_for_s=latency * failed
    )


def run_check(
    rt: Runtime, opts: CheckOptions, *, http: Http | None = None, gpu: GpuReader | None = None
) -> tuple[Snapshot, Verdict]:
    own = probe_address(opts.url)
    http = http or Http(opts.url, clock=rt.clock, local_address=own)
    started = rt.clock()
    live = api.liveness(http, opts.live_deadline_s)
    models, ps_detail = (None, "")
    if live.ok:
        models, ps_detail = api.loaded(http, rt.wall_clock(), opts.live_deadline_s)
    state = ApiState(live=live, models=models, ps_detail=ps_detail)
    deep = _deep(http, state, opts) if opts.deep and live.ok else None
    if opts.deep and not live.ok:
        deep = DeepProbe(DeepOutcome.SKIPPED, detail="the API does not answer")
    if opts.system:
        unit = read_unit(rt, opts.unit)
        memory = (
            read_memory(rt, unit.control_group)
            if unit.available
            else MemoryState(available=False, detail=unit.detail)
        )
        reader = gpu or GpuReader(rt.run)
        try:
            gpu_state = reader.read()
        finally:
            reader.close()
        # Evidence from before the probes began, counted over the window or the probes' span.
        spent = rt.clock() - started
        if unit.available:
            progress = journal.recent(
                rt,
                opts.unit,
                opts.window_s + spent + 5,
                max(opts.window_s, spent + 5),
                frozenset({own}) if own else frozenset(),
            )
        else:  # an empty journal of a unit systemd does not know proves nothing
            progress = Progress(readable=False, detail=f"no journal of {opts.unit} to read")
    else:
        unit = UnitState(available=False, detail="not asked (--no-system)")
        memory = MemoryState(available=False, detail="not asked (--no-system)")
        gpu_state = GpuState(source="none", detail="not asked (--no-system)")
        progress = Progress(readable=False, detail="not asked (--no-system)")
    snap = Snapshot(
        api=state, deep=deep, unit=unit, memory=memory, gpu=gpu_state, progress=progress
    )
    return snap, verdict.assess(snap, verdict.Thresholds(deep_failures=1))


def wait_ready(
    rt: Runtime, url: str, timeout: float, *, http: Http | None = None
) -> tuple[bool, str]:
    """Poll `GET /` until Ollama answers (True) or ``timeout`` passes (False, the last failure)."""
    http = http or Http(url, clock=rt.clock)
    deadline = rt.clock() + timeout
    last = "no attempt"
    while True:
        left = deadline - rt.clock()
        reply = api.liveness(http, max(0.5, min(2.0, left)))
        if reply.ok:
            return True, f"{url} answered after {timeout - left:.1f}s"
        last = reply.detail
        if rt.clock() >= deadline:
            return False, f"{url} did not answer within {timeout:g}s (last: {last})"
        rt.sleep(0.25)
