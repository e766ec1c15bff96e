"""The scheduler, the loaded models ("runners") and timed token emission.

Scheduling follows Ollama's server/sched.go:

* Requests that need a runner enter a pending queue of OLLAMA_MAX_QUEUE
  places, drained one at a time by a single scheduler task; a request that
  finds the queue full gets ``ErrMaxQueue`` (HTTP 503).
* A loaded runner is handed out at once; a runner that is still loading
  blocks the scheduler until the load ends (so requests pile up in the
  queue while a model loads or while another is being evicted).
* OLLAMA_MAX_LOADED_MODELS (0 = 3 per GPU, 3 on CPU) and the simulated VRAM
  bound what is resident; to make room the scheduler expires an idle runner
  (shortest keep-alive first, least recently used among equals), or waits
  for a busy one to go idle. A change of ``num_ctx`` forces a reload.
* A runner with no requests left expires after its keep-alive (the last
  request's ``keep_alive``, else OLLAMA_KEEP_ALIVE); 0 unloads at once,
  a negative value keeps it forever.
* Each runner has OLLAMA_NUM_PARALLEL slots. Requests beyond them wait
  for a slot in FIFO order *outside* the pending queue, as Ollama's runner
  semaphore does (ollama/ollama#7758): with a loaded model OLLAMA_MAX_QUEUE
  does not bound them. ``queue_mode="strict"`` counts them against
  OLLAMA_MAX_QUEUE instead, for tuning against the limit one would expect.

Token emission: each runner keeps one heap of the sequences it is decoding,
keyed by the time their next token is due, and one ``loop.call_at`` timer for
the earliest. When it fires, every due token is written (a pre-encoded chunk
per token) and the sequence is pushed back one interval later. The interval
is ``1 / per_stream_tps(n)`` for ``n`` sequences decoding at once, so
throughput shares out as the profile says. Every token's emission time minus
its scheduled time is recorded in a histogram (``Stats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import random
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .faults import (
    CUDA_OOM_LINES,
    CUDA_UNKNOWN_LINES,
    GPU_LOST_LOAD_ERROR,
    GPU_LOST_STREAM_ERROR,
    RUNNER_OOM_ERROR,
    FaultState,
)
from .logs import human_bytes2
from .profile import GiB, ModelProfile, Profile

if TYPE_CHECKING:
    from .envconfig import ServerEnv
    from .logs import Logger

MAX_QUEUE_ERROR = "server busy, please try again.  maximum pending requests exceeded"

_monotonic = time.monotonic


class QueueFull(Exception):
    """ErrMaxQueue: answered with HTTP 503."""

    def __init__(self) -> None:
        super().__init__(MAX_QUEUE_ERROR)


class RunnerError(Exception):
    """A load failed or a runner died: answered with HTTP 500 (or an error line)."""


# --------------------------------------------------------------------------- stats

BUCKET_S = 10e-6  # 10 microseconds
N_BUCKETS = 10_000  # up to 100 ms, then one overflow bucket
OVERFLOW_KEPT = 200_000  # errors past 100 ms kept exactly (1.6 MB at most)
FIRST_TOKENS_KEPT = 20_000  # the latest streamed first tokens, for /_sim/first-tokens


class ErrorHistogram:
    """Emission errors (actual - scheduled time): 10 us buckets to 100 ms, exact past that."""

    def __init__(self) -> None:
        self.hist: list[int] = [0] * (N_BUCKETS + 1)
        # Past the histogram's range the errors themselves are kept, so a p99 of an
        # overloaded run is the real figure, not the overflow bucket's edge.
        self.overflow: list[float] = []
        self.max_error = 0.0

    def record(self, err: float) -> None:
        b = int(err / BUCKET_S)
        if b >= N_BUCKETS:
            b = N_BUCKETS
            if len(self.overflow) < OVERFLOW_KEPT:
                self.overflow.append(err)
        self.hist[b] += 1
        self.max_error = max(self.max_error, err)

    def percentile(self, q: float) -> float:
        """Upper edge of the bucket holding the q-quantile, in seconds."""
        total = sum(self.hist)
        if total == 0:
            return 0.0
        rank = q * total
        acc = 0
        for i, n in enumerate(self.hist):
            if acc + n >= rank and n:
                if i == N_BUCKETS:
                    kept = sorted(self.overflow)
                    at = max(0, min(len(kept) - 1, int(rank - acc) - 1))
                    return kept[at] if kept else self.max_error
                return min((i + 1) * BUCKET_S, self.max_error)
            acc += n
        return self.max_error

    def summary_us(self) -> dict[str, float]:
        quantiles = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p999": 0.999}
        out = {name: round(self.percentile(q) * 1e6, 1) for name, q in quantiles.items()}
        out["max"] = round(self.max_error * 1e6, 1)
        return out


class Stats:
    """Counters and the emission-error histograms: every token, and first tokens apart.

    A streamed sequence's first token takes a longer path (the handler sends the response
    head with it), so its error is kept apart too: a client's TTFT can be no closer to the
    schedule than the server's first tokens are.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tokens = 0
        self.requests = 0
        self.timing = ErrorHistogram()
        self.first_token = ErrorHistogram()
        # (prompt head, request received, first token due, first token written), monotonic
        # seconds: a client on this host (one CLOCK_MONOTONIC) can split its TTFT error
        # into the simulator's lateness and its own.
        self.first_tokens: deque[tuple[str, float, float, float]] = deque(maxlen=FIRST_TOKENS_KEPT)
        self.started = _monotonic()

    def record_first(self, label: str, t_request: float, due: float, written: float) -> None:
        """A streamed sequence's first token: counted with every token, and apart."""
        err = max(0.0, written - due)
        self.timing.record(err)
        self.first_token.record(err)
        self.first_tokens.append((label, t_request, due, written))

    def first_token_log(self) -> list[dict[str, Any]]:
        return [
            {"prompt": label, "received": t, "due": due, "written": written}
            for label, t, due, written in self.first_tokens
        ]

    def snapshot(self) -> dict[str, Any]:
        elapsed = _monotonic() - self.started
        return {
            "tokens": self.tokens,
            "requests": self.requests,
            "elapsed_s": round(elapsed, 3),
            "tokens_per_s": round(self.tokens / elapsed, 1) if elapsed > 0 else 0.0,
            "timing_error_us": self.timing.summary_us(),
            "first_token_error_us": self.first_token.summary_us(),
        }


