"""Snapshot -> Verdict: the rules, in order, pure.

Busy and hung are told apart by evidence of progress, not by one timeout: a
probe that gets no answer while Ollama's log shows requests completing, or a
model loading, is busy. Where the evidence needed to tell is missing (the
journal is unreadable, the URL is not Ollama's) the verdict is UNKNOWN, which
the policy never acts on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ollama_ops.health.model import (
    DeepOutcome,
    DeepProbe,
    Failure,
    Problem,
    Snapshot,
    State,
    Verdict,
)

GPU_LIBRARIES = ("cuda", "rocm")


@dataclass(frozen=True)
class Thresholds:
    deep_failures: int = 2  # consecutive failed generations before "hung" (1 for one check)
    stuck_grace_s: float = 60.0  # a model this long past its expiry and still listed is stuck
    # Sooner when a generation on that very model does not finish: Ollama queues a request for a
    # model that is stopping behind its unload, so a stuck unload hangs it (the grace only covers
    # an unload that takes a while, which the probe would wait out).
    stuck_probed_grace_s: float = 5.0
    load_grace_s: float = 300.0  # a load longer than OLLAMA_LOAD_TIMEOUT (5m) explains nothing
    vram_full_ratio: float = 0.97
    slow_s: float = 1.0  # `GET /` slower than this counts as busy
    # A completion counts as progress only when logged after the first failed probe began,
    # and only while recent: a request that finished as the hang began proves nothing later.
    slack_s: float = 0.0
    progress_window_s: float = 15.0


def _s(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"


def gpu_host(s: Snapshot) -> bool:
    return bool(s.gpu.gpus) or s.progress.gpu_library in GPU_LIBRARIES


def _within(age: float | None, seconds: float, t: Thresholds) -> bool:
    return age is not None and age <= seconds + t.slack_s


def _completed_within(s: Snapshot, seconds: float, t: Thresholds) -> bool:
    return _within(s.progress.last_completion_age_s, seconds, t)


def _unit_rule(s: Snapshot) -> Verdict | None:
    u = s.unit
    if not u.available or u.active_state == "active":
        return None
    what = f"{u.active_state}/{u.sub_state}" + (f", result {u.result}" if u.result else "")
    if u.active_state == "failed":
        return Verdict(State.DOWN, (Problem.UNIT_FAILED,), (f"the unit failed ({what})",))
    if (
        u.active_state in ("activating", "deactivating", "reloading")
        or u.sub_state == "auto-restart"
    ):
        return Verdict(State.DOWN, (Problem.UNIT_STARTING,), (f"the unit is not up yet ({what})",))
    return Verdict(State.DOWN, (Problem.UNIT_STOPPED,), (f"the unit is stopped ({what})",))


def _liveness_rule(s: Snapshot, t: Thresholds) -> Verdict | None:
    live = s.api.live
    if live.ok:
        return None
    if live.failure in (Failure.BAD_URL, Failure.NOT_OLLAMA):
        return Verdict(State.UNKNOWN, (Problem.CHECKER,), (f"cannot check: {live.detail}",))
    if live.failure is not Failure.TIMEOUT:
        return Verdict(
            State.DOWN, (Problem.API_DOWN,), (f"the API does not answer: {live.detail}",)
        )
    span = max(s.api.live_failing_for_s, live.latency_s)
    if not s.progress.readable:
        return Verdict(
            State.UNKNOWN,
            (Problem.CHECKER,),
            (
                f"GET / got no answer in {_s(live.latency_s)} and {s.progress.detail}: "
                "cannot tell busy from hung",
            ),
        )
    recent = min(span, t.progress_window_s)
    if _completed_within(s, recent, t):
        return Verdict(
            State.BUSY,
            (Problem.SLOW,),
            (f"GET / got no answer in {_s(live.latency_s)}, but requests still complete",),
        )
    if _within(s.progress.last_rejection_age_s, recent, t):
        # It answers others with 503 meanwhile: overloaded, not wholly hung. Whether its
        # generation still moves is for the rules after this one (a full queue proves nothing
        # there); without a probe the full queue makes it busy.
        return None
    return Verdict(
        State.HUNG,
        (Problem.PROCESS_HUNG,),
        (
            f"the server answers nothing: GET / got no answer for {_s(span)} and no request "
            "completed meanwhile",
        ),
    )


def _gpu_lost_rule(s: Snapshot) -> Verdict | None:
    reasons = []
    p = s.progress
    if p.gpu_errors:
        reasons.append(
            f"Ollama logged {p.gpu_errors} GPU error(s) in {_s(p.window_s)}: {p.last_gpu_error[:120]}"
        )
    deep = s.deep
    if (
        deep is not None
        and deep.outcome is DeepOutcome.ERROR
        and "CUDA error" in deep.detail
        and "out of memory" not in deep.detail
    ):
        reasons.append(f"generation on {deep.model} failed: {deep.detail[:120]}")
    if gpu_host(s):
        for m in s.api.models or ():
            if m.size > 0 and m.size_vram == 0:
                reasons.append(f"{m.name} runs 100% on CPU on a GPU host")
    if s.gpu.gpus and p.gpu_library == "cpu":
        reasons.append(
            f"Ollama started on the CPU (library=cpu) while {len(s.gpu.gpus)} GPU(s) are visible"
        )
    if s.gpu.source == "error" and p.gpu_library in GPU_LIBRARIES:
        reasons.append(f"the GPU does not answer: {s.gpu.detail}")
    if not reasons:
        return None
    return Verdict(State.DEGRADED, (Problem.GPU_LOST,), tuple(reasons), critical=True)


def _stuck_rule(s: Snapshot, t: Thresholds) -> Verdict | None:
    if s.clock_jumped:
        return None
    deep = s.deep
    hung_on = _generation_hung_on(s, t)
    for m in s.api.models or ():
        if m.expires_in_s is None or m.expires_in_s >= 0:
            continue
        past = -m.expires_in_s
        if deep is not None and m.name == hung_on and past >= t.stuck_probed_grace_s:
            return Verdict(
                State.STUCK,
                (Problem.STUCK_MODEL,),
                (
                    f"{m.name} expired {_s(past)} ago and is still listed, and "
                    f"{_deep_text(deep)} (stuck in 'Stopping...')",
                ),
            )
        if past < t.stuck_grace_s:
            continue
        if deep is not None and deep.model == m.name and deep.outcome is DeepOutcome.OK:
            continue  # it still generates: in use past its old expiry, not stuck
        if _completed_within(s, min(past, 4 * t.progress_window_s), t):
            continue  # requests complete since it expired: a model in constant use
        return Verdict(
            State.STUCK,
            (Problem.STUCK_MODEL,),
            (f"{m.name} expired {_s(past)} ago and is still listed (stuck in 'Stopping...')",),
        )
    return None


def _generation_hung_on(s: Snapshot, t: Thresholds) -> str | None:
    """The model whose one-token generation timed out where the deep rule finds it hung
    (failing long enough, nothing loading, nothing completing); None otherwise."""
    deep = s.deep
    if deep is None or deep.outcome is not DeepOutcome.TIMEOUT:
        return None
    verdict = _deep_rule(s, t)
    return deep.model if verdict is not None and verdict.state is State.HUNG else None


def _deep_rule(s: Snapshot, t: Thresholds) -> Verdict | None:
    deep = s.deep
    if deep is None or deep.outcome in (DeepOutcome.OK, DeepOutcome.SKIPPED):
        return None
    if deep.failures < t.deep_failures:
        return None
    what = _deep_text(deep)
    p = s.progress
    if not p.readable:
        return Verdict(
            State.UNKNOWN,
            (Problem.CHECKER,),
            (f"{what}, and {p.detail}: cannot tell busy from hung",),
        )
    if p.loading_for_s is not None and p.loading_for_s < t.load_grace_s:
        return Verdict(
            State.BUSY,
            (Problem.LOADING,),
            (f"{what}: a model has been loading for {_s(p.loading_for_s)}",),
        )
    span = max(deep.failing_for_s, deep.latency_s or 0.0)
    if _completed_within(s, min(span, t.progress_window_s), t):
        problem = Problem.QUEUE_FULL if deep.outcome is DeepOutcome.BUSY else Problem.SLOW
        return Verdict(State.BUSY, (problem,), (f"{what}, but other requests complete",))
    if deep.outcome is DeepOutcome.ERROR:
        return Verdict(State.DEGRADED, (Problem.RUNNER_ERRORS,), (f"{what}",))
    return Verdict(
        State.HUNG,
        (Problem.GENERATION_HUNG,),
        (f"{what} and no request completed in {_s(span)}",),
    )


def _deep_text(deep: DeepProbe) -> str:
    tries = f" ({deep.failures} tries)" if deep.failures > 1 else ""
    if deep.outcome is DeepOutcome.TIMEOUT:
        return f"a 1-token generation on {deep.model} did not finish{tries}: {deep.detail}"
    if deep.outcome is DeepOutcome.BUSY:
        return f"a 1-token generation on {deep.model} was refused{tries}: {deep.detail}"
    return f"a 1-token generation on {deep.model} failed{tries}: {deep.detail}"


def _warnings(s: Snapshot, t: Thresholds) -> Verdict | None:
    problems: list[Problem] = []
    reasons: list[str] = []

    def add(problem: Problem, reason: str) -> None:
        if problem not in problems:
            problems.append(problem)
        reasons.append(reason)

    if gpu_host(s):
        for m in s.api.models or ():
            if 0 < m.size_vram < m.size:
                add(Problem.CPU_FALLBACK, f"{m.name} is {100 - m.on_gpu_percent:.0f}% on CPU")
    for g in s.gpu.gpus:
        if (
            g.memory_used is not None
            and g.memory_total
            and g.memory_used >= t.vram_full_ratio * g.memory_total
        ):
            add(
                Problem.VRAM_FULL,
                f"GPU {g.index} memory {100 * g.memory_used / g.memory_total:.0f}% used",
            )
    u = s.unit
    window = s.progress.window_s
    recently_up = u.active_for_s is not None and u.active_for_s < window
    if u.restarts_recent or (u.n_restarts and recently_up):
        add(
            Problem.RESTARTS,
            f"restarted ({u.n_restarts} restarts in all), up for {_s(u.active_for_s or 0.0)}",
        )
    if (
        s.memory.oom_kills_recent
        or s.progress.oom_events
        or (u.result == "oom-kill" and recently_up)
    ):
        add(Problem.OOM_KILL, f"out-of-memory kills: {s.memory.oom_kills} in the unit's cgroup")
    if s.progress.server_errors:
        add(
            Problem.RUNNER_ERRORS,
            f"{s.progress.server_errors} requests failed with 5xx in {_s(window)}",
        )
    if problems:
        return Verdict(State.DEGRADED, tuple(problems), tuple(reasons))
    return None


def _busy(s: Snapshot, t: Thresholds) -> Verdict | None:
    p = s.progress
    deep = s.deep
    if p.loading_for_s is not None and p.loading_for_s < t.load_grace_s:
        return Verdict(
            State.BUSY, (Problem.LOADING,), (f"a model has been loading for {_s(p.loading_for_s)}",)
        )
    if (deep is not None and deep.outcome is DeepOutcome.BUSY) or p.rejected:
        n = f"{p.rejected} requests refused with 503 in {_s(p.window_s)}" if p.rejected else "503"
        return Verdict(State.BUSY, (Problem.QUEUE_FULL,), (f"the queue is full ({n})",))
    if (
        deep is not None
        and deep.outcome is not DeepOutcome.OK
        and deep.outcome is not DeepOutcome.SKIPPED
    ):
        return Verdict(State.BUSY, (Problem.SLOW,), (_deep_text(deep),))
    if s.api.live.latency_s > t.slow_s:
        return Verdict(State.BUSY, (Problem.SLOW,), (f"GET / took {_s(s.api.live.latency_s)}",))
    return None


def _ok_text(s: Snapshot) -> str:
    parts = [f"the API answered in {s.api.live.latency_s * 1000:.0f} ms"]
    models = s.api.models
    if models is not None:
        names = ", ".join(
            f"{m.name} {m.on_gpu_percent:.0f}% GPU" if gpu_host(s) else m.name for m in models
        )
        parts.append(f"{len(models)} model(s) loaded" + (f" ({names})" if names else ""))
    if s.deep is not None and s.deep.outcome is DeepOutcome.OK and s.deep.latency_s is not None:
        parts.append(f"1 token from {s.deep.model} in {s.deep.latency_s * 1000:.0f} ms")
    return ", ".join(parts)


def notes(s: Snapshot) -> tuple[str, ...]:
    """What could not be checked, and why."""
    found = []
    if not s.unit.available:
        found.append(f"unit state not checked: {s.unit.detail}")
    if s.unit.available and not s.memory.available:
        found.append(f"cgroup memory not checked: {s.memory.detail}")
    if not s.progress.readable:
        found.append(f"log evidence not checked: {s.progress.detail}")
    if s.deep is None:
        found.append("generation not checked (add --deep)")
    elif s.deep.outcome is DeepOutcome.SKIPPED:
        found.append(f"generation not checked: {s.deep.detail or 'no model loaded'}")
    unread = s.gpu.source == "none" and s.progress.gpu_library in GPU_LIBRARIES
    if s.gpu.source == "error" or unread:
        found.append(f"GPU not read: {s.gpu.detail}")
    if s.clock_jumped:
        found.append("the wall clock jumped: model expiry not judged")
    if s.api.live.ok and s.api.models is None and s.api.ps_detail:
        found.append(f"loaded models not read: {s.api.ps_detail}")
    return tuple(found)


def assess(s: Snapshot, t: Thresholds | None = None) -> Verdict:
    """The verdict for one snapshot; the first rule that applies wins."""
    t = t or Thresholds()
    found = (
        _unit_rule(s)
        or _liveness_rule(s, t)
        or _gpu_lost_rule(s)
        or _stuck_rule(s, t)
        or _deep_rule(s, t)
        or _warnings(s, t)
        or _busy(s, t)
        or Verdict(State.OK, (), (_ok_text(s),))
    )
    return replace(found, notes=notes(s))
