"""The recovery policy as a pure state machine: time is an argument, nothing sleeps."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_ops.health.model import Problem, State, Verdict
from ollama_ops.health.policy import (
    LADDERS,
    Action,
    Kind,
    PolicyConfig,
    PolicyState,
    state_from_dict,
    state_to_dict,
    step,
)

CFG = PolicyConfig(
    failures_before_action=3,
    startup_grace_s=60.0,
    cooldown_s=30.0,
    backoff=2.0,
    max_cooldown_s=600.0,
    max_actions=3,
    window_s=3600.0,
    healthy_reset_s=300.0,
)
HUNG = Verdict(State.HUNG, (Problem.PROCESS_HUNG,), ("silent",))
GEN_HUNG = Verdict(State.HUNG, (Problem.GENERATION_HUNG,), ("no token",))
OK = Verdict(State.OK, (), ("fine",))
BUSY = Verdict(State.BUSY, (Problem.QUEUE_FULL,), ("503s",))
UNKNOWN = Verdict(State.UNKNOWN, (Problem.CHECKER,), ("journal unreadable",))
STOPPED = Verdict(State.DOWN, (Problem.UNIT_STOPPED,), ("stopped",))
STARTING = Verdict(State.DOWN, (Problem.UNIT_STARTING,), ("auto-restart",))
STUCK = Verdict(State.STUCK, (Problem.STUCK_MODEL,), ("Stopping...",))
GPU_LOST = Verdict(State.DEGRADED, (Problem.GPU_LOST,), ("100% CPU",), critical=True)
CPU_FALLBACK = Verdict(State.DEGRADED, (Problem.CPU_FALLBACK,), ("40% CPU",))


def run(
    verdicts: list[Verdict],
    *,
    start: float = 1000.0,
    every: float = 1.0,
    started_at: float | None = 0.0,
) -> list[tuple[float, Kind, Action | None]]:
    state = PolicyState()
    out = []
    now = start
    for v in verdicts:
        state, d = step(state, v, now, CFG, unit_started_at=started_at)
        out.append((now, d.kind, d.action))
        now += every
    return out


def actions(trace: list[tuple[float, Kind, Action | None]]) -> list[tuple[float, Action]]:
    return [(t, a) for t, k, a in trace if k is Kind.ACT and a is not None]


def test_acts_only_after_consecutive_failures() -> None:
    trace = run([HUNG, HUNG, HUNG])
    assert [k for _, k, _ in trace] == [Kind.WAIT, Kind.WAIT, Kind.ACT]
    assert trace[-1][2] is Action.RESTART_UNIT


def test_a_good_check_breaks_the_streak() -> None:
    assert actions(run([HUNG, HUNG, OK, HUNG, HUNG])) == []


def test_unknown_breaks_the_streak_and_never_acts() -> None:
    assert actions(run([HUNG, HUNG, UNKNOWN, HUNG, HUNG])) == []
    assert all(k is Kind.HOLD for _, k, _ in run([UNKNOWN] * 50))


def test_busy_degraded_stopped_and_starting_never_act() -> None:
    for v in (BUSY, CPU_FALLBACK, STOPPED, STARTING):
        assert actions(run([v] * 500)) == [], v


def test_no_action_within_the_start_up_grace() -> None:
    trace = run([HUNG] * 80, start=10.0, started_at=0.0)  # the unit started at t=0
    acted = actions(trace)
    assert acted and acted[0][0] >= CFG.startup_grace_s
    assert any(k is Kind.WAIT for _, k, _ in trace[:40])


def test_cooldown_doubles_after_each_action() -> None:
    acted = actions(run([HUNG] * 400))
    times = [t for t, _ in acted]
    assert len(times) == CFG.max_actions
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= CFG.cooldown_s and gaps[1] >= 2 * CFG.cooldown_s


def test_the_ladder_climbs_while_the_problem_persists() -> None:
    acted = [a for _, a in actions(run([GEN_HUNG] * 400))]
    assert acted == list(LADDERS[Problem.GENERATION_HUNG])


def test_each_problem_has_its_own_rung() -> None:
    assert actions(run([STUCK] * 3))[0][1] is Action.KILL_AND_START
    assert actions(run([GPU_LOST] * 3))[0][1] is Action.RELOAD_GPU_DRIVER
    failed = Verdict(State.DOWN, (Problem.UNIT_FAILED,), ("failed",))
    assert actions(run([failed] * 3, started_at=None))[0][1] is Action.START_UNIT


def test_a_fault_that_never_clears_gets_the_budget_then_a_loud_give_up() -> None:
    trace = run([HUNG] * 5000)  # 5000 s of a fault that never clears
    assert len(actions(trace)) == CFG.max_actions
    kinds = [k for _, k, _ in trace]
    assert kinds.count(Kind.GIVE_UP) == 1  # said once
    assert kinds[-1] is Kind.GAVE_UP  # and then it waits


def test_health_that_holds_resets_the_budget_and_the_give_up() -> None:
    state = PolicyState()
    now = 0.0
    for _ in range(3000):
        state, _ = step(state, HUNG, now, CFG)
        now += 1
    assert state.gave_up
    for _ in range(int(CFG.healthy_reset_s)):  # healthy since the first of these
        state, d = step(state, OK, now, CFG)
        now += 1
        assert d.kind is not Kind.RESET
    state, d = step(state, OK, now, CFG)
    assert d.kind is Kind.RESET and not state.gave_up and state.actions == ()
    # A new fault is acted on again, from the first rung.
    for _ in range(3):
        state, d = step(state, HUNG, now, CFG)
        now += 1
    assert d.kind is Kind.ACT and d.action is Action.RESTART_UNIT


def test_counters_are_not_reset_by_an_action_alone() -> None:
    """monit's trap: a restart that 'worked' for a few seconds must not refill the budget."""
    flapping = ([HUNG] * 3 + [OK] * 20) * 40
    assert len(actions(run(flapping))) == CFG.max_actions


