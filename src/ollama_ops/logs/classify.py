"""What a journal line says happened: pure classifiers from a Record to Events.

Two writers share the unit's journal: systemd (PID 1) reports starts, stops,
exits, results, restarts and OOM kills of the unit; Ollama writes slog lines
(``time=... level=INFO source=... msg="..."``), gin access lines
(``[GIN] ... | 503 | ...``) and the runner's output. The patterns are
Ollama's own strings (server/routes.go, server/sched.go, llm/server.go and,
from v0.30, llm/llama_server.go, where "llama runner" became "llama-server";
both are accepted) and systemd's unit messages (src/core/unit.c, service.c).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ollama_ops.logs.records import Record


class Kind(str, Enum):
    START = "start"  # systemd started the unit
    STOP = "stop"  # systemd stopped it
    LISTENING = "listening"  # `ollama serve` is up (version)
    EXIT = "exit"  # the main process exited (how)
    FAILED = "failed"  # the unit failed (systemd's result)
    RESTART = "restart"  # systemd scheduled a restart
    OOM_KILL = "oom-kill"  # the kernel's OOM killer hit the unit's cgroup
    RUNTIME_OOM = "runtime-oom"  # Ollama / CUDA ran out of memory
    HANG = "hang"  # did not stop (or start) in time, or a watchdog fired
    CRASH = "crash"  # Go panic of the server, or the runner died
    MODEL_START = "model-start"  # a model load began (which blob)
    LOAD = "model-load"  # a model finished loading (seconds)
    LOAD_FAILED = "load-failed"  # a load timed out, was aborted or failed
    GPU_ERROR = "gpu-error"
    GPU = "gpu"  # the server found a GPU at start
    CPU_ONLY = "cpu-fallback"  # no GPU found at start, or a model loaded (partly) on the CPU
    ACCESS = "access-error"  # permission denied or read-only file system, with a path
    BUSY = "busy"  # 503: queue full
    HTTP_5XX = "http-5xx"  # other 5xx answers
    REQUEST = "request"  # any other access line


@dataclass(frozen=True)
class Event:
    time: float
    kind: Kind
    text: str  # what it says, short
    seconds: float | None = None  # LOAD duration
    path: str | None = None  # ACCESS: the path; MODEL_START: the model
    fix: str | None = None  # ACCESS: the ReadWritePaths= line that fixes it
    status: int | None = None  # access lines: HTTP status


_RUNNER = r"(?:llama runner|llama-server)"
_GIN = re.compile(
    r"^\[GIN\] \S+ - \S+ \| +(?P<status>\d{3}) \| +(?P<latency>\S+) \| +(?P<client>\S*) \| "
    r"+(?P<method>[A-Z]+) +\"(?P<path>[^\"]*)\""
)
_SLOG_MSG = re.compile(r'msg=(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>\S+))')


def slog_message(line: str) -> str:
    """The msg= of a slog text line, else the line itself (old `routes.go:123: INFO` form)."""
    match = _SLOG_MSG.search(line)
    if not match:
        return line
    return (match["quoted"] or match["bare"] or "").replace('\\"', '"')


def slog_attr(line: str, key: str) -> str | None:
    match = re.search(rf'(?:^| ){re.escape(key)}=(?:"((?:[^"\\]|\\.)*)"|(\S+))', line)
    if not match:
        return None
    return (match[1] if match[1] is not None else match[2]).replace('\\"', '"')


# ---------------------------------------------------------------- systemd's lines

_SYSTEMD: tuple[tuple[re.Pattern[str], Kind, Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"^Started (.+?)\.?$"), Kind.START, lambda m: "started"),
    (re.compile(r"^Stopped (.+?)\.?$"), Kind.STOP, lambda m: "stopped"),
    (
        re.compile(r"Main process exited, code=(\w+), status=(\S+)"),
        Kind.EXIT,
        lambda m: f"main process {m[1]}, status {m[2]}",
    ),
    (
        re.compile(r"A process of this unit has been killed by the OOM killer"),
        Kind.OOM_KILL,
        lambda m: "a process was killed by the kernel's OOM killer",
    ),
    (
        re.compile(r"Failed with result '([\w-]+)'"),
        Kind.FAILED,
        lambda m: f"result {m[1]}",
    ),
    (
        re.compile(r"Scheduled restart job, restart counter is at (\d+)"),
        Kind.RESTART,
        lambda m: f"restart #{m[1]}",
    ),
    (
        re.compile(r"State '([\w-]*sigterm)' timed out\. Killing"),
        Kind.HANG,
        lambda m: "did not stop within TimeoutStopSec=, killed",
    ),
    (re.compile(r"Watchdog timeout"), Kind.HANG, lambda m: "watchdog timeout"),
    (
        re.compile(r"[Ss]tart operation timed out"),
        Kind.HANG,
        lambda m: "did not start within TimeoutStartSec=",
    ),
)


def _systemd(record: Record) -> list[Event]:
    text = record.message
    for pattern, kind, say in _SYSTEMD:
        match = pattern.search(text)
        if match:
            events = [Event(record.time, kind, say(match))]
            if kind is Kind.FAILED and match[1] == "oom-kill":
                events.append(Event(record.time, Kind.OOM_KILL, "unit failed with result oom-kill"))
            return events
    return []


# ---------------------------------------------------------------- access lines


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_GO_UNITS["h"] = 3600.0
# Endpoints that answer from memory in microseconds: seconds there mean the server was stuck.
_INSTANT = frozenset({"/", "/api/version", "/api/tags", "/api/ps"})
HANG_PROBE_S = 2.0
_GENERATION = frozenset(
    {"/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/v1/chat/completions"}
    | {"/v1/completions", "/v1/embeddings"}
)


def go_duration(text: str) -> float | None:
    """Go's time.Duration text ("1.5ms", "52.1µs", "2m48s") in seconds; None if it is not one."""
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def _access(record: Record, match: re.Match[str]) -> list[Event]:
    status = int(match["status"])
    text = f"{status} {match['method']} {match['path']} in {match['latency']}"
    took = go_duration(match["latency"])
    if match["path"] in _INSTANT and took is not None and took >= HANG_PROBE_S:
        return [
            Event(
                record.time,
                Kind.HANG,
                f"{match['method']} {match['path']} took {match['latency']}: the server was "
                "not answering",
                status=status,
            )
        ]
    if status == 499 and match["path"] in _GENERATION:
        # Ollama's "client closed the request": the client stopped waiting before any answer.
        return [
            Event(
                record.time,
                Kind.HANG,
                f"{match['method']} {match['path']} abandoned by its client after "
                f"{match['latency']} (499): hung or too slow",
                status=status,
            )
        ]
    if status == 503:
        return [Event(record.time, Kind.BUSY, text, status=status)]
    if status >= 500:
        return [Event(record.time, Kind.HTTP_5XX, text, status=status)]
    return [Event(record.time, Kind.REQUEST, text, status=status)]


