"""Live GPU readings: NVML (nvidia-ml-py), else `nvidia-smi`, else "no GPU here".

The supervisor keeps NVML initialised between readings (initialising costs
far more than a reading). Whatever fails becomes a GpuState with source
"error" and the reason, never an exception: a lost GPU is evidence, and a
missing NVML is a note, not a verdict.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from typing import Any

from ollama_ops.errors import CommandError
from ollama_ops.health.model import GpuReading, GpuState
from ollama_ops.runtime import Runner

log = logging.getLogger(__name__)

SMI_FIELDS = "index,name,memory.used,memory.total,utilization.gpu,temperature.gpu,power.draw"


def _num(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def parse_smi(text: str) -> tuple[GpuReading, ...]:
    """`nvidia-smi --query-gpu=SMI_FIELDS --format=csv,noheader,nounits` -> readings (MiB -> bytes)."""
    gpus = []
    for line in text.splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) != 7 or not cols[0].isdigit():
            continue
        used, total = _num(cols[2]), _num(cols[3])
        gpus.append(
            GpuReading(
                index=int(cols[0]),
                name=cols[1],
                memory_used=int(used * 1024**2) if used is not None else None,
                memory_total=int(total * 1024**2) if total is not None else None,
                utilization_percent=_num(cols[4]),
                temperature_c=_num(cols[5]),
                power_w=_num(cols[6]),
            )
        )
    return tuple(gpus)


def _field(nvml: Any, name: str, *args: Any) -> Any:
    try:
        return getattr(nvml, name)(*args)
    except Exception as exc:  # NVMLError_NotSupported for one field of one GPU
        log.debug("NVML field: %s", exc)
        return None


class GpuReader:
    """NVML first, nvidia-smi second; ``read()`` never raises."""

    def __init__(
        self, run: Runner, *, nvml: Any = None, which: Callable[[str], str | None] = shutil.which
    ) -> None:
        self.run = run
        self.which = which
        self._nvml = nvml  # a pynvml-like module, injected by tests
        self._nvml_ready = False
        self._nvml_missing = ""

    def _init_nvml(self) -> Any:
        if self._nvml_ready:
            return self._nvml
        if self._nvml_missing:
            return None
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            self._nvml.nvmlInit()
        except (
            Exception
        ) as exc:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded
            self._nvml_missing = (
                str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            )
            return None
        self._nvml_ready = True
        return self._nvml

    def close(self) -> None:
        if self._nvml_ready:
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:
                log.debug("nvmlShutdown: %s", exc)
            self._nvml_ready = False

    def _read_nvml(self, nvml: Any) -> GpuState:
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:  # the driver went away under us: a lost GPU looks like this
            self.close()
            self._nvml_missing = ""
            return GpuState(source="error", detail=f"NVML: {exc}")
        gpus = []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            except Exception as exc:
                return GpuState(source="error", detail=f"NVML GPU {index}: {exc}")
            mem = _field(nvml, "nvmlDeviceGetMemoryInfo", handle)
            util = _field(nvml, "nvmlDeviceGetUtilizationRates", handle)
            temp = _field(nvml, "nvmlDeviceGetTemperature", handle, 0)  # 0: the GPU die
            power = _field(nvml, "nvmlDeviceGetPowerUsage", handle)  # milliwatts
            name = _field(nvml, "nvmlDeviceGetName", handle)
            gpus.append(
                GpuReading(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name or ""),
                    memory_used=int(mem.used) if mem is not None else None,
                    memory_total=int(mem.total) if mem is not None else None,
                    utilization_percent=float(util.gpu) if util is not None else None,
                    temperature_c=float(temp) if temp is not None else None,
                    power_w=float(power) / 1000.0 if power is not None else None,
                )
            )
        return GpuState(source="nvml", gpus=tuple(gpus))

    def read(self) -> GpuState:
        nvml = self._init_nvml()
        if nvml is not None:
            return self._read_nvml(nvml)
        if self.which("nvidia-smi") is None:
            return GpuState(
                source="none", detail=f"no NVML ({self._nvml_missing}) and no nvidia-smi"
            )
        argv = ["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"]
        try:
            done = self.run(argv, check=False, timeout=15)
        except CommandError as exc:
            return GpuState(source="error", detail=f"nvidia-smi: {exc}")
        if done.returncode != 0:
            tail = (done.stdout.strip() or done.stderr.strip()).splitlines()[-1:] or ["no output"]
            return GpuState(
                source="error", detail=f"nvidia-smi exited {done.returncode}: {tail[0][:120]}"
            )
        return GpuState(source="nvidia-smi", gpus=parse_smi(done.stdout))
