"""The verdict rules: busy and hung told apart by evidence, UNKNOWN where the checker cannot tell."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollama_ops.errors import HealthStatus
from ollama_ops.health.model import (
    DeepOutcome,
    DeepProbe,
    Failure,
    GpuReading,
    HttpResult,
    MemoryState,
    Problem,
    Progress,
    Snapshot,
    State,
    UnitState,
)
from ollama_ops.health.verdict import Thresholds, assess

from .health_helpers import (
    UNIT_OK,
    deep_failing,
    model,
    progress,
    refused,
    snap,
    timeout,
)

GPU = GpuReading(index=0, name="RTX", memory_used=10, memory_total=100)


def test_all_well_is_ok_and_exit_zero() -> None:
    ok = DeepProbe(DeepOutcome.OK, "m:1b", 0.05)
    v = assess(snap(models=[model()], deep=ok))
    assert v.state is State.OK and v.status is HealthStatus.OK
    assert "1 token from m:1b" in v.summary


def test_process_silent_and_nothing_completes_is_hung() -> None:
    v = assess(
        snap(live=timeout(2.0), live_failing_for=4.0, progress=progress(last_completion_age_s=30.0))
    )
    assert v.state is State.HUNG and v.problem is Problem.PROCESS_HUNG
    assert v.status is HealthStatus.CRITICAL


def test_process_silent_but_requests_complete_is_busy() -> None:
    v = assess(
        snap(live=timeout(2.0), live_failing_for=4.0, progress=progress(last_completion_age_s=1.0))
    )
    assert v.state is State.BUSY and v.problem is Problem.SLOW


def test_process_silent_but_answering_others_with_503_is_busy_not_hung() -> None:
    # An overloaded server may leave GET / unanswered while it still refuses the flood: its
    # HTTP side lives, so it is no whole-process hang (the 503 flood, on a small host).
    def silent(evidence: Progress, deep: DeepProbe | None = None) -> Snapshot:
        return snap(live=timeout(2.0), live_failing_for=4.0, progress=evidence, deep=deep)

    flooded = progress(last_completion_age_s=None, rejected=900, last_rejection_age_s=0.5)
    v = assess(silent(flooded))
    assert v.state is State.BUSY and v.problem is Problem.QUEUE_FULL, v
    # 503s from before the silence began prove nothing about it.
    old = progress(rejected=3, last_rejection_age_s=30.0)
    assert assess(silent(old)).problem is Problem.PROCESS_HUNG
    # Nor about generation: a probe that hangs while nothing completes is still a hang.
    hung = assess(silent(flooded, deep_failing(3, span=20.0)))
    assert hung.state is State.HUNG and hung.problem is Problem.GENERATION_HUNG, hung


def test_silent_with_an_unreadable_journal_is_unknown() -> None:
    unreadable = Progress(readable=False, detail="journal unreadable: Permission denied")
    v = assess(snap(live=timeout(), progress=unreadable))
    assert v.state is State.UNKNOWN and v.status is HealthStatus.UNKNOWN
    assert "cannot tell busy from hung" in v.summary


@pytest.mark.parametrize("failure", [Failure.BAD_URL, Failure.NOT_OLLAMA])
def test_the_checkers_own_input_problems_are_unknown(failure: Failure) -> None:
    live = HttpResult(
        ok=False, status=200, body="", latency_s=0.01, failure=failure, detail="nginx"
    )
    assert assess(snap(live=live)).state is State.UNKNOWN


def test_refused_is_down() -> None:
    v = assess(snap(live=refused()))
    assert v.state is State.DOWN and v.problem is Problem.API_DOWN


@pytest.mark.parametrize(
    ("active", "sub", "problem"),
    [
        ("failed", "failed", Problem.UNIT_FAILED),
        ("activating", "auto-restart", Problem.UNIT_STARTING),
        ("activating", "start-post", Problem.UNIT_STARTING),
        ("inactive", "dead", Problem.UNIT_STOPPED),
    ],
)
def test_the_units_state_comes_first(active: str, sub: str, problem: Problem) -> None:
    unit = replace(UNIT_OK, active_state=active, sub_state=sub)
    v = assess(snap(live=refused(), unit=unit))
    assert v.state is State.DOWN and v.problem is problem


def test_generation_that_never_finishes_with_nothing_completing_is_hung() -> None:
    v = assess(
        snap(
            models=[model()],
            deep=deep_failing(2, span=10.0),
            progress=progress(last_completion_age_s=40.0),
        )
    )
    assert v.state is State.HUNG and v.problem is Problem.GENERATION_HUNG


def test_one_failed_generation_is_not_yet_hung_for_the_supervisor() -> None:
    v = assess(snap(models=[model()], deep=deep_failing(1)))
    assert v.state is State.BUSY
    assert (
        assess(snap(models=[model()], deep=deep_failing(1)), Thresholds(deep_failures=1)).state
        is State.HUNG
    )


def test_generation_stuck_in_the_queue_while_others_complete_is_busy() -> None:
    v = assess(
        snap(
            models=[model()],
            deep=deep_failing(3, span=12.0),
            progress=progress(last_completion_age_s=2.0),
        )
    )
    assert v.state is State.BUSY


def test_a_request_that_finished_as_the_hang_began_proves_nothing_later() -> None:
    # The first failed probe began 30 s ago; one stream finished just after, none since.
    p = progress(last_completion_age_s=29.5)
    v = assess(snap(models=[model()], deep=deep_failing(6, span=30.0), progress=p))
    assert v.state is State.HUNG
    silent = assess(snap(live=timeout(2.0), live_failing_for=30.0, progress=p))
    assert silent.state is State.HUNG


def test_503s_while_others_complete_is_busy_never_hung() -> None:
    deep = deep_failing(5, outcome=DeepOutcome.BUSY, detail="HTTP 503 server busy")
    v = assess(
        snap(
            models=[model()], deep=deep, progress=progress(last_completion_age_s=0.5, rejected=900)
        )
    )
    assert v.state is State.BUSY and v.problem is Problem.QUEUE_FULL


def test_a_model_loading_explains_a_blocked_queue() -> None:
    deep = deep_failing(6, span=40.0)
    v = assess(snap(models=[model()], deep=deep, progress=progress(loading_for_s=45.0)))
    assert v.state is State.BUSY and v.problem is Problem.LOADING


def test_a_load_longer_than_the_load_timeout_explains_nothing() -> None:
    deep = deep_failing(60, span=400.0)
    v = assess(snap(models=[model()], deep=deep, progress=progress(loading_for_s=400.0)))
    assert v.state is State.HUNG


def test_generation_failing_with_an_unreadable_journal_is_unknown() -> None:
    v = assess(
        snap(models=[model()], deep=deep_failing(2), progress=Progress(readable=False, detail="x"))
    )
    assert v.state is State.UNKNOWN


def test_runner_errors_are_degraded_not_hung() -> None:
    deep = deep_failing(
        3,
        outcome=DeepOutcome.ERROR,
        detail="HTTP 500 llama runner process has terminated: exit status 2",
    )
    v = assess(snap(models=[model()], deep=deep))
    assert v.state is State.DEGRADED and v.problem is Problem.RUNNER_ERRORS


def test_a_model_past_expiry_and_still_listed_is_stuck() -> None:
    v = assess(snap(models=[model(expires=-120.0)]))
    assert v.state is State.STUCK and v.problem is Problem.STUCK_MODEL


def test_a_generation_that_hangs_on_an_expired_model_is_stuck_before_the_grace() -> None:
    # Ollama queues a request for a stopping model behind its unload: a stuck unload hangs it.
    # That is "stuck" (kill the cgroup), not "hung" (unload, restart), and needs no 60 s wait.
    expired = [model(expires=-8.0)]
    v = assess(snap(models=expired, deep=deep_failing(2, span=6.0)))
    assert v.state is State.STUCK and v.problem is Problem.STUCK_MODEL
    assert "m:1b expired 8.0s ago" in v.summary and "did not finish" in v.summary
    # Not on one failure, not just after expiry, not while others complete or a load runs,
    # and not when the hanging probe asked another model.
    assert assess(snap(models=expired, deep=deep_failing(1))).state is State.BUSY
    just = assess(snap(models=[model(expires=-2.0)], deep=deep_failing(2)))
    assert just.state is State.HUNG
    moving = progress(last_completion_age_s=1.0)
    assert assess(snap(models=expired, deep=deep_failing(3), progress=moving)).state is State.BUSY
    loading = progress(loading_for_s=20.0)
    assert assess(snap(models=expired, deep=deep_failing(3), progress=loading)).state is State.BUSY
    other = replace(deep_failing(2), model="other:7b")
    assert assess(snap(models=expired, deep=other)).state is State.HUNG


def test_a_model_in_constant_use_past_its_old_expiry_is_not_stuck() -> None:
    # Ollama sets expires_at only when a model goes idle: in constant use it lies in the past.
    busy = progress(last_completion_age_s=1.0, completions=50)
    assert assess(snap(models=[model(expires=-600.0)], progress=busy)).state is State.OK
    ok = DeepProbe(DeepOutcome.OK, "m:1b", 0.1)
    assert assess(snap(models=[model(expires=-600.0)], deep=ok)).state is State.OK


def test_expiry_is_not_judged_after_a_clock_jump() -> None:
    v = assess(snap(models=[model(expires=-3600.0)], clock_jumped=True))
    assert v.state is State.OK and any("clock jumped" in n for n in v.notes)


def test_a_model_on_the_cpu_of_a_gpu_host_is_a_lost_gpu() -> None:
    v = assess(snap(models=[model(size=1000, vram=0)], gpus=[GPU]))
    assert v.state is State.DEGRADED and v.problem is Problem.GPU_LOST
    assert v.status is HealthStatus.CRITICAL


def test_partial_offload_is_cpu_fallback_a_warning() -> None:
    v = assess(snap(models=[model(size=1000, vram=600)], gpus=[GPU]))
    assert v.state is State.DEGRADED and v.problem is Problem.CPU_FALLBACK
    assert v.status is HealthStatus.WARNING and "40% on CPU" in v.summary


def test_a_cpu_only_host_is_not_degraded_for_running_on_the_cpu() -> None:
    assert assess(snap(models=[model(size=1000, vram=0)])).state is State.OK


def test_cuda_errors_in_the_log_are_a_lost_gpu() -> None:
    p = progress(
        gpu_errors=2, last_gpu_error="error loading llama server error=CUDA error: unknown error"
    )
    assert assess(snap(progress=p)).problem is Problem.GPU_LOST


def test_ollama_on_the_cpu_while_nvml_sees_gpus_is_a_lost_gpu() -> None:
    v = assess(snap(gpus=[GPU], progress=progress(gpu_library="cpu")))
    assert v.problem is Problem.GPU_LOST


def test_a_cuda_out_of_memory_is_not_a_lost_gpu() -> None:
    deep = DeepProbe(
        DeepOutcome.ERROR, "m:1b", 0.1, "HTTP 500 CUDA error: out of memory", failures=1
    )
    assert assess(snap(models=[model()], deep=deep, gpus=[GPU])).problem is not Problem.GPU_LOST


def test_vram_near_full_restarts_and_oom_kills_are_warnings() -> None:
    full = replace(GPU, memory_used=99, memory_total=100)
    unit = replace(UNIT_OK, n_restarts=2, active_for_s=20.0)
    memory = MemoryState(available=True, current=1, oom_kills=1, oom_kills_recent=1)
    v = assess(snap(gpus=[full], unit=unit, memory=memory))
    assert v.state is State.DEGRADED
    assert set(v.problems) == {Problem.VRAM_FULL, Problem.RESTARTS, Problem.OOM_KILL}
    assert v.status is HealthStatus.WARNING


def test_notes_say_what_was_not_checked() -> None:
    unit = UnitState(available=False, detail="systemd not reachable (no bus)")
    v = assess(snap(unit=unit, progress=Progress(readable=False, detail="journal unreadable: x")))
    assert v.state is State.OK
    assert any("unit state not checked" in n for n in v.notes)
    assert any("log evidence not checked" in n for n in v.notes)
    assert any("add --deep" in n for n in v.notes)


_outcomes = st.sampled_from(list(DeepOutcome))
_failures = st.sampled_from([None, *Failure])


@given(
    live_failure=_failures,
    outcome=_outcomes,
    deep_failures=st.integers(0, 5),
    readable=st.booleans(),
    completed_ago=st.one_of(st.none(), st.floats(0, 1000)),
    loading=st.one_of(st.none(), st.floats(0, 1000)),
    expires=st.one_of(st.none(), st.floats(-1e5, 1e5)),
)
def test_hung_needs_evidence_that_nothing_completes(
    *,
    live_failure: Failure | None,
    outcome: DeepOutcome,
    deep_failures: int,
    readable: bool,
    completed_ago: float | None,
    loading: float | None,
    expires: float | None,
) -> None:
    """Whatever the probes saw, "hung" only when the log was read and shows no recent completion."""
    live = (
        HttpResult(ok=True, status=200, body="Ollama is running", latency_s=0.01)
        if live_failure is None
        else HttpResult(
            ok=False, status=None, body="", latency_s=2.0, failure=live_failure, detail="x"
        )
    )
    deep = DeepProbe(
        outcome, "m:1b", 5.0, "x", failures=deep_failures, failing_for_s=10.0 * deep_failures
    )
    p = Progress(readable=readable, last_completion_age_s=completed_ago, loading_for_s=loading)
    v = assess(snap(live=live, deep=deep, progress=p, models=[model(expires=expires)]))
    if v.state is State.HUNG:
        assert readable
        assert completed_ago is None or completed_ago > 1.0  # nothing completed during the failures
    if not readable and v.state is State.HUNG:
        pytest.fail("hung without evidence")
    assert v.reasons and all("\n" not in r for r in v.reasons)