# ---------------------------------------------------------------- files it cannot write

_ACCESS_ERROR = re.compile(
    r"(?P<op>mkdir|open|rename|create|remove|unlink|chmod|write|stat|lstat)"
    r" (?P<path>/\S*?)(?: /\S*?)?: (?P<why>permission denied|read-only file system)"
)


def fix_for(op: str, path: str) -> str:
    """The directory to make writable: the one being created, or the file's; the model
    store rather than its blobs/ or manifests/, the home rather than its .ollama/."""
    directory = path if op == "mkdir" else posixpath.dirname(path)
    for marker in ("/blobs", "/manifests"):
        at = directory.find(marker)
        if at > 0:
            directory = directory[:at]
    if directory.endswith("/.ollama"):
        directory = posixpath.dirname(directory)
    return f"ReadWritePaths={directory}"


def _access_error(record: Record, match: re.Match[str]) -> Event:
    why = match["why"]
    text = f"{match['op']} {match['path']}: {why}"
    return Event(
        record.time, Kind.ACCESS, text, path=match["path"], fix=fix_for(match["op"], match["path"])
    )


# ---------------------------------------------------------------- Ollama's own lines

_LOADED = re.compile(rf"{_RUNNER} started in (\d+(?:\.\d+)?) seconds")
_LISTENING = re.compile(r"Listening on (\S+) \(version ([^)]+)\)")
_LOAD_FAILED = (
    (re.compile(rf"timed out waiting for {_RUNNER} to start"), "load timed out"),
    (
        re.compile(r"client connection closed before (?:server|llama-server) finished loading"),
        "client gave up during the load; the load was aborted",
    ),
)
_ABANDONED = re.compile(
    r"aborting (?:completion|chat) request due to client closing the connection"
)
_TERMINATED = re.compile(rf"{_RUNNER} process has terminated: ?(.*?)\"?$")
_RUNNER_DIED = re.compile(rf'msg="{_RUNNER} terminated"')
_PANIC = re.compile(r"^(panic: .*|fatal error: .*|SIGSEGV: segmentation violation.*)")
_OOM = re.compile(
    r"runtime OOM detected|CUDA error: out of memory|cudaMalloc failed: out of memory|"
    r"out of memory allocating|unable to allocate (?:CUDA|ROCm)\S* buffer"
)
_GPU = re.compile(
    r"cudart init failure|[Uu]nable to load cudart|cuda driver library failed|CUDA error|"
    r"ROCm error|failure during (?:llama-server )?GPU discovery|"
    r"error looking up nvidia GPU memory|VRAM usage didn't recover|Failed to initialize NVML"
)
_MODEL = re.compile(r"--model (\S+)")