# --------------------------------------------------------------------------- sinks


class Sink:
    """Where a sequence's bytes go. The base class drops them (non-streamed)."""

    broken = False

    def write(self, data: bytes) -> bool:
        del data
        return True

    async def flush(self) -> None:
        return None


class StreamSink(Sink):
    """Writes to an aiohttp StreamResponse from plain (non-async) callbacks.

    ``StreamResponse.write`` is a coroutine that only suspends when the
    transport applies back-pressure. It is driven by hand: in the common
    case it completes within ``send(None)``; if it suspends on a future,
    further chunks are buffered and the coroutine is resumed when the
    future completes. A closed connection marks the sink broken.
    """

    def __init__(self, resp: Any) -> None:
        self.resp = resp
        self.backlog: list[bytes] = []
        self._coro: Any = None
        self._idle: asyncio.Future[None] | None = None
        self.broken = False

    def write(self, data: bytes) -> bool:
        if self.broken:
            return False
        if self._coro is not None:
            self.backlog.append(data)
            return True
        self._drive(self.resp.write(data))
        return not self.broken

    def _drive(self, coro: Any) -> None:
        try:
            fut = coro.send(None)
        except StopIteration:
            self._coro = None
            self._wake_idle()
            return
        except BaseException:  # connection reset, cancelled drain
            self._coro = None
            self._break()
            return
        self._coro = coro
        fut.add_done_callback(self._resume)

    def _resume(self, _fut: Any) -> None:
        coro = self._coro
        self._coro = None
        try:
            fut = coro.send(None)
        except StopIteration:
            if self.backlog:
                data = b"".join(self.backlog)
                self.backlog = []
                self._drive(self.resp.write(data))
            else:
                self._wake_idle()
            return
        except BaseException:
            self._break()
            return
        self._coro = coro
        fut.add_done_callback(self._resume)

    def _break(self) -> None:
        self.broken = True
        self.backlog = []
        self._wake_idle()

    def _wake_idle(self) -> None:
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
        self._idle = None

    async def flush(self) -> None:
        while self._coro is not None and not self.broken:
            if self._idle is None:
                self._idle = asyncio.get_running_loop().create_future()
            await self._idle


