"""The injected host: the only way code reaches the world outside the process.

A :class:`Runtime` carries the root directory it works on, whether that root
is the live system, the subprocess runner, systemctl, the Ollama HTTP client,
NVML, the hostname, the clock and sleep. The CLI builds one per command
(httpie's ``Environment``, mkosi's ``Context``); tests build one with fakes
instead of monkeypatching modules. Nothing here does I/O on import.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ollama_ops.host import proc
from ollama_ops.host.ollama_api import HttpOllama, OllamaApi
from ollama_ops.host.systemd import Systemctl, SystemManager, require

if TYPE_CHECKING:
    from ollama_ops.model.facts import Gpu


class Runner(Protocol):
    """The signature of :func:`ollama_ops.host.proc.run`."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = 60.0,
        env: Mapping[str, str] | None = None,
        input_text: str | None = None,
    ) -> proc.Completed: ...


def _read_nvml() -> tuple[Gpu, ...] | None:
    from ollama_ops.host.nvml import read_nvml_gpus  # loads nvidia-ml-py only when asked

    return read_nvml_gpus()


def _import_pynvml() -> Any | None:
    from ollama_ops.host.gpu import import_pynvml  # `gpu` changes settings through this module

    return import_pynvml()


def is_live_root(root: Path) -> bool:
    """Whether ``root`` is this machine's own ``/`` (symlinks resolved)."""
    return os.path.realpath(root) == "/"


@dataclass(frozen=True)
class Runtime:
    """Everything a command may touch, injectable as a whole."""

    root: Path = Path("/")
    run: Runner = proc.run
    ollama: OllamaApi = field(default_factory=HttpOllama)
    nvml: Callable[[], tuple[Gpu, ...] | None] = _read_nvml
    load_nvml: Callable[[], Any | None] = _import_pynvml  # the pynvml module, or a stand-in
    hostname: Callable[[], str] = socket.gethostname
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    make_systemctl: Callable[[], SystemManager] | None = None
    # None: decide from root. Tests set it to treat a temporary tree as live.
    live_override: bool | None = None

    @property
    def live(self) -> bool:
        if self.live_override is not None:
            return self.live_override
        return is_live_root(self.root)

    def systemctl(self) -> SystemManager:
        """The system manager of the live host (or the injected fake)."""
        if self.make_systemctl is not None:
            return self.make_systemctl()
        require("systemctl")
        return Systemctl(self.run)

    def with_root(self, root: Path) -> Runtime:
        from dataclasses import replace

        return replace(self, root=root)
