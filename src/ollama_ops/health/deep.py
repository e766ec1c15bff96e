"""The generation probe of the supervisor: a thread that asks loaded models for one token.

It runs beside the 1-second liveness loop so a slow generation never delays
the liveness checks. Only a model already in `/api/ps` is asked: asking for
another would start a load, and a client that gives up aborts a load in
Ollama. After a failure it asks again at once, so two consecutive failures
take two deadlines, not two intervals. Like any request, a probe restarts the
model's idle timer: a model the supervisor watches stays loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ollama_ops.health import api
from ollama_ops.health.http import Http
from ollama_ops.health.model import DeepOutcome, DeepProbe, LoadedModel


def pick_model(models: tuple[LoadedModel, ...] | None, deadline: float) -> LoadedModel | None:
    """The smallest loaded model that is not about to expire (None: ask nothing)."""
    candidates = [
        m
        for m in models or ()
        if m.expires_in_s is None or m.expires_in_s < 0 or m.expires_in_s > deadline + 2
    ]
    return min(candidates, key=lambda m: (m.size, m.name)) if candidates else None


@dataclass(frozen=True)
class _Last:
    outcome: DeepOutcome
    model: str | None
    latency_s: float | None
    detail: str
    failures: int
    first_failure_at: float | None


class DeepProber:
    def __init__(
        self,
        http: Http,
        models: Callable[[], tuple[LoadedModel, ...] | None],
        *,
        clock: Callable[[], float],
        interval: float = 5.0,
        deadline: float = 5.0,
        retry_after: float = 0.2,
    ) -> None:
        self.http = http
        self.models = models
        self.clock = clock
        self.interval = interval
        self.deadline = deadline
        self.retry_after = retry_after
        self._last = _Last(DeepOutcome.SKIPPED, None, None, "no probe yet", 0, None)
        self.failures_total = 0
        self._pinned: tuple[str, float, float] | None = None  # (model, until, deadline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deep-probe", daemon=True)

    def start(self) -> DeepProber:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.deadline * 2 + 5)

    def latest(self) -> DeepProbe:
        last = self._last
        failing_for = 0.0 if last.first_failure_at is None else self.clock() - last.first_failure_at
        return DeepProbe(
            outcome=last.outcome,
            model=last.model,
            latency_s=last.latency_s,
            detail=last.detail,
            failures=last.failures,
            failing_for_s=failing_for,
        )

    def pin(self, model: str, seconds: float, deadline: float) -> None:
        """Keep asking ``model`` for ``seconds`` even when it is not loaded (after unloading it:
        did that help?), with a deadline long enough for the load that the question causes."""
        self._pinned = (model, self.clock() + seconds, deadline)

    def probe_once(self) -> DeepOutcome:
        target = pick_model(self.models(), self.deadline)
        name, deadline = (
            (target.name, self.deadline) if target is not None else (None, self.deadline)
        )
        pinned = self._pinned
        unloaded = pinned is not None and (target is None or target.name != pinned[0])
        if pinned is not None and unloaded and self.clock() < pinned[1]:
            name, deadline = pinned[0], pinned[2]
        if name is None:
            self._last = _Last(DeepOutcome.SKIPPED, None, None, "no model loaded", 0, None)
            return DeepOutcome.SKIPPED
        started = self.clock()
        outcome, latency, detail = api.generate_one(self.http, name, deadline)
        prev = self._last
        if outcome is DeepOutcome.OK:
            self._last = _Last(outcome, name, latency, "", 0, None)
            self._pinned = None
        else:
            self.failures_total += 1
            first = prev.first_failure_at if prev.failures else started
            self._last = _Last(outcome, name, latency, detail, prev.failures + 1, first)
        return outcome

    def _run(self) -> None:
        while not self._stop.is_set():
            outcome = self.probe_once()
            if outcome is DeepOutcome.TIMEOUT:  # it already waited a whole deadline
                pause = self.retry_after
            elif outcome in (DeepOutcome.BUSY, DeepOutcome.ERROR):  # quick answers: do not hammer
                pause = min(self.interval, 1.0)
            else:
                pause = self.interval
            self._stop.wait(pause)
