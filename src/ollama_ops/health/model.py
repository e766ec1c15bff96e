"""What the probes saw (a Snapshot) and what it means (a Verdict): frozen data, no I/O.

Every field that a probe could not read is None or carries the reason it
could not: the verdict tells "cannot tell" (UNKNOWN) from "bad".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ollama_ops.errors import HealthStatus


class State(str, Enum):
    """The verdicts, from best to worst; UNKNOWN when the checker cannot tell."""

    OK = "ok"
    BUSY = "busy"  # queue full, 503s, slow, but completions still flowing: never restart
    DEGRADED = "degraded"  # CPU fallback, VRAM near full, recent restarts or OOM kills
    STUCK = "stuck"  # a model past its expiry still listed ("Stopping...")
    HUNG = "hung"  # the process answers nothing, or generation finishes nothing
    DOWN = "down"  # not running or not listening
    UNKNOWN = "unknown"  # the checker itself failed; never a reason to act


class Problem(str, Enum):
    """Why a verdict is what it is; the policy picks its ladder by problem."""

    LOADING = "loading"
    QUEUE_FULL = "queue_full"
    SLOW = "slow"
    CPU_FALLBACK = "cpu_fallback"
    VRAM_FULL = "vram_full"
    RESTARTS = "restarts"
    OOM_KILL = "oom_kill"
    RUNNER_ERRORS = "runner_errors"
    GPU_LOST = "gpu_lost"
    STUCK_MODEL = "stuck_model"
    GENERATION_HUNG = "generation_hung"
    PROCESS_HUNG = "process_hung"
    API_DOWN = "api_down"
    UNIT_FAILED = "unit_failed"
    UNIT_STOPPED = "unit_stopped"
    UNIT_STARTING = "unit_starting"
    CHECKER = "checker"


class Failure(str, Enum):
    """How an HTTP probe failed."""

    REFUSED = "refused"  # nothing listens (or the host is unreachable)
    TIMEOUT = "timeout"  # connected but no (complete) answer before the deadline
    NOT_OLLAMA = "not_ollama"  # something answered, but not Ollama
    HTTP_ERROR = "http_error"  # Ollama answered with an error status
    BUSY = "busy"  # 503: the queue is full
    BAD_URL = "bad_url"


@dataclass(frozen=True)
class HttpResult:
    """One bounded HTTP exchange: a status and body, or how it failed."""

    ok: bool
    status: int | None
    body: str
    latency_s: float
    failure: Failure | None = None
    detail: str = ""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    size: int
    size_vram: int
    expires_in_s: float | None  # expires_at minus now; negative: past its expiry
    context_length: int | None = None

    @property
    def on_gpu_percent(self) -> float:
        return 100.0 * self.size_vram / self.size if self.size > 0 else 0.0


@dataclass(frozen=True)
class ApiState:
    """`GET /` (liveness) and `GET /api/ps` (the loaded models)."""

    live: HttpResult
    live_failing_for_s: float = 0.0  # since the first failed `GET /` of the streak began
    models: tuple[LoadedModel, ...] | None = None  # None: /api/ps not read
    ps_detail: str = ""
    version: str | None = None


class DeepOutcome(str, Enum):
    OK = "ok"
    TIMEOUT = "timeout"  # no complete answer within the deadline (a stream that never closes)
    BUSY = "busy"  # 503
    ERROR = "error"  # another error status, e.g. 500 from a dead runner
    SKIPPED = "skipped"  # no loaded model to ask without triggering a load


@dataclass(frozen=True)
class DeepProbe:
    """The one-token generation, and how long generation has been failing."""

    outcome: DeepOutcome
    model: str | None = None
    latency_s: float | None = None
    detail: str = ""
    failures: int = 0  # consecutive failed attempts (TIMEOUT, BUSY, ERROR)
    failing_for_s: float = 0.0  # since the first of those attempts began (to now)


@dataclass(frozen=True)
class UnitState:
    """`systemctl show` of the Ollama unit; available=False when systemd cannot be asked."""

    available: bool
    detail: str = ""
    active_state: str = ""
    sub_state: str = ""
    result: str = ""
    n_restarts: int = 0
    main_pid: int = 0
    active_for_s: float | None = None  # since ActiveEnterTimestampMonotonic
    control_group: str = ""
    restarts_recent: int = 0  # NRestarts grew by this within the evidence window


@dataclass(frozen=True)
class MemoryState:
    """The unit's cgroup (v2): memory.current, memory.peak, memory.max, memory.events."""

    available: bool
    detail: str = ""
    current: int | None = None
    peak: int | None = None
    limit: int | None = None  # memory.max; None when "max"
    oom_kills: int = 0
    oom_kills_recent: int = 0


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str = ""
    memory_used: int | None = None
    memory_total: int | None = None
    utilization_percent: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None


@dataclass(frozen=True)
class GpuState:
    """source: "nvml", "nvidia-smi", "none" (no NVIDIA GPU here) or "error"."""

    source: str
    gpus: tuple[GpuReading, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class Progress:
    """Evidence from Ollama's own log (the journal): completions, 503s, loads, errors."""

    readable: bool
    detail: str = ""
    window_s: float = 60.0
    last_completion_age_s: float | None = None  # a 2xx inference request ended this long ago
    completions: int = 0  # within the window
    rejected: int = 0  # 503s within the window
    # A 503 was answered this long ago: the server's HTTP side still answers (not a whole-
    # process hang), though a full queue says nothing about generation.
    last_rejection_age_s: float | None = None
    server_errors: int = 0  # other 5xx within the window
    loading_for_s: float | None = None  # a model load started this long ago, not finished
    gpu_errors: int = 0  # CUDA/driver errors (not out-of-memory) within the window
    last_gpu_error: str = ""
    oom_events: int = 0  # runner or CUDA OOM lines, oom-kill results within the window
    gpu_library: str | None = None  # "cuda", "rocm", "cpu": from the last start-up line


@dataclass(frozen=True)
class Snapshot:
    api: ApiState
    deep: DeepProbe | None = None  # None: not asked (health without --deep)
    unit: UnitState = field(default_factory=lambda: UnitState(available=False, detail="not read"))
    memory: MemoryState = field(
        default_factory=lambda: MemoryState(available=False, detail="not read")
    )
    gpu: GpuState = field(default_factory=lambda: GpuState(source="none"))
    progress: Progress = field(default_factory=lambda: Progress(readable=False, detail="not read"))
    clock_jumped: bool = False  # the wall clock moved unlike the monotonic one


_STATUS = {
    State.OK: HealthStatus.OK,
    State.BUSY: HealthStatus.WARNING,
    State.DEGRADED: HealthStatus.WARNING,
    State.STUCK: HealthStatus.CRITICAL,
    State.HUNG: HealthStatus.CRITICAL,
    State.DOWN: HealthStatus.CRITICAL,
    State.UNKNOWN: HealthStatus.UNKNOWN,
}


@dataclass(frozen=True)
class Verdict:
    """One verdict: the state, the problems behind it, one line per reason, notes."""

    state: State
    problems: tuple[Problem, ...] = ()
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what could not be checked, and why
    critical: bool = False  # a DEGRADED that pages (the GPU is lost)

    @property
    def status(self) -> HealthStatus:
        if self.critical:
            return HealthStatus.CRITICAL
        return _STATUS[self.state]

    @property
    def problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons) if self.reasons else self.state.value
