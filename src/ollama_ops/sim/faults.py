"""Injectable faults: names, arguments, and the state shared with the server.

A fault is written ``NAME`` or ``NAME:ARG`` (``crash:5``, ``slow-load:30``).

=============  ==========================================================  =========
name           effect                                                      ARG
=============  ==========================================================  =========
hang           the whole process stops answering (the event loop blocks;   --
               connections are accepted by the kernel and never served)
generate-hang  ``/`` and the model list answer, inference never produces   --
               a byte (requests wait until the fault is cleared)
stuck-unload   every loaded model is told to unload and never does:        --
               ``/api/ps`` lists it with ``expires_at`` in the past
               ("Stopping..."), requests for it wait, SIGTERM is ignored
crash          the process exits with status 2 and a Go-style panic       seconds (0)
slow-start     ``serve`` sleeps before listening (start-up only)           seconds (10)
slow-load      each model load takes ARG seconds instead of the profile's  seconds (60)
gpu-lost       running streams fail with a CUDA error, loaded models are   --
               dropped; later loads fall back to the CPU (size_vram 0)
cpu-fallback   later loads put ARG of each model on the CPU (size_vram <   share (0.5)
               size), which makes its tokens slower
runner-oom     the runners die of ``CUDA error: out of memory`` and every  --
               loaded model is expired (one-shot; with nothing loaded,
               the next load fails so)
memory-grow    allocates and touches ARG MiB every second until cleared    MiB/s (64)
=============  ==========================================================  =========
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

FAULTS: dict[str, float | None] = {
    "hang": None,
    "generate-hang": None,
    "stuck-unload": None,
    "crash": 0.0,
    "slow-start": 10.0,
    "slow-load": 60.0,
    "gpu-lost": None,
    "cpu-fallback": 0.5,
    "runner-oom": None,
    "memory-grow": 64.0,
}

#: The largest argument of each fault that takes one: a week for times, the whole
#: model for cpu-fallback, 4 GiB/s for memory-grow (a larger rate only fails
#: sooner, and can take the host down).
MAX_ARG: dict[str, float] = {
    "crash": 604800.0,
    "slow-start": 604800.0,
    "slow-load": 604800.0,
    "cpu-fallback": 1.0,
    "memory-grow": 4096.0,
}

CUDA_ERROR = "CUDA error: unknown error"
#: A load (or a request waiting for one) while the GPU is lost.
GPU_LOST_LOAD_ERROR = "llama runner process has terminated: " + CUDA_ERROR
#: A stream that was running when the GPU went away.
GPU_LOST_STREAM_ERROR = "an error was encountered while running the model: " + CUDA_ERROR
#: What a request gets when its runner died of CUDA OOM.
RUNNER_OOM_ERROR = "llama runner process has terminated: CUDA error: out of memory"

_GGML_CUDA = "/go/src/github.com/ollama/ollama/ml/backend/ggml/ggml/src/ggml-cuda/ggml-cuda.cu"
#: What the runner child writes to stderr (the journal) when the GPU goes away.
CUDA_UNKNOWN_LINES = (
    "CUDA error: unknown error\n"
    f"  current device: 0, in function ggml_backend_cuda_synchronize at {_GGML_CUDA}:2437\n"
    "  cudaStreamSynchronize(cuda_ctx->stream())\n"
    f"{_GGML_CUDA}:77: CUDA error\n"
)
#: ... and when an allocation fails.
CUDA_OOM_LINES = (
    "CUDA error: out of memory\n"
    f"  current device: 0, in function alloc at {_GGML_CUDA}:453\n"
    "  cuMemCreate(&handle, reserve_size, &prop, 0)\n"
    f"{_GGML_CUDA}:77: CUDA error\n"
)


class FaultError(ValueError):
    """A fault spec did not parse."""


def parse_fault(spec: str) -> tuple[str, float | None]:
    name, sep, arg = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in FAULTS:
        raise FaultError(f"unknown fault {name!r}; known faults: {', '.join(sorted(FAULTS))}")
    default = FAULTS[name]
    if not sep:
        return name, default
    if default is None:
        raise FaultError(f"fault {name!r} takes no argument")
    try:
        value = float(arg)
    except ValueError:
        raise FaultError(f"fault {name!r}: {arg!r} is not a number") from None
    top = MAX_ARG[name]
    if not 0 <= value <= top:  # also refuses nan and inf
        raise FaultError(f"fault {name!r}: the argument must be a number from 0 to {top:g}")
    return name, value


def parse_fault_list(text: str) -> list[tuple[str, float | None]]:
    return [parse_fault(s) for s in text.split(",") if s.strip()]


Listener = Callable[[str, bool], None]


class FaultState:
    """The active faults. Changes notify listeners and wake waiters."""

    def __init__(self) -> None:
        self.active: dict[str, float | None] = {}
        self._listeners: list[Listener] = []
        self._changed: asyncio.Event | None = None

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def is_set(self, name: str) -> bool:
        return name in self.active

    def arg(self, name: str) -> float | None:
        return self.active.get(name)

    def set(self, name: str, arg: float | None) -> None:
        self.active[name] = arg
        self._notify(name, True)

    def clear(self, name: str) -> None:
        if self.active.pop(name, "absent") != "absent":
            self._notify(name, False)

    def clear_all(self) -> None:
        for name in list(self.active):
            self.clear(name)

    def apply(self, set_specs: Iterable[str], clear_names: Iterable[str]) -> None:
        """Parse everything first so that a bad spec changes nothing."""
        to_set = [parse_fault(s) for s in set_specs]
        to_clear: list[str] = []
        for raw in clear_names:
            n = raw.strip().lower()
            if n in ("*", "all"):
                to_clear.extend(self.active)
            elif n in FAULTS:
                to_clear.append(n)
            else:
                raise FaultError(f"unknown fault {n!r}")
        for n in to_clear:
            self.clear(n)
        for name, arg in to_set:
            self.set(name, arg)

    def snapshot(self) -> dict[str, float | None]:
        return dict(self.active)

    async def wait_change(self, timeout: float | None = None) -> None:
        """Wait until any fault changes (or the timeout passes)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        ev = self._changed
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout)

    def _notify(self, name: str, on: bool) -> None:
        ev, self._changed = self._changed, None
        if ev is not None:
            ev.set()
        for fn in list(self._listeners):
            fn(name, on)