def test_state_survives_a_round_trip_for_the_timer_layout() -> None:
    state = PolicyState(
        streak=2, problem=Problem.STUCK_MODEL, step=1, actions=(1.0, 2.5), gave_up=True
    )
    assert state_from_dict(state_to_dict(state)) == state
    assert state_from_dict({"streak": "x"}) == PolicyState()
    assert state_from_dict(None) == PolicyState()


_verdicts = st.sampled_from([HUNG, GEN_HUNG, OK, BUSY, UNKNOWN, STOPPED, STARTING, STUCK, GPU_LOST])


@settings(max_examples=300)
@given(
    steps=st.lists(st.tuples(_verdicts, st.floats(0.1, 120.0)), max_size=300),
    started_at=st.one_of(st.none(), st.floats(0, 5000)),
)
def test_the_rules_hold_for_any_history(
    steps: list[tuple[Verdict, float]], started_at: float | None
) -> None:
    state = PolicyState()
    now = 0.0
    streak = 0
    since_reset: list[float] = []
    for v, gap in steps:
        now += gap
        state, d = step(state, v, now, CFG, unit_started_at=started_at)
        bad = v.state is not State.UNKNOWN and v.problem in LADDERS
        streak = streak + 1 if bad else 0
        if d.kind is Kind.RESET:
            since_reset = []
        if d.kind is Kind.ACT:
            assert bad, "acted on a verdict that is not actionable"
            assert streak >= CFG.failures_before_action
            assert started_at is None or now - started_at >= CFG.startup_grace_s
            if since_reset:
                assert now - since_reset[-1] >= CFG.cooldown_s
            since_reset.append(now)
            streak = 0
            in_window = [t for t in since_reset if now - t < CFG.window_s]
            assert len(in_window) <= CFG.max_actions
        assert state.streak >= 0
