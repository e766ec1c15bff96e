"""The supervisor loop: probe, judge, decide, act, publish; one check per interval.

Each check reads `GET /` (every interval), `/api/ps`, the unit and its cgroup
(every few seconds, every check while something is wrong), takes the latest
generation probe (its own thread) and the journal evidence (its own thread),
then runs the pure verdict and policy. Actions run in a worker thread so the
loop keeps probing and keeps pinging systemd's watchdog while a unit
restarts. Every change of decision is one structured journal record.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from ollama_ops.health import api, verdict
from ollama_ops.health.actions import ActionResult, Actor
from ollama_ops.health.deep import DeepProber
from ollama_ops.health.gpu import GpuReader
from ollama_ops.health.host import read_memory, read_unit
from ollama_ops.health.http import Http, probe_address
from ollama_ops.health.metrics import Board, Status
from ollama_ops.health.model import (
    ApiState,
    DeepProbe,
    GpuState,
    LoadedModel,
    MemoryState,
    Progress,
    Snapshot,
    State,
    UnitState,
    Verdict,
)
from ollama_ops.health.notify import Journal
from ollama_ops.health.policy import Action, Decision, Kind, PolicyConfig, PolicyState, step
from ollama_ops.runtime import Runtime

log = logging.getLogger(__name__)

# syslog priorities of the journal records
_PRIORITY = {
    Kind.ACT: 4,
    Kind.GIVE_UP: 2,
    Kind.GAVE_UP: 2,
    Kind.RESET: 5,
    Kind.WAIT: 4,
    Kind.HOLD: 5,
    Kind.OK: 6,
}
CLOCK_JUMP_S = 2.0
UNLOAD_CHECK_S = 180.0  # after unloading a hung model, keep asking it this long
CLOCK_JUMP_HOLD_S = 900.0


class Evidence(Protocol):
    def progress(self, now: float, window: float) -> Progress: ...
    def expect(self, at: float) -> None: ...  # Ollama answered us: an access line will follow


@dataclass(frozen=True)
class WatchOptions:
    url: str
    unit: str = "ollama.service"
    interval_s: float = 1.0
    live_deadline_s: float = 2.0
    deep: bool = True
    deep_interval_s: float = 5.0
    deep_deadline_s: float = 5.0
    unload_check_deadline_s: float = 20.0  # asking an unloaded model again loads it: allow for that
    slow_every_s: float = 5.0  # unit, cgroup and GPU while all is well
    gpu_every_s: float = 5.0
    window_s: float = 60.0
    observe_only: bool = False  # decide and log, never act
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    thresholds: verdict.Thresholds = field(default_factory=verdict.Thresholds)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def evidence_record(s: Snapshot) -> dict[str, object]:
    """The evidence behind a decision, compact, for the journal record."""
    live = s.api.live
    record: dict[str, object] = {
        "live": {
            "ok": live.ok,
            "latency_s": _round(live.latency_s),
            "failure": live.failure.value if live.failure else None,
            "failing_for_s": _round(s.api.live_failing_for_s),
        },
        "models": [
            {
                "name": m.name,
                "size": m.size,
                "size_vram": m.size_vram,
                "expires_in_s": _round(m.expires_in_s),
            }
            for m in s.api.models or ()
        ],
        "unit": {
            "state": f"{s.unit.active_state}/{s.unit.sub_state}",
            "result": s.unit.result,
            "restarts": s.unit.n_restarts,
            "main_pid": s.unit.main_pid,
        },
        "progress": {
            "readable": s.progress.readable,
            "last_completion_age_s": _round(s.progress.last_completion_age_s),
            "completions": s.progress.completions,
            "rejected": s.progress.rejected,
            "last_rejection_age_s": _round(s.progress.last_rejection_age_s),
            "loading_for_s": _round(s.progress.loading_for_s),
            "gpu_errors": s.progress.gpu_errors,
        },
        "memory": {"current": s.memory.current, "oom_kills": s.memory.oom_kills},
    }
    if s.deep is not None:
        record["deep"] = {
            "outcome": s.deep.outcome.value,
            "model": s.deep.model,
            "failures": s.deep.failures,
            "failing_for_s": _round(s.deep.failing_for_s),
            "detail": s.deep.detail[:120],
        }
    return record


class _Counter:
    """Counts with a sliding baseline: how much a monotonic counter grew within the window."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def before(self, now: float, window: float, value: int) -> int:
        while self._samples and self._samples[0][0] < now - window:
            self._samples.popleft()
        baseline = self._samples[0][1] if self._samples else value
        self._samples.append((now, value))
        return min(baseline, value)


