"""Run a load shape against a server: ``run(shape, target) -> Result``.

The side-effecting edge of the benchmark (network, clock, signals). It checks
the server and the model first, sends the warm-up requests, then runs each
stage: a closed loop of ``concurrency`` streams, or an open loop of arrivals
at ``rate`` (with an optional cap on requests in flight). While it runs it
watches itself: the event loop's lag (a 10 ms timer's lateness) and each
request's send-time slip (sent minus when it could have been sent), and the
process's CPU time. Ctrl-C (SIGINT) ends the run at once with the results so
far, marked partial.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import random
import signal
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import shapes, wire
from .client import Client, clock, fetch, parse_url
from .errors import TargetError
from .records import Outcome, RequestRecord
from .shapes import Shape, Stage
from .wire import Api
from .workload import Workload, builtin

LAG_INTERVAL_S = 0.01
PREFLIGHT_TIMEOUT_S = 10.0
#: A closed-loop stream whose request failed waits this long before its next one
#: (an HTTP error such as 503), or the second figure when no answer came at all.
FAILURE_PAUSE_S = 0.05
UNREACHABLE_PAUSE_S = 0.2


@dataclass(frozen=True)
class Target:
    url: str
    model: str
    api: Api = Api.GENERATE
    timeout_s: float = 300.0  # per request


@dataclass(frozen=True, eq=False)
class StageResult:
    index: int
    stage: Stage
    records: tuple[RequestRecord, ...]
    started: float
    ended: float
    cpu_s: float  # this process's user+system CPU during the stage
    loop_lag: tuple[float, ...]  # lateness of each 10 ms tick, seconds

    @property
    def wall_s(self) -> float:
        return max(self.ended - self.started, 1e-9)


@dataclass(frozen=True, eq=False)
class Result:
    target: Target
    shape: Shape
    workload: Workload
    started_at: str  # ISO 8601, UTC
    t0: float  # perf_counter at the start: records' times are relative to it in outputs
    warmup: tuple[RequestRecord, ...]
    stages: tuple[StageResult, ...]
    partial: bool = False
    note: str = ""
    model_loaded_before: bool | None = None
    server_version: str = ""

    @property
    def records(self) -> tuple[RequestRecord, ...]:
        return tuple(r for s in self.stages for r in s.records)


@dataclass(frozen=True)
class Snapshot:
    """What the live progress display shows."""

    stage: str
    stage_no: int
    stages: int
    elapsed_s: float
    planned_s: float | None
    planned_requests: int | None
    done: int
    in_flight: int
    failed: int
    busy: int
    chunks: int
    chunks_per_s: float


Progress = Callable[[Snapshot], None]


def run(
    shape: Shape,
    target: Target,
    workload: Workload | None = None,
    progress: Progress | None = None,
) -> Result:
    """Run ``shape`` against ``target`` in a new event loop; the library entry point."""
    return asyncio.run(run_async(shape, target, workload, progress))


async def run_async(
    shape: Shape,
    target: Target,
    workload: Workload | None = None,
    progress: Progress | None = None,
) -> Result:
    bench = _Bench(shape, target, workload or builtin(), progress)
    return await bench.main()


class _Bench:
    def __init__(
        self, shape: Shape, target: Target, workload: Workload, progress: Progress | None
    ) -> None:
        self.shape = shape
        self.target = target
        self.workload = workload
        self.progress = progress
        self.client = Client(parse_url(target.url), target.timeout_s)
        self.rng = random.Random(shape.seed)
        self.next_index = 0
        self.interrupted = False
        self.sleepers: set[asyncio.Future[None]] = set()
        self.lag = array("d")
        self.inflight: set[wire.StreamExchange] = set()
        # counters of the running stage, for the progress display
        self.label = ""
        self.stage_no = 0
        self.stage_start = 0.0
        self.deadline = float("inf")
        self.limit: int | None = None
        self.issued = 0
        self.records: list[RequestRecord] = []
        self.chunks_done = 0
        self.failed = 0
        self.busy = 0

    # -- the run

    async def main(self) -> Result:
        t0 = clock()
        started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        loop = asyncio.get_running_loop()
        restore = self._catch_sigint(loop)
        tasks = [loop.create_task(self._watch_lag())]
        if self.progress is not None:
            tasks.append(loop.create_task(self._report_progress()))
        stages: list[StageResult] = []
        warm: tuple[RequestRecord, ...] = ()
        loaded: bool | None = None
        version = ""
        try:
            version, loaded = await self._preflight()
            if self.stopped():
                raise KeyboardInterrupt  # before the first request: nothing measured
            warm = await self._warmup()
            for i, stage in enumerate(self.shape.stages):
                if self.stopped():
                    break
                stages.append(await self._stage(i, stage))
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            restore()
            self.client.close()
        note = ""
        if self.stopped():
            note = f"interrupted after {clock() - t0:.1f} s; results so far"
        return Result(
            target=self.target,
            shape=self.shape,
            workload=self.workload,
            started_at=started_at,
            t0=t0,
            warmup=warm,
            stages=tuple(stages),
            partial=self.interrupted,
            note=note,
            model_loaded_before=loaded,
            server_version=version,
        )

    def _catch_sigint(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)
        try:
            loop.add_signal_handler(signal.SIGINT, self.interrupt)
        except (NotImplementedError, RuntimeError, ValueError):
            return lambda: None

        def restore() -> None:
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous)

        return restore

    def stopped(self) -> bool:
        return self.interrupted

    def interrupt(self) -> None:
        """Stop now: no new requests, open ones cut, sleepers woken."""
        self.interrupted = True
        self.client.abort_all("interrupted")
        for fut in list(self.sleepers):
            if not fut.done():
                fut.set_result(None)

    # -- before the stages

    async def _preflight(self) -> tuple[str, bool | None]:
        """The server answers and has the model; returns (version, model loaded?)."""
        url = self.client.url.base
        ex = await fetch(self.client, "GET", "/api/version", timeout=PREFLIGHT_TIMEOUT_S)
        if self.interrupted:
            return "", None
        if ex.error is not None:
            why = _short(ex.error).removeprefix(f"cannot connect to {url}: ")
            raise TargetError(f"cannot reach {url} ({why}); start Ollama or fix --url")
        version = ""
        if ex.status == 200:
            version = str(_json(ex.body).get("version", ""))
        names = await self._model_names()
        model = self.target.model
        if model not in names and f"{model}:latest" not in names:
            have = ", ".join(sorted(names)) or "none"
            raise TargetError(
                f"model {model!r} is not on {url} (it has: {have}); "
                f"pick one with --model or run `ollama pull {model}`"
            )
        ps = await fetch(self.client, "GET", "/api/ps", timeout=PREFLIGHT_TIMEOUT_S)
        loaded: bool | None = None
        if ps.status == 200:
            running = _json(ps.body).get("models") or []
            loaded = any(
                isinstance(m, dict) and m.get("name") in (model, f"{model}:latest") for m in running
            )
        return version, loaded

    async def _model_names(self) -> set[str]:
        url = self.client.url.base
        ex = await fetch(self.client, "GET", "/api/tags", timeout=PREFLIGHT_TIMEOUT_S)
        if ex.status == 200:
            return {
                str(m.get("name"))
                for m in _json(ex.body).get("models") or []
                if isinstance(m, dict)
            }
        if self.target.api is Api.OPENAI:
            ex = await fetch(self.client, "GET", "/v1/models", timeout=PREFLIGHT_TIMEOUT_S)
            if ex.status == 200:
                return {
                    str(m.get("id"))
                    for m in _json(ex.body).get("data") or []
                    if isinstance(m, dict)
                }
        why = ex.error or wire.error_text(ex.status, bytes(ex.body))
        raise TargetError(f"{url} does not list its models ({_short(why)}); is it Ollama?")

    async def _warmup(self) -> tuple[RequestRecord, ...]:
        n = self.shape.warmup
        if n <= 0 or not self.shape.stages:
            return ()
        first = self.shape.stages[0]
        width = max(1, min(n, first.concurrency or first.max_concurrency or n))
        self._begin("warm-up", -1, requests=n, duration=None)
        await self._closed_loop(-1, width, ramp=0.0)
        return tuple(self.records)

    # -- stages

    def _begin(self, label: str, index: int, requests: int | None, duration: float | None) -> None:
        self.label = label
        self.stage_no = index
        self.stage_start = clock()
        self.deadline = self.stage_start + duration if duration is not None else float("inf")
        self.limit = requests
        self.issued = 0
        self.records = []
        self.chunks_done = 0
        self.failed = 0
        self.busy = 0

    async def _stage(self, index: int, stage: Stage) -> StageResult:
        stop = self.shape.stop
        self._begin(stage.label, index, stop.requests, stop.duration_s)
        lag_from = len(self.lag)
        cpu0 = time.process_time()
        started = self.stage_start
        if stage.rate is not None:
            await self._open_loop(index, stage)
        else:
            n = stage.concurrency or 1
            await self._closed_loop(index, n, ramp=self.shape.ramp_for(n))
        ended = max([started, *(r.end for r in self.records)])
        return StageResult(
            index=index,
            stage=stage,
            records=tuple(sorted(self.records, key=lambda r: r.index)),
            started=started,
            ended=ended,
            cpu_s=time.process_time() - cpu0,
            loop_lag=tuple(self.lag[lag_from:]),
        )

    def _take(self) -> int | None:
        """The next request's index, or None when the stage is over."""
        if self.interrupted or clock() >= self.deadline:
            return None
        if self.limit is not None and self.issued >= self.limit:
            return None
        self.issued += 1
        i = self.next_index
        self.next_index += 1
        return i

    async def _closed_loop(self, stage: int, n: int, ramp: float) -> None:
        start = clock()

        async def stream(k: int) -> None:
            ready = start + ramp * k / n
            await self._sleep_until(ready)
            while (i := self._take()) is not None:
                rec = await self._one(stage, i, ready)
                ready = rec.end
                if rec.outcome in (Outcome.ERROR, Outcome.BUSY):
                    # not a tight loop against a server that refuses everything
                    ready += FAILURE_PAUSE_S if rec.status else UNREACHABLE_PAUSE_S
                    await self._sleep_until(ready)

        await asyncio.gather(*(stream(k) for k in range(n)))

    async def _open_loop(self, index: int, stage: Stage) -> None:
        cap = stage.max_concurrency
        sem = asyncio.Semaphore(cap) if cap else None
        tasks: set[asyncio.Task[RequestRecord]] = set()
        start = clock()
        seed = self.shape.seed * 1000 + index
        for offset in shapes.arrivals(stage, seed):
            due = start + offset
            if due >= self.deadline:
                break
            await self._sleep_until(due)
            ready = due
            if sem is not None:
                if sem.locked():
                    await sem.acquire()
                    ready = clock()
                else:
                    await sem.acquire()
            i = self._take()
            if i is None:
                if sem is not None:
                    sem.release()
                break
            task = asyncio.get_running_loop().create_task(self._one(index, i, ready))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if sem is not None:
                task.add_done_callback(lambda _t: sem.release())
        if tasks:
            await asyncio.gather(*tasks)

    async def _sleep_until(self, when: float) -> None:
        delay = when - clock()
        if delay <= 0 or self.interrupted:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.sleepers.add(fut)
        handle = loop.call_later(delay, _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self.sleepers.discard(fut)

    async def _one(self, stage: int, index: int, ready: float) -> RequestRecord:
        target = self.target
        prompt, max_tokens = self.workload.pick(index, self.rng)
        body = wire.body(target.api, target.model, prompt, max_tokens)
        request = self.client.request_bytes("POST", target.api.path, body)
        ex = wire.exchange_for(target.api)
        self.inflight.add(ex)
        try:
            await self.client.exchange(request, ex)
        finally:
            self.inflight.discard(ex)
        failure = ex.failure()
        if failure is None:
            outcome = Outcome.OK
        elif ex.status == 503:
            outcome = Outcome.BUSY
        elif self.interrupted and ex.error == "interrupted":
            outcome = Outcome.CUT
        else:
            outcome = Outcome.ERROR
        rec = RequestRecord(
            stage=stage,
            index=index,
            ready=ready,
            sent=ex.sent,
            end=ex.end,
            outcome=outcome,
            status=ex.status,
            error=failure or "",
            max_tokens=max_tokens,
            times=ex.times,
            prompt_tokens=ex.prompt_tokens,
            output_tokens=ex.eval_count,
            done_reason=ex.done_reason,
            load_s=ex.load_s,
            prompt_eval_s=ex.prompt_eval_s,
            eval_s=ex.eval_s,
            total_s=ex.total_s,
        )
        self.records.append(rec)
        self.chunks_done += len(ex.times)
        self.failed += outcome is Outcome.ERROR
        self.busy += outcome is Outcome.BUSY
        return rec

    # -- watching the client

    async def _watch_lag(self) -> None:
        lag = self.lag
        while True:
            t = clock()
            await asyncio.sleep(LAG_INTERVAL_S)
            lag.append(max(0.0, clock() - t - LAG_INTERVAL_S))

    async def _report_progress(self) -> None:
        assert self.progress is not None
        last_t, last_chunks = clock(), 0
        while True:
            await asyncio.sleep(0.5)
            now = clock()
            chunks = self.chunks_done + sum(len(ex.times) for ex in self.inflight)
            rate = max(0, chunks - last_chunks) / max(now - last_t, 1e-9)
            last_t, last_chunks = now, chunks
            duration = self.shape.stop.duration_s if self.stage_no >= 0 else None
            self.progress(
                Snapshot(
                    stage=self.label,
                    stage_no=self.stage_no + 1,
                    stages=len(self.shape.stages),
                    elapsed_s=now - self.stage_start,
                    planned_s=duration,
                    planned_requests=self.limit,
                    done=len(self.records),
                    in_flight=len(self.inflight),
                    failed=self.failed,
                    busy=self.busy,
                    chunks=chunks,
                    chunks_per_s=rate,
                )
            )


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _json(raw: bytes | bytearray) -> dict[str, Any]:
    try:
        obj = json.loads(bytes(raw))
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _short(text: str) -> str:
    return " ".join(text.split())[:160]