# --------------------------------------------------------------------------- sequences


class Renderer:
    """Turns a sequence's progress into bytes (see render.py)."""

    def token(self, i: int) -> bytes | None:
        raise NotImplementedError

    def final(self, seq: Sequence) -> bytes | None:
        raise NotImplementedError

    def error_chunk(self, message: str) -> bytes | None:
        raise NotImplementedError


class Sequence:
    """One generation: ``n_tokens`` tokens, then a final chunk."""

    __slots__ = (
        "done",
        "done_reason",
        "emitted",
        "eval_end",
        "eval_start",
        "finished",
        "first",
        "label",
        "load_s",
        "n_tokens",
        "prompt_s",
        "prompt_tokens",
        "renderer",
        "runner",
        "sink",
        "started",
        "t_request",
    )

    def __init__(
        self,
        *,
        renderer: Renderer,
        sink: Sink,
        n_tokens: int,
        done_reason: str,
        prompt_tokens: int,
        t_request: float,
        load_s: float,
        lazy: bool = False,
        label: str = "",
    ) -> None:
        self.label = label  # the prompt's head: which request this is, for /_sim/first-tokens
        self.renderer = renderer
        self.sink = sink
        self.n_tokens = n_tokens
        self.done_reason = done_reason
        self.prompt_tokens = prompt_tokens
        self.t_request = t_request
        self.load_s = load_s
        self.prompt_s = 0.0
        self.eval_start = 0.0
        self.eval_end = 0.0
        self.emitted = 0
        self.finished = False
        self.started = False
        self.runner: Runner | None = None
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        # Streamed sequences stop at their first token and hand it to the
        # request handler, which sends the response head with it (as Ollama
        # does) and then calls Runner.emit_first.
        self.first: asyncio.Future[float] | None = loop.create_future() if lazy else None

    def write_error(self, message: str) -> None:
        """Send the error chunk (the response head is already out)."""
        chunk = self.renderer.error_chunk(message)
        if chunk is not None:
            self.sink.write(chunk)

    @property
    def eval_s(self) -> float:
        return max(0.0, self.eval_end - self.eval_start)

    @property
    def total_s(self) -> float:
        return max(0.0, _monotonic() - self.t_request)


# --------------------------------------------------------------------------- runners


