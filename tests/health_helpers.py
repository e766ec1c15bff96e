"""Builders of health snapshots, and fakes for the supervisor's edges."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ollama_ops.health.logscan import Event, Tracker, classify
from ollama_ops.health.model import (
    ApiState,
    DeepOutcome,
    DeepProbe,
    Failure,
    GpuReading,
    GpuState,
    HttpResult,
    LoadedModel,
    MemoryState,
    Progress,
    Snapshot,
    UnitState,
)
from ollama_ops.host import proc

LIVE_OK = HttpResult(ok=True, status=200, body="Ollama is running", latency_s=0.002)
UNIT_OK = UnitState(
    available=True,
    active_state="active",
    sub_state="running",
    result="success",
    main_pid=42,
    active_for_s=3600.0,
    control_group="/system.slice/ollama.service",
)
QUIET = Progress(readable=True, window_s=60.0)


def model(
    name: str = "m:1b", *, size: int = 1000, vram: int = 1000, expires: float | None = 300.0
) -> LoadedModel:
    return LoadedModel(name=name, size=size, size_vram=vram, expires_in_s=expires)


def snap(
    *,
    live: HttpResult = LIVE_OK,
    live_failing_for: float = 0.0,
    models: Sequence[LoadedModel] | None = (),
    deep: DeepProbe | None = None,
    unit: UnitState = UNIT_OK,
    progress: Progress = QUIET,
    gpus: Sequence[GpuReading] = (),
    gpu_source: str = "none",
    memory: MemoryState | None = None,
    clock_jumped: bool = False,
) -> Snapshot:
    return Snapshot(
        api=ApiState(
            live=live,
            live_failing_for_s=live_failing_for,
            models=None if models is None else tuple(models),
        ),
        deep=deep,
        unit=unit,
        memory=memory or MemoryState(available=True, current=1 << 30, oom_kills=0),
        gpu=GpuState(source=gpu_source if not gpus else "nvml", gpus=tuple(gpus)),
        progress=progress,
        clock_jumped=clock_jumped,
    )


def timeout(after: float = 2.0) -> HttpResult:
    return HttpResult(
        ok=False, status=None, body="", latency_s=after, failure=Failure.TIMEOUT, detail="no answer"
    )


def refused() -> HttpResult:
    return HttpResult(
        ok=False, status=None, body="", latency_s=0.001, failure=Failure.REFUSED, detail="refused"
    )


def deep_failing(
    failures: int = 2,
    *,
    outcome: DeepOutcome = DeepOutcome.TIMEOUT,
    span: float = 10.0,
    detail: str = "no answer within 5s",
) -> DeepProbe:
    return DeepProbe(outcome, "m:1b", 5.0, detail, failures=failures, failing_for_s=span)


def progress(**kw: Any) -> Progress:
    return replace(QUIET, **kw)


class LogEvidence:
    """Evidence from log lines fed by the test (or read from a SimThread's buffers)."""

    def __init__(
        self, clock: Any = time.monotonic, ignore: frozenset[str] = frozenset({"127.0.0.2"})
    ) -> None:
        self.clock = clock
        self.ignore = ignore
        self.tracker = Tracker()
        self.sources: list[Any] = []  # StringIO buffers to read new lines from
        self._offsets: dict[int, int] = {}

    def line(self, text: str, at: float | None = None) -> None:
        kind = classify(text, self.ignore)
        if kind is not None:
            self.tracker.add(Event(self.clock() if at is None else at, kind[0], kind[1]))

    def expect(self, at: float) -> None:
        del at

    def progress(self, now: float, window: float) -> Progress:
        for buf in self.sources:
            text = buf.getvalue()
            start = self._offsets.get(id(buf), 0)
            for line in text[start:].splitlines():
                self.line(line)
            self._offsets[id(buf)] = len(text)
        return self.tracker.progress(now, window)


class RecordingRunner:
    """A Runtime.run that records argv and answers from a table (default: exit 0)."""

    def __init__(self, answers: dict[str, proc.Completed] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.answers = answers or {}

    def __call__(self, argv: Sequence[str], **kw: Any) -> proc.Completed:
        self.calls.append(tuple(argv))
        for prefix, answer in self.answers.items():
            if " ".join(argv).startswith(prefix):
                return answer
        return proc.Completed(tuple(argv), 0, "", "")
