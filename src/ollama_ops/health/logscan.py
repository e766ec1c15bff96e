"""Ollama's log lines as evidence (pure): which requests completed, loads, GPU errors.

Ollama has no metrics endpoint, but its journal says what happened: gin's
access line for every request (with the status), the scheduler's load lines
and the runner's errors. A completed inference request is proof of progress
that no proxy is needed for; a load in progress explains a full queue.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from ollama_ops.health.model import Progress


class Kind(str, Enum):
    COMPLETION = "completion"  # 2xx on an inference path
    REJECTED = "rejected"  # 503 server busy
    SERVER_ERROR = "server_error"  # other 5xx on an inference path
    LOAD_START = "load_start"
    LOAD_DONE = "load_done"
    LOAD_FAILED = "load_failed"
    GPU_ERROR = "gpu_error"  # CUDA/driver failure other than out of memory
    OOM = "oom"  # runner OOM, CUDA OOM, the kernel's oom-kill of a unit process
    LIBRARY = "library"  # "inference compute ... library=cuda" at start-up
    START = "start"  # "Listening on ...": a new server process
    SUPPRESSED = "suppressed"  # journald dropped lines of the unit (its rate limit)


@dataclass(frozen=True)
class Event:
    at: float  # CLOCK_MONOTONIC seconds
    kind: Kind
    detail: str = ""


INFERENCE_PATHS = frozenset(
    {
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/messages",
    }
)

_GIN = re.compile(
    r"\[GIN\][^|]*\|\s*(?P<status>\d{3})\s*\|[^|]*\|\s*(?P<client>[^|]*?)\s*\|"
    r"\s*(?P<method>[A-Z]+)\s+\"(?P<path>[^\"]*)\""
)
_LOAD_START = re.compile(
    r"waiting for (?:llama runner|llama-server|server) to start responding|starting llama server"
)
_LOAD_DONE = re.compile(r"(?:llama runner|llama-server) started in")
_LOAD_FAILED = re.compile(r"error loading llama server|timed out waiting for llama runner")
_OOM = re.compile(
    r"runtime OOM detected|CUDA error: out of memory|Failed with result 'oom-kill'"
    r"|killed by the OOM killer"
)
_GPU_ERROR = re.compile(
    r"CUDA error|cudart init failure|GPU is lost|fallen off the bus|NVML_ERROR_GPU_IS_LOST"
)
_SUPPRESSED = re.compile(r"Suppressed (?P<n>[0-9]+) messages from")
_LIBRARY = re.compile(r"inference compute.*?\blibrary=\"?(?P<lib>[A-Za-z]+)")


def classify(message: str, ignore_clients: frozenset[str] = frozenset()) -> tuple[Kind, str] | None:
    """The evidence one log line carries, or None.

    Requests from ``ignore_clients`` (the checker's own source address) are no
    evidence: "nothing else completes" means nothing but the probes.
    """
    gin = _GIN.search(message)
    if gin:
        if gin.group("client") in ignore_clients:
            return None
        status = int(gin.group("status"))
        path = gin.group("path").split("?")[0]
        if status == 503:
            return Kind.REJECTED, path
        if path not in INFERENCE_PATHS:
            return None
        if 200 <= status < 300:
            return Kind.COMPLETION, path
        if status >= 500:
            return Kind.SERVER_ERROR, f"{status} {path}"
        return None
    if _OOM.search(message):
        return Kind.OOM, message.strip()[:200]
    if _LOAD_FAILED.search(message):
        if _GPU_ERROR.search(message):
            return Kind.GPU_ERROR, message.strip()[:200]
        return Kind.LOAD_FAILED, message.strip()[:200]
    if _GPU_ERROR.search(message):
        return Kind.GPU_ERROR, message.strip()[:200]
    if _LOAD_DONE.search(message):
        return Kind.LOAD_DONE, ""
    if _LOAD_START.search(message):
        return Kind.LOAD_START, ""
    lib = _LIBRARY.search(message)
    if lib:
        return Kind.LIBRARY, lib.group("lib").lower()
    if "Listening on " in message:
        return Kind.START, ""
    suppressed = _SUPPRESSED.search(message)
    if suppressed:
        return Kind.SUPPRESSED, suppressed.group("n")
    return None


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else max(0.0, now - at)


_COUNTED = (Kind.COMPLETION, Kind.REJECTED, Kind.SERVER_ERROR, Kind.GPU_ERROR, Kind.OOM)


class Tracker:
    """Evidence folded in as it arrives: O(1) per line, O(window) per question.

    Counts are kept per whole second for ``keep`` seconds, so a server
    completing thousands of requests a second costs the supervisor nothing
    more than an idle one when it asks.
    """

    def __init__(self, keep: float = 600.0) -> None:
        self.keep = keep
        self.last_completion: float | None = None
        self.last_rejection: float | None = None
        self.loading_since: float | None = None
        self.library: str | None = None
        self.last_gpu_error = ""
        self.suppressed_at: float | None = None
        self.totals: dict[Kind, int] = {}  # since the tracker started, for counters
        self._seconds: deque[tuple[int, dict[Kind, int]]] = deque()

    def add(self, ev: Event) -> None:
        self.totals[ev.kind] = self.totals.get(ev.kind, 0) + 1
        if ev.kind is Kind.COMPLETION:
            self.last_completion = max(ev.at, self.last_completion or ev.at)
        elif ev.kind is Kind.REJECTED:
            self.last_rejection = max(ev.at, self.last_rejection or ev.at)
        elif ev.kind is Kind.LOAD_START:
            self.loading_since = ev.at if self.loading_since is None else self.loading_since
        elif ev.kind in (Kind.LOAD_DONE, Kind.LOAD_FAILED):
            self.loading_since = None
        elif ev.kind is Kind.START:
            # A new server process: what the old one logged says nothing about this one,
            # except that it ran out of memory (kept, as a warning).
            self.loading_since = None
            self.library = None
            self.last_gpu_error = ""
            for _, by_kind in self._seconds:
                for kind in [k for k in by_kind if k is not Kind.OOM]:
                    del by_kind[kind]
        elif ev.kind is Kind.LIBRARY:
            self.library = ev.detail
        elif ev.kind is Kind.SUPPRESSED:
            self.suppressed_at = ev.at
        elif ev.kind is Kind.GPU_ERROR:
            self.last_gpu_error = ev.detail
            if _LOAD_FAILED.search(ev.detail):  # a load that failed on the GPU has ended
                self.loading_since = None
        if ev.kind in _COUNTED:
            second = int(ev.at)
            if not self._seconds or self._seconds[-1][0] != second:
                self._seconds.append((second, {}))
            counts = self._seconds[-1][1]
            counts[ev.kind] = counts.get(ev.kind, 0) + 1
            while self._seconds and self._seconds[0][0] < second - self.keep:
                self._seconds.popleft()

    def progress(self, now: float, window: float) -> Progress:
        if self.suppressed_at is not None and now - self.suppressed_at < window:
            return Progress(
                readable=False,
                detail="journal incomplete: journald dropped lines of the unit (its rate limit)",
            )
        since = now - window
        counts: dict[Kind, int] = {}
        for second, by_kind in self._seconds:
            if second + 1 > since and second <= now:
                for kind, n in by_kind.items():
                    counts[kind] = counts.get(kind, 0) + n
        return Progress(
            readable=True,
            window_s=window,
            last_completion_age_s=_age(now, self.last_completion),
            completions=counts.get(Kind.COMPLETION, 0),
            rejected=counts.get(Kind.REJECTED, 0),
            last_rejection_age_s=_age(now, self.last_rejection),
            server_errors=counts.get(Kind.SERVER_ERROR, 0),
            loading_for_s=None
            if self.loading_since is None
            else max(0.0, now - self.loading_since),
            gpu_errors=counts.get(Kind.GPU_ERROR, 0),
            last_gpu_error=self.last_gpu_error if counts.get(Kind.GPU_ERROR) else "",
            oom_events=counts.get(Kind.OOM, 0),
            gpu_library=self.library,
        )


def summarize(events: Iterable[Event], now: float, window: float) -> Progress:
    """What the events up to ``now`` say about the last ``window`` seconds (and loads in flight)."""
    tracker = Tracker(keep=window + 1)
    for ev in sorted(events, key=lambda e: e.at):
        if ev.at <= now:
            tracker.add(ev)
    return tracker.progress(now, window)