class Runner:
    """A loaded (or loading) model with its slots and its emission heap."""

    def __init__(
        self,
        sched: Scheduler,
        model: ModelProfile,
        *,
        num_ctx: int,
        num_parallel: int,
        session: float,
        size: int,
        size_vram: int,
        speed: float,
    ) -> None:
        self.sched = sched
        self.loop = sched.loop
        self.model = model
        self.num_ctx = num_ctx
        self.num_parallel = num_parallel
        self.session = session
        self.size = size
        self.size_vram = size_vram
        self.speed = speed
        self.state = "loading"  # loading, ready, stopping (stuck-unload), gone
        self.refcount = 1
        self.expires_at: float | None = None  # wall clock, when idle
        self.expire_handle: asyncio.TimerHandle | None = None
        self.loaded_fut: asyncio.Future[None] = self.loop.create_future()
        self.unloaded_fut: asyncio.Future[None] = self.loop.create_future()
        self.last_used = _monotonic()
        self.free_slots = num_parallel
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.sequences: set[Sequence] = set()
        self.decoding = 0
        self.interval = 1.0 / (model.per_stream_tps(1) * speed)
        self.heap: list[tuple[float, int, Sequence]] = []
        self._counter = itertools.count()
        self._rng = random.Random(model.name)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf
        self._in_tick = False
        self._paused_at: float | None = None

    def cancel_expiry(self) -> None:
        if self.expire_handle is not None:
            self.expire_handle.cancel()
            self.expire_handle = None

    # ---- slots

    async def acquire_slot(self) -> None:
        if self.state == "gone":
            raise RunnerError(self.sched.gone_reason(self))
        if self.free_slots > 0 and not self.waiters:
            self.free_slots -= 1
            return
        if self.sched.strict and self.sched.queued() >= self.sched.max_queue:
            raise QueueFull()
        fut: asyncio.Future[None] = self.loop.create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut in self.waiters:
                self.waiters.remove(fut)
            elif fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release_slot()
            raise

    def release_slot(self) -> None:
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(None)
                return
        self.free_slots += 1

    # ---- sequences

    def start(self, seq: Sequence) -> None:
        """Begin prompt evaluation and decoding of a sequence holding a slot."""
        seq.runner = self
        seq.started = True
        self.sequences.add(seq)
        self.decoding += 1
        self._recompute()
        now = _monotonic()
        seq.prompt_s = seq.prompt_tokens / (self.model.prompt_tps * self.speed)
        # A new sequence joins the running batch at its next decode step, a
        # uniformly distributed wait of up to one interval. This also keeps
        # the emission phases of sequences that start together spread out.
        seq.eval_start = now + seq.prompt_s + self._rng.random() * self.interval
        self._push(seq.eval_start + self.interval, seq)

    def _recompute(self) -> None:
        n = max(self.decoding, 1)
        self.interval = 1.0 / (self.model.per_stream_tps(n) * self.speed)

    def _push(self, due: float, seq: Sequence) -> None:
        heapq.heappush(self.heap, (due, next(self._counter), seq))
        if not self._in_tick and self._paused_at is None and due < self._timer_due:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(due, self._tick)
        self._timer_due = due

    def _tick(self) -> None:
        self._timer = None
        self._timer_due = math.inf
        heap = self.heap
        record = self.sched.stats.timing.record  # every token's error: the hot path
        pop = heapq.heappop
        emit = self._emit
        self._in_tick = True
        try:
            now = _monotonic()
            while heap and heap[0][0] <= now:
                due, _, seq = pop(heap)
                if seq.finished:
                    continue
                i = seq.emitted
                if i == 0 and seq.first is not None:
                    # Recorded when the handler writes it (emit_first), not here.
                    if not seq.first.done():
                        seq.first.set_result(due)
                    continue
                record(now - due)
                emit(seq, i, due)
                now = _monotonic()
        finally:
            self._in_tick = False
        if heap and self._paused_at is None:
            self._arm(heap[0][0])

    def emit_first(self, seq: Sequence, due: float) -> None:
        """Write token 0 of a streamed sequence (its head is now sent)."""
        if seq.finished:
            return
        self.sched.stats.record_first(seq.label, seq.t_request, due, _monotonic())
        self._emit(seq, 0, due)

    def _emit(self, seq: Sequence, i: int, due: float) -> None:
        """Write token ``i`` (due at ``due``), then the final chunk or the next turn."""
        data = seq.renderer.token(i)
        if data is not None and not seq.sink.write(data):
            self.finish(seq, ConnectionResetError("client went away"))
            return
        seq.emitted = i + 1
        self.sched.stats.tokens += 1
        if seq.emitted >= seq.n_tokens:
            seq.eval_end = due
            final = seq.renderer.final(seq)
            if final is not None:
                seq.sink.write(final)
            self.finish(seq, None)
        else:
            self._push(due + self.interval, seq)

    def finish(self, seq: Sequence, error: BaseException | None) -> None:
        """End a sequence (done, failed, or abandoned by its client)."""
        if seq.finished:
            return
        seq.finished = True
        if isinstance(error, ConnectionResetError):  # however it was noticed, logged once
            self.sched.log.info(
                "aborting completion request due to client closing the connection",
                src="server.go:1046",
            )
        if seq.started:
            self.sequences.discard(seq)
            self.decoding -= 1
            self._recompute()
        if not seq.done.done():
            if error is None:
                seq.done.set_result(None)
            else:
                seq.done.set_exception(error)
                seq.done.exception()  # mark retrieved: the handler may be gone
        first = seq.first
        if first is not None and not first.done():
            # The handler waits on the first token alone (one wake-up, not asyncio.wait's
            # two): an end before it is that wait's error.
            first.set_exception(error or RunnerError("unexpected end of generation"))
            first.exception()

    def pause(self) -> None:
        """generate-hang: stop emitting, keep every sequence where it is."""
        if self._paused_at is None:
            self._paused_at = _monotonic()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_due = math.inf

    def resume(self) -> None:
        if self._paused_at is None:
            return
        shift = _monotonic() - self._paused_at
        self._paused_at = None
        self.heap = [(d + shift, c, s) for d, c, s in self.heap]
        for s in self.sequences:
            s.eval_start += shift
        heapq.heapify(self.heap)
        if self.heap:
            self._arm(self.heap[0][0])

    def fail(self, message: str, error_lines: bool = True) -> None:
        """The runner process died: fail every sequence and slot waiter."""
        for seq in list(self.sequences):
            if error_lines and seq.emitted > 0:  # the head is sent: the error goes in the body
                seq.write_error(message)
            self.finish(seq, RunnerError(message))
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_exception(RunnerError(message))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.heap = []

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "state": self.state,
            "refcount": self.refcount,
            "num_parallel": self.num_parallel,
            "num_ctx": self.num_ctx,
            "free_slots": self.free_slots,
            "slot_waiters": len(self.waiters),
            "decoding": self.decoding,
            "per_stream_tps": round(1.0 / self.interval, 2),
            "size": self.size,
            "size_vram": self.size_vram,
            "session_s": None if math.isinf(self.session) else self.session,
        }