class Supervisor:
    def __init__(
        self,
        rt: Runtime,
        opts: WatchOptions,
        *,
        evidence: Evidence,
        journal: Journal,
        http: Http | None = None,
        deep_http: Http | None = None,
        gpu: GpuReader | None = None,
        notify: Callable[[str], object] = lambda state: None,
        board: Board | None = None,
        log_totals: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self.rt = rt
        self.opts = opts
        self.evidence = evidence
        self.journal = journal
        own = probe_address(opts.url)  # our requests, told apart in Ollama's access log
        self.http = http or Http(opts.url, clock=rt.clock, local_address=own)
        self.gpu = gpu or GpuReader(rt.run)
        self.notify = notify
        self.board = board or Board()
        self.log_totals = log_totals
        self.actor = Actor(rt, opts.unit, Http(opts.url, clock=rt.clock, local_address=own))
        self.deep: DeepProber | None = None
        if opts.deep:
            self.deep = DeepProber(
                deep_http or Http(opts.url, clock=rt.clock, local_address=own),
                lambda: self._models,
                clock=rt.clock,
                interval=opts.deep_interval_s,
                deadline=opts.deep_deadline_s,
            )
        self.policy = PolicyState()
        self._models: tuple[LoadedModel, ...] | None = None
        self._ps_detail = ""
        self._unit = UnitState(available=False, detail="not read yet")
        self._memory = MemoryState(available=False, detail="not read yet")
        self._gpu = GpuState(source="none", detail="not read yet")
        self._slow_at: float | None = None
        self._gpu_at: float | None = None
        self._live_fail_since: float | None = None
        self._wall_offset: float | None = None
        self._jumped_at: float | None = None
        self._restarts = _Counter()
        self._ooms = _Counter()
        self._last_logged: tuple[object, ...] | None = None
        self._action_thread: threading.Thread | None = None
        self._probe_failures: dict[str, int] = {}
        self._actions: dict[tuple[str, str], int] = {}
        self._checks = 0
        self._last_verdict: Verdict | None = None

    # ------------------------------------------------------------ probing

    def _clock_jumped(self, now: float) -> bool:
        offset = self.rt.wall_clock() - now
        if self._wall_offset is not None and abs(offset - self._wall_offset) > CLOCK_JUMP_S:
            self._jumped_at = now
            self.journal.send(
                f"the wall clock jumped by {offset - self._wall_offset:+.0f}s; "
                "model expiry is not judged for a while",
                5,
                {"event": "clock_jump", "unit": self.opts.unit},
            )
        self._wall_offset = offset
        return self._jumped_at is not None and now - self._jumped_at < CLOCK_JUMP_HOLD_S

    def _read_slow(self, now: float, urgent: bool) -> None:
        due = self._slow_at is None or now - self._slow_at >= self.opts.slow_every_s
        if not (due or urgent):
            return
        self._slow_at = now
        window = self.opts.window_s
        unit = read_unit(self.rt, self.opts.unit)
        if unit.available:
            unit = replace(
                unit,
                restarts_recent=unit.n_restarts
                - self._restarts.before(now, window, unit.n_restarts),
            )
        self._unit = unit
        memory = read_memory(self.rt, unit.control_group)
        if memory.available:
            memory = replace(
                memory,
                oom_kills_recent=memory.oom_kills
                - self._ooms.before(now, window, memory.oom_kills),
            )
        self._memory = memory
        if self._gpu_at is None or now - self._gpu_at >= self.opts.gpu_every_s:
            self._gpu_at = now
            self._gpu = self.gpu.read()

    def _fail(self, probe: str) -> None:
        self._probe_failures[probe] = self._probe_failures.get(probe, 0) + 1

    def snapshot(self) -> Snapshot:
        """Probe once (no sleeping) and put the evidence together."""
        now = self.rt.clock()
        jumped = self._clock_jumped(now)
        live = api.liveness(self.http, self.opts.live_deadline_s)
        if live.ok:
            self.evidence.expect(now)
            self._live_fail_since = None
            models, self._ps_detail = api.loaded(
                self.http, self.rt.wall_clock(), self.opts.live_deadline_s
            )
            self._models = models
            if models is None:
                self._fail("ps")
        else:
            self._fail("liveness")
            started = now  # the probe began at `now`
            self._live_fail_since = (
                self._live_fail_since if self._live_fail_since is not None else started
            )
        troubled = not live.ok or (
            self._last_verdict is not None and self._last_verdict.state is not State.OK
        )
        self._read_slow(now, urgent=troubled)
        deep: DeepProbe | None = self.deep.latest() if self.deep is not None else None
        if self.deep is not None and self.deep.failures_total:
            self._probe_failures["generate"] = self.deep.failures_total
        after = self.rt.clock()
        return Snapshot(
            api=ApiState(
                live=live,
                live_failing_for_s=0.0
                if self._live_fail_since is None
                else after - self._live_fail_since,
                models=self._models if live.ok else None,
                ps_detail=self._ps_detail,
            ),
            deep=deep,
            unit=self._unit,
            memory=self._memory,
            gpu=self._gpu,
            progress=self.evidence.progress(after, self.opts.window_s),
            clock_jumped=jumped,
        )

    # ------------------------------------------------------------ deciding and acting

    def _record(self, snap: Snapshot, v: Verdict, d: Decision) -> None:
        key = (d.kind, d.problem, v.state)
        if d.kind not in (Kind.ACT, Kind.GIVE_UP, Kind.RESET) and key == self._last_logged:
            return
        self._last_logged = key
        fields = {
            "event": d.kind.value,
            "verdict": v.state.value,
            "status": v.status.name,
            "summary": v.summary,  # the verdict's own words: why this state
            "unit": self.opts.unit,
            "evidence": json.dumps(evidence_record(snap), sort_keys=True),
        }
        if d.problem is not None:
            fields["problem"] = d.problem.value
        if d.action is not None:
            fields["action"] = d.action.value
        what = f"{d.action.value}: " if d.action is not None else ""
        self.journal.send(f"{d.kind.value}: {what}{d.reason}", _PRIORITY[d.kind], fields)

    def _act(self, d: Decision, snap: Snapshot) -> None:
        assert d.action is not None
        if self.opts.observe_only:
            self.journal.send(
                f"observe only: would {d.action.value}",
                5,
                {"event": "observed", "action": d.action.value},
            )
            return
        key = (d.action.value, d.problem.value if d.problem else "")
        self._actions[key] = self._actions.get(key, 0) + 1
        models = tuple(m.name for m in snap.api.models or ())
        if not models and self.deep is not None:
            latest = self.deep.latest()
            models = (latest.model,) if latest.model else ()

        if d.action is Action.UNLOAD_MODEL and self.deep is not None and models:
            # Did unloading help? Ask that model again (loading it) until it answers.
            deadline = max(self.opts.deep_deadline_s, self.opts.unload_check_deadline_s)
            self.deep.pin(models[0], UNLOAD_CHECK_S, deadline)

        def work() -> None:
            result = self.actor.execute(d.action, models) if d.action else None
            if result is not None:
                self._done(result, d)

        self._action_thread = threading.Thread(target=work, name="action", daemon=True)
        self._action_thread.start()

    def _done(self, result: ActionResult, d: Decision) -> None:
        self.journal.send(
            f"{result.action.value} {'done' if result.ok else 'FAILED'}: "
            + "; ".join(result.steps),
            5 if result.ok else 3,
            {
                "event": "action_done" if result.ok else "action_failed",
                "action": result.action.value,
                "problem": d.problem.value if d.problem else "",
                "unit": self.opts.unit,
                "steps": "\n".join(result.steps),
            },
        )

    @property
    def acting(self) -> bool:
        return self._action_thread is not None and self._action_thread.is_alive()

    def check(self) -> tuple[Snapshot, Verdict, Decision]:
        """One whole check: probe, judge, decide, maybe act, publish."""
        snap = self.snapshot()
        v = verdict.assess(snap, self.opts.thresholds)
        now = self.rt.clock()
        unit = snap.unit
        started = (
            now - unit.active_for_s
            if unit.available and unit.active_state == "active" and unit.active_for_s is not None
            else None
        )
        if self.acting:
            d = Decision(Kind.WAIT, f"an action is still running: {v.summary}", problem=v.problem)
        else:
            self.policy, d = step(self.policy, v, now, self.opts.policy, unit_started_at=started)
            if d.kind is Kind.ACT and not unit.available:
                d = Decision(
                    Kind.HOLD,
                    f"cannot act without systemd ({unit.detail}): {v.summary}",
                    problem=v.problem,
                )
        self._record(snap, v, d)
        if d.kind is Kind.ACT:
            self._act(d, snap)
        self._checks += 1
        self._last_verdict = v
        self.board.status = Status(
            snapshot=snap,
            verdict=v,
            policy=self.policy,
            checks=self._checks,
            probe_failures=dict(self._probe_failures),
            actions=dict(self._actions),
            log_totals=dict(self.log_totals()),
        )
        self.notify(f"STATUS={v.state.value}: {v.summary[:200]}")
        return snap, v, d

    # ------------------------------------------------------------ the loop

    def run(self, stop: threading.Event, max_checks: int | None = None) -> int:
        """Check every interval until ``stop`` is set (or ``max_checks``); 0 on a clean stop."""
        if self.deep is not None:
            self.deep.start()
        self.journal.send(
            f"watching {self.opts.unit} at {self.opts.url}",
            6,
            {"event": "start", "unit": self.opts.unit},
        )
        ready = False
        try:
            while not stop.is_set():
                began = self.rt.clock()
                self.check()
                if not ready:
                    self.notify("READY=1")
                    ready = True
                self.notify("WATCHDOG=1")
                if max_checks is not None and self._checks >= max_checks:
                    break
                stop.wait(max(0.0, self.opts.interval_s - (self.rt.clock() - began)))
        finally:
            self.notify("STOPPING=1")
            if self.deep is not None:
                self.deep.stop()
            if self._action_thread is not None:
                self._action_thread.join(30)
            self.gpu.close()
        return 0

    def run_once(self, checks: int) -> Verdict:
        """The timer layout: ``checks`` checks an interval apart, the generation probe inline."""
        verdict_: Verdict | None = None
        for index in range(max(1, checks)):
            if self.deep is not None:
                self.deep.probe_once()
            verdict_ = self.check()[1]
            if self.acting and self._action_thread is not None:
                self._action_thread.join(300)
            if index + 1 < checks:
                self.rt.sleep(self.opts.interval_s)
        self.gpu.close()
        assert verdict_ is not None
        return verdict_
