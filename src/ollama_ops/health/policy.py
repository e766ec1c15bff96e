"""The recovery policy: a small pure state machine (the clock is an argument).

``step(state, verdict, now, ...)`` returns the next state and one Decision.
The rules, from the supervisors that got them right (Kubernetes, Consul,
monit's known trap, docker-autoheal's forks):

* act only after ``failures_before_action`` consecutive failed checks;
  UNKNOWN (the checker's own failure) breaks the streak, never extends it;
* no action within ``startup_grace_s`` of the unit's start (at least a model load);
* after each action a cooldown, doubled for each action in the window;
* at most ``max_actions`` per ``window_s``; then give up loudly and wait (at once, when
  the problem outlives the last action the budget allowed: no cooldown to sit out);
* the ladder climbs while the same problem persists (unload, restart, kill);
* counters, ladder and give-up reset only after health has held for
  ``healthy_reset_s`` — never merely because an action was taken.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from ollama_ops.health.model import Problem, State, Verdict


class Action(str, Enum):
    UNLOAD_MODEL = "unload_model"
    RESTART_UNIT = "restart_unit"
    KILL_AND_START = "kill_and_start"  # SIGKILL the whole cgroup, then start
    RELOAD_GPU_DRIVER = "reload_gpu_driver"  # stop, rmmod/modprobe nvidia_uvm, start
    START_UNIT = "start_unit"  # reset-failed, then start: systemd gave up on it


LADDERS: dict[Problem, tuple[Action, ...]] = {
    Problem.GENERATION_HUNG: (Action.UNLOAD_MODEL, Action.RESTART_UNIT, Action.KILL_AND_START),
    Problem.PROCESS_HUNG: (Action.RESTART_UNIT, Action.KILL_AND_START),
    Problem.API_DOWN: (Action.RESTART_UNIT, Action.KILL_AND_START),
    Problem.STUCK_MODEL: (Action.KILL_AND_START,),
    Problem.GPU_LOST: (Action.RELOAD_GPU_DRIVER,),
    Problem.UNIT_FAILED: (Action.START_UNIT, Action.KILL_AND_START),
}

# Problems of a process that is not running: a start-up grace makes no sense for them.
_NOT_RUNNING = frozenset({Problem.UNIT_FAILED})


@dataclass(frozen=True)
class PolicyConfig:
    failures_before_action: int = 3
    startup_grace_s: float = 90.0
    cooldown_s: float = 30.0
    backoff: float = 2.0
    max_cooldown_s: float = 900.0
    max_actions: int = 4
    window_s: float = 3600.0
    healthy_reset_s: float = 300.0

    def cooldown(self, actions_in_window: int) -> float:
        """The wait after the n-th action of the window (n >= 1): exponential, capped."""
        n = max(1, actions_in_window)
        return float(min(self.max_cooldown_s, self.cooldown_s * self.backoff ** (n - 1)))


@dataclass(frozen=True)
class PolicyState:
    streak: int = 0  # consecutive checks with an actionable problem
    problem: Problem | None = None  # what the ladder is climbing for
    step: int = 0  # the next rung for that problem
    actions: tuple[float, ...] = ()  # when actions were taken (within the window)
    healthy_since: float | None = None
    gave_up: bool = False

    @property
    def last_action_at(self) -> float | None:
        return self.actions[-1] if self.actions else None


class Kind(str, Enum):
    ACT = "act"
    WAIT = "wait"  # a problem, but not yet (streak, grace, cooldown)
    GIVE_UP = "give_up"  # the budget is spent: said once, loudly
    GAVE_UP = "gave_up"  # still given up, still waiting
    RESET = "reset"  # health held: counters, ladder and give-up cleared
    HOLD = "hold"  # the checker cannot tell, or must not act
    OK = "ok"


@dataclass(frozen=True)
class Decision:
    kind: Kind
    reason: str
    action: Action | None = None
    problem: Problem | None = None


def actionable(verdict: Verdict) -> bool:
    return verdict.state is not State.UNKNOWN and verdict.problem in LADDERS


def _healthy(verdict: Verdict) -> bool:
    return verdict.state in (State.OK, State.BUSY, State.DEGRADED) and not actionable(verdict)


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f}s"


def _settle(
    state: PolicyState, verdict: Verdict, now: float, cfg: PolicyConfig
) -> tuple[PolicyState, Decision]:
    """A check without an actionable problem."""
    if verdict.state is State.UNKNOWN:
        new = replace(state, streak=0, healthy_since=None)
        return new, Decision(
            Kind.HOLD, f"not acting on the checker's own failure: {verdict.summary}"
        )
    if not _healthy(verdict):  # stopped by an operator, or systemd is restarting it
        new = replace(state, streak=0, healthy_since=None)
        return new, Decision(Kind.HOLD, f"not acting: {verdict.summary}")
    since = state.healthy_since if state.healthy_since is not None else now
    new = replace(state, streak=0, healthy_since=since)
    dirty = state.gave_up or state.actions or state.step or state.problem is not None
    if dirty and now - since >= cfg.healthy_reset_s:
        return PolicyState(healthy_since=since), Decision(
            Kind.RESET,
            f"healthy for {_fmt(now - since)}: action budget, ladder and give-up reset",
        )
    return new, Decision(Kind.OK, verdict.summary)


def step(
    state: PolicyState,
    verdict: Verdict,
    now: float,
    cfg: PolicyConfig,
    *,
    unit_started_at: float | None = None,
) -> tuple[PolicyState, Decision]:
    """One check's verdict in, the next state and what to do out. Pure."""
    if not actionable(verdict):
        return _settle(state, verdict, now, cfg)
    problem = verdict.problem
    assert problem is not None
    actions = tuple(a for a in state.actions if now - a < cfg.window_s)
    same = problem == state.problem
    state = replace(
        state,
        streak=state.streak + 1,
        healthy_since=None,
        actions=actions,
        problem=problem,
        step=state.step if same else 0,
    )
    if state.gave_up:
        return state, Decision(
            Kind.GAVE_UP,
            f"gave up after {len(actions)} action(s); waiting for health to hold "
            f"{_fmt(cfg.healthy_reset_s)} or an operator: {verdict.summary}",
            problem=problem,
        )
    if state.streak < cfg.failures_before_action:
        return state, Decision(
            Kind.WAIT,
            f"{state.streak}/{cfg.failures_before_action} failed checks: {verdict.summary}",
            problem=problem,
        )
    if (
        problem not in _NOT_RUNNING
        and unit_started_at is not None
        and now - unit_started_at < cfg.startup_grace_s
    ):
        left = cfg.startup_grace_s - (now - unit_started_at)
        return state, Decision(
            Kind.WAIT, f"start-up grace, {_fmt(left)} left: {verdict.summary}", problem=problem
        )
    if len(actions) >= cfg.max_actions:
        return replace(state, gave_up=True), Decision(
            Kind.GIVE_UP,
            f"giving up: {len(actions)} action(s) in {_fmt(cfg.window_s)} did not help; "
            f"waiting for health to hold {_fmt(cfg.healthy_reset_s)} or an operator: "
            f"{verdict.summary}",
            problem=problem,
        )
    last = state.last_action_at
    if last is not None and now - last < cfg.cooldown(len(actions)):
        left = cfg.cooldown(len(actions)) - (now - last)
        return state, Decision(
            Kind.WAIT, f"cooldown, {_fmt(left)} left: {verdict.summary}", problem=problem
        )
    ladder = LADDERS[problem]
    action = ladder[min(state.step, len(ladder) - 1)]
    new = replace(state, streak=0, step=state.step + 1, actions=(*actions, now))
    return new, Decision(Kind.ACT, verdict.summary, action=action, problem=problem)


def state_to_dict(state: PolicyState) -> dict[str, object]:
    """PolicyState as JSON-ready data (for the timer layout, which runs one check at a time)."""
    return {
        "streak": state.streak,
        "problem": state.problem.value if state.problem else None,
        "step": state.step,
        "actions": list(state.actions),
        "healthy_since": state.healthy_since,
        "gave_up": state.gave_up,
    }


def state_from_dict(data: object) -> PolicyState:
    """The inverse of state_to_dict; a fresh state for anything malformed."""
    if not isinstance(data, dict):
        return PolicyState()
    try:
        problem = Problem(data["problem"]) if data.get("problem") else None
        healthy = data.get("healthy_since")
        return PolicyState(
            streak=int(data.get("streak", 0)),
            problem=problem,
            step=int(data.get("step", 0)),
            actions=tuple(float(a) for a in data.get("actions", [])),
            healthy_since=float(healthy) if healthy is not None else None,
            gave_up=bool(data.get("gave_up", False)),
        )
    except (KeyError, TypeError, ValueError):
        return PolicyState()