# --------------------------------------------------------------------------- scheduler


class _Pending:
    __slots__ = ("counted", "fut", "model", "num_ctx", "session")

    def __init__(
        self, model: ModelProfile, num_ctx: int, session: float | None, fut: asyncio.Future[Runner]
    ) -> None:
        self.model = model
        self.num_ctx = num_ctx
        self.session = session
        self.fut = fut
        self.counted = True


class Scheduler:
    def __init__(
        self,
        env: ServerEnv,
        profile: Profile,
        faults: FaultState,
        log: Logger,
        stats: Stats,
        *,
        queue_mode: str = "ollama",
        wording: str = "llama runner",
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.wording = wording  # "llama runner", or "llama-server" as Ollama >= 0.30 logs it
        self.env = env
        self.profile = profile
        self.faults = faults
        self.log = log
        self.stats = stats
        self.strict = queue_mode == "strict"
        self.max_queue = env.max_queue
        self.num_parallel = max(1, env.num_parallel)
        gpus = max(1, len(profile.gpus))
        self.max_loaded = env.max_loaded_models or 3 * gpus
        self.default_num_ctx = env.context_length or default_context(profile.total_vram)
        self.loaded: dict[str, Runner] = {}
        self.pending: deque[_Pending] = deque()
        self._buffered = 0
        self._receiver_waiting = False
        self.busy = False
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._dead: dict[int, str] = {}

    def start(self) -> None:
        self._task = self.loop.create_task(self._process())

    async def close(self) -> None:
        self._closed = True
        for r in list(self.loaded.values()):
            r.fail("server shutting down", error_lines=False)  # connections are cut
            self._unload(r)
        for p in self.pending:
            if not p.fut.done():
                p.fut.set_exception(RunnerError("server shutting down"))
        self.pending.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    # ---- queue accounting

    def queued(self) -> int:
        """Requests held against OLLAMA_MAX_QUEUE."""
        n = self._buffered
        if self.strict:
            n += sum(len(r.waiters) for r in self.loaded.values())
        return n

    def gone_reason(self, r: Runner) -> str:
        return self._dead.get(id(r), "llama runner process no longer running")

    # ---- requests

    async def get_runner(self, model: ModelProfile, num_ctx: int, session: float | None) -> Runner:
        """GetRunner: queue the request and wait until a runner is ready for it.

        The returned runner holds a reference for the caller; give it back
        with ``release``.
        """
        # Go's buffered channel: a scheduler blocked in receive takes the
        # request directly; otherwise it needs one of OLLAMA_MAX_QUEUE places.
        handoff = self._receiver_waiting
        if not handoff and self.queued() >= self.max_queue:
            raise QueueFull()
        fut: asyncio.Future[Runner] = self.loop.create_future()
        p = _Pending(model, min(num_ctx, model.context_length), session, fut)
        if handoff:
            self._receiver_waiting = False
            p.counted = False
        else:
            self._buffered += 1
        self.pending.append(p)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())
            raise

    def release(self, r: Runner) -> None:
        """A request is done with a runner (finishedReqCh)."""
        r.refcount -= 1
        r.last_used = _monotonic()
        if r.refcount > 0 or r.state != "ready":
            return
        if r.session <= 0:
            self._unload(r)
        elif math.isinf(r.session):
            r.expires_at = math.inf
        else:
            r.cancel_expiry()
            r.expire_handle = self.loop.call_later(r.session, self._expired, r)
            r.expires_at = time.time() + r.session

    def expire_model(self, model: ModelProfile) -> None:
        """expireRunner: keep_alive 0 with an empty prompt."""
        r = self.loaded.get(model.name)
        if r is not None:
            self._expire(r)

    def _expire(self, r: Runner) -> None:
        """Unload a runner as soon as it is idle (keep-alive 0)."""
        r.session = 0.0
        r.cancel_expiry()
        self._unload_if_idle(r)

    def _expired(self, r: Runner) -> None:
        r.expire_handle = None
        self._unload_if_idle(r)

    def _unload_if_idle(self, r: Runner) -> None:
        if r.refcount <= 0 and r.state == "ready":
            self._unload(r)

    def _unload(self, r: Runner) -> None:
        if r.state == "gone":
            return
        if self.faults.is_set("stuck-unload") and not self._closed:
            self._stick(r)
            return
        self._drop(r)

    def _drop(self, r: Runner) -> None:
        """The runner is gone: out of the loaded set, its waiters woken."""
        if r.state == "gone":
            return
        r.state = "gone"
        r.cancel_expiry()
        if self.loaded.get(r.model.name) is r:
            del self.loaded[r.model.name]
        self.log.debug("runner released", src="sched.go:512", model=r.model.name)
        if not r.unloaded_fut.done():
            r.unloaded_fut.set_result(None)
        if not r.loaded_fut.done():
            r.loaded_fut.set_result(None)

    def _stick(self, r: Runner) -> None:
        """stuck-unload: the runner is told to stop and never does ("Stopping...")."""
        if r.state == "stopping":
            return
        r.state = "stopping"
        r.cancel_expiry()
        r.expires_at = time.time()  # in the past from now on, as /api/ps shows it
        self.log.debug("runner expired event received", src="sched.go:355", model=r.model.name)

    def unstick(self) -> None:
        """stuck-unload cleared: the stopping runners finally go."""
        for r in list(self.loaded.values()):
            if r.state == "stopping":
                self._drop(r)

    def gpu_lost(self) -> None:
        """Every runner process dies with a CUDA error; later loads fall back to the CPU."""
        self._kill_all(CUDA_UNKNOWN_LINES, GPU_LOST_STREAM_ERROR, GPU_LOST_LOAD_ERROR)

    def runner_oom(self) -> bool:
        """runner-oom: the runners die of CUDA OOM and Ollama expires every loaded model.

        Returns False when nothing was loaded (the next load fails instead).
        """
        if not self.loaded:
            return False
        self._kill_all(CUDA_OOM_LINES, RUNNER_OOM_ERROR, RUNNER_OOM_ERROR)
        self.log.warn("runtime OOM detected; expiring loaded models", src="sched.go:417")
        return True

    def expire_all(self) -> None:
        """Ask every loaded runner to unload as soon as it is idle."""
        for r in list(self.loaded.values()):
            self._expire(r)

    def _kill_all(self, stderr_lines: str, error: str, reason: str) -> None:
        """Every runner process dies: ``error`` for running streams, ``reason`` for waiters."""
        for r in list(self.loaded.values()):
            self.log.raw(stderr_lines)
            self.log.error(
                f"{self.wording} terminated",
                src="server.go:1397",
                error="exit status 2",
                model=r.model.name,
            )
            self._dead[id(r)] = reason
            r.fail(error)
            self._drop(r)  # a dead runner is gone even while unloads are stuck

    def pause_all(self, on: bool) -> None:
        for r in self.loaded.values():
            if on:
                r.pause()
            else:
                r.resume()

    # ---- the scheduler task (processPending)

    async def _process(self) -> None:
        while not self._closed:
            if not self.pending:
                self._receiver_waiting = True
                self._wake = self.loop.create_future()
                await self._wake
                self._wake = None
                self._receiver_waiting = False
                continue
            p = self.pending.popleft()
            if p.counted:
                self._buffered -= 1
            if p.fut.done():
                continue
            self.busy = True
            try:
                await self._schedule(p)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug must not stop scheduling
                if not p.fut.done():
                    p.fut.set_exception(RunnerError(str(e)))
            finally:
                self.busy = False

    async def _schedule(self, p: _Pending) -> None:
        while not p.fut.done():
            victim: Runner | None = None
            r = self.loaded.get(p.model.name)
            if r is not None:
                if r.state == "loading":
                    await asyncio.shield(r.loaded_fut)
                    continue
                if r.state == "stopping":  # stuck: the scheduler waits, as Ollama's does
                    await asyncio.shield(r.unloaded_fut)
                    continue
                if r.num_ctx == p.num_ctx:
                    self._use(r, p)
                    return
                self.log.debug("model needs reload", src="sched.go:600", model=r.model.name)
                victim = r
            elif len(self.loaded) >= self.max_loaded:
                self.log.debug(
                    "max runners achieved, unloading one to make room",
                    src="sched.go:170",
                    runner_count=len(self.loaded),
                )
                victim = self._find_victim()
            else:
                need = p.model.memory(p.num_ctx, self.num_parallel)
                total = self.profile.total_vram
                used = sum(x.size_vram for x in self.loaded.values())
                if total and self.loaded and need > total - used:
                    victim = self._find_victim()
                else:
                    self._load(p, max(0, total - used) if total else 0)
                    return
            if victim is None:
                return
            self._expire(victim)
            await asyncio.shield(victim.unloaded_fut)

    def _find_victim(self) -> Runner | None:
        runners = sorted(self.loaded.values(), key=lambda x: (x.session, x.last_used))
        for r in runners:
            if r.refcount <= 0:
                return r
        return runners[0] if runners else None

    def _use(self, r: Runner, p: _Pending) -> None:
        r.refcount += 1
        r.cancel_expiry()
        r.expires_at = None
        if p.session is not None:
            r.session = p.session
        r.last_used = _monotonic()
        p.fut.set_result(r)

    def _load(self, p: _Pending, vram_free: int) -> None:
        model = p.model
        session = p.session if p.session is not None else self.env.keep_alive
        size = model.memory(p.num_ctx, self.num_parallel)
        gpu_gone = self.faults.is_set("gpu-lost")
        if self.profile.gpus and not gpu_gone:
            size_vram = min(size, vram_free)
            if self.faults.is_set("cpu-fallback"):
                on_cpu = float(self.faults.arg("cpu-fallback") or 0.0)
                size_vram = min(size_vram, int(size * (1.0 - on_cpu)))
        else:
            size_vram = 0
        if self.profile.gpus:  # a GPU host: what is not in VRAM runs cpu_slowdown times slower
            cpu_frac = (size - size_vram) / size if size else 0.0
            speed = 1.0 / (1.0 + (self.profile.cpu_slowdown - 1.0) * cpu_frac)
        else:
            speed = 1.0
        if gpu_gone:
            self.log.debug(
                "Unable to load cudart",
                src="gpu.go:533",
                library="/usr/lib/ollama/cuda_v12/libcudart.so.12.8.90",
                error="cudart init failure: 999",
            )
        self._log_offload(model, size, size_vram, vram_free if not gpu_gone else 0)
        r = Runner(
            self,
            model,
            num_ctx=p.num_ctx,
            num_parallel=self.num_parallel,
            session=session,
            size=size,
            size_vram=size_vram,
            speed=speed,
        )
        self.loaded[model.name] = r
        self.log.info("loaded runners", src="sched.go:450", count=len(self.loaded))
        self.loop.create_task(self._load_task(r, p))

    def _log_offload(self, model: ModelProfile, size: int, size_vram: int, vram_free: int) -> None:
        """llm/memory.go's "offload to ..." line: how many layers went to the GPU."""
        layers = _layer_count(model)
        offload = round(layers * size_vram / size) if size else 0
        library = self.profile.gpus[0].library if self.profile.gpus and size_vram else "cpu"
        self.log.info(
            f"offload to {library}",
            src="memory.go:326",
            **{
                "layers.requested": -1,
                "layers.model": layers,
                "layers.offload": offload,
                "layers.split": "",
                "memory.available": f"[{human_bytes2(vram_free)}]",
                "memory.gpu_overhead": "0 B",
                "memory.required.full": human_bytes2(size),
                "memory.required.partial": human_bytes2(size_vram),
                "memory.required.kv": human_bytes2(max(0, size - model.vram)),
            },
        )

    def load_seconds(self, model: ModelProfile) -> float:
        if self.faults.is_set("slow-load"):
            return float(self.faults.arg("slow-load") or 0.0)
        return model.load_seconds

    async def _load_task(self, r: Runner, p: _Pending) -> None:
        model = r.model
        t0 = _monotonic()
        self.log.info(
            "starting llama server",
            src="server.go:405",
            cmd=f"/usr/local/bin/ollama runner --model {model.name} --ctx-size "
            f"{r.num_ctx * r.num_parallel} --batch-size 512 --parallel {r.num_parallel} "
            f"--port 0",
        )
        self.log.info(f"waiting for {self.wording} to start responding", src="server.go:1273")
        self.log.info(
            "waiting for server to become available",
            src="server.go:1307",
            status="llm server loading model",
        )
        error: str | None = None
        while True:
            if p.fut.done():
                self.log.warn(
                    "client connection closed before server finished loading, aborting load",
                    src="server.go:1290",
                )
                error = f"timed out waiting for {self.wording} to start: context canceled"
                break
            now = _monotonic()
            if now - t0 >= self.env.load_timeout:
                error = f"timed out waiting for {self.wording} to start - progress 0.00 - "
                break
            remaining = t0 + self.load_seconds(model) - now
            if remaining <= 0:
                break
            await asyncio.sleep(min(remaining, 0.05))
            if r.state == "gone":
                error = "server shutting down"
                break
        if error is not None:
            self.log.error("error loading llama server", src="sched.go:459", error=error)
            r.refcount = 0
            self._unload(r)
            if not p.fut.done():
                p.fut.set_exception(RunnerError(error))
            return
        if self.faults.is_set("runner-oom"):  # the runner dies as it starts
            self.log.raw(CUDA_OOM_LINES)
            self.log.error(
                f"{self.wording} terminated", src="server.go:1397", error="exit status 2"
            )
            self.log.warn("runtime OOM detected; expiring loaded models", src="sched.go:417")
            self.faults.clear("runner-oom")
            self.log.error("error loading llama server", src="sched.go:459", error=RUNNER_OOM_ERROR)
            r.refcount = 0
            self._drop(r)
            if not p.fut.done():
                p.fut.set_exception(RunnerError(RUNNER_OOM_ERROR))
            return
        r.state = "ready"
        self.log.info(
            f"{self.wording} started in {_monotonic() - t0:.2f} seconds",
            src="server.go:1312",
        )
        if not r.loaded_fut.done():
            r.loaded_fut.set_result(None)
        if p.fut.done():
            self.release(r)
        else:
            r.last_used = _monotonic()
            p.fut.set_result(r)

    def describe(self) -> dict[str, Any]:
        return {
            "pending": self._buffered,
            "scheduler_busy": self.busy,
            "queue_mode": "strict" if self.strict else "ollama",
            "max_queue": self.max_queue,
            "num_parallel": self.num_parallel,
            "max_loaded_models": self.max_loaded,
            "default_num_ctx": self.default_num_ctx,
            "runners": [r.describe() for r in self.loaded.values()],
        }


def _layer_count(model: ModelProfile) -> int:
    """Repeating layers plus the output layer, roughly as GGUF models of that size have."""
    if model.vram < 2 * GiB:
        return 17
    if model.vram < 8 * GiB:
        return 29
    if model.vram < 24 * GiB:
        return 49
    return 81


def default_context(total_vram: int) -> int:
    """Ollama's VRAM-tier default context (server/routes.go)."""
    if total_vram >= 47 * GiB:
        return 262144
    if total_vram >= 23 * GiB:
        return 32768
    return 4096