def _model_name(path: str) -> str:
    base = posixpath.basename(path.strip('"'))
    return base[:19] if base.startswith(("sha256-", "sha256:")) else base


def _offload(line: str, msg: str) -> str | None:
    """A model placed (partly) on the CPU, from llm/memory.go's offload line; None if all on GPU.

    Older Ollama writes ``msg=offload library=cpu``, later ``msg="offload to cpu"``.
    """
    library = (slog_attr(line, "library") or msg.removeprefix("offload to ").strip()).lower()
    layers, offloaded = slog_attr(line, "layers.model"), slog_attr(line, "layers.offload")
    if library == "cpu":
        return "model loaded on the CPU (no layer on a GPU)"
    if (
        layers and offloaded and layers.isdigit() and offloaded.isdigit()
        and int(offloaded) < int(layers)
    ):  # fmt: skip
        return f"model partly on the CPU: {offloaded} of {layers} layers on the GPU"
    return None


def _ollama(record: Record) -> list[Event]:
    line, t = record.message, record.time
    gin = _GIN.match(line)
    if gin:
        return _access(record, gin)
    msg = slog_message(line)
    events: list[Event] = []
    if _PANIC.match(line):
        events.append(Event(t, Kind.CRASH, f"server {line[:120]}"))
    access = _ACCESS_ERROR.search(line)
    if access:
        events.append(_access_error(record, access))
    if _OOM.search(line):
        events.append(Event(t, Kind.RUNTIME_OOM, msg[:120]))
    elif _GPU.search(line):
        events.append(Event(t, Kind.GPU_ERROR, msg[:120]))
    loaded = _LOADED.search(line)
    if loaded:
        events.append(Event(t, Kind.LOAD, f"loaded in {loaded[1]} s", seconds=float(loaded[1])))
    listening = _LISTENING.search(line)
    if listening:
        events.append(Event(t, Kind.LISTENING, f"listening on {listening[1]}, {listening[2]}"))
    if msg == "inference compute":
        library = (slog_attr(line, "library") or "").lower()
        name = slog_attr(line, "name") or slog_attr(line, "description") or ""
        kind = Kind.CPU_ONLY if library == "cpu" else Kind.GPU
        events.append(Event(t, kind, f"inference on {library or '?'} {name}".strip()))
    elif "no compatible GPUs were discovered" in line:
        events.append(Event(t, Kind.CPU_ONLY, "no compatible GPU found"))
    elif msg in ("offload", "offload to cpu") or msg.startswith("offload to "):
        offload = _offload(line, msg)
        if offload:
            events.append(Event(t, Kind.CPU_ONLY, offload))
    if msg.startswith(("starting llama server", "starting llama-server")):
        model = _MODEL.search(slog_attr(line, "cmd") or "") or _MODEL.search(line)
        if model:
            events.append(Event(t, Kind.MODEL_START, "load began", path=_model_name(model[1])))
    elif msg == "loading model via llama-server":
        events.append(
            Event(
                t, Kind.MODEL_START, "load began", path=_model_name(slog_attr(line, "model") or "")
            )
        )
    if _ABANDONED.search(line):
        events.append(
            Event(t, Kind.HANG, "a client gave up on a generation in progress: hung or too slow")
        )
    for pattern, say in _LOAD_FAILED:
        if pattern.search(line):
            events.append(Event(t, Kind.LOAD_FAILED, say))
    if msg == "error loading llama server" and not any(e.kind is Kind.LOAD_FAILED for e in events):
        events.append(Event(t, Kind.LOAD_FAILED, (slog_attr(line, "error") or msg)[:120]))
    terminated = _TERMINATED.search(msg) or _TERMINATED.search(line)
    if (terminated or _RUNNER_DIED.search(line)) and not any(e.kind is Kind.CRASH for e in events):
        detail = terminated[1] if terminated else (slog_attr(line, "error") or "")
        events.append(Event(t, Kind.CRASH, f"runner terminated: {detail}"[:120]))
    return events


def classify(record: Record) -> list[Event]:
    """Every event one journal record reports (often none)."""
    if record.from_systemd:
        return _systemd(record)
    return _ollama(record)
