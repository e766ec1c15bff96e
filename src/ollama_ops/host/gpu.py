"""NVIDIA GPU settings on the live host: NVML (nvidia-ml-py) first, ``nvidia-smi`` as fallback.

Both backends read every GPU into :class:`GpuReading` and change persistence
mode, the power limit and locked clocks. NVML is reached through the module
the runtime hands over (``Runtime.load_nvml``), so tests pass a stand-in
that answers with recorded values; nvidia-smi runs through the runtime's
one subprocess runner. Units: NVML speaks milliwatts and MHz, GpuReading
watts and MHz.

Locked clocks have no read-back in NVML or nvidia-smi (there is a setter
and a reset, no getter): verification can only say the lock was accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ollama_ops.errors import CommandError, OpsError
from ollama_ops.gpu.model import GpuReading
from ollama_ops.host import nvidia_smi
from ollama_ops.host.nvml import normalize_pci_bus_id

if TYPE_CHECKING:
    from ollama_ops.runtime import Runner

log = logging.getLogger(__name__)

NVIDIA_SMI = "nvidia-smi"


class NoNvidiaGpu(Exception):
    """Neither NVML nor nvidia-smi is there: the host has no NVIDIA driver (not an error)."""


class GpuBackend(Protocol):
    """Reads and changes GPU settings; tests pass fakes built from recorded values."""

    name: str

    def read(self) -> tuple[GpuReading, ...]: ...
    def set_persistence(self, gpu: GpuReading, on: bool) -> None: ...
    def set_power_limit(self, gpu: GpuReading, watts: float) -> None: ...
    def lock_clocks(self, gpu: GpuReading, mhz: int) -> None: ...
    def reset_clocks(self, gpu: GpuReading) -> None: ...


# ---------------------------------------------------------------- NVML


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _watts(milliwatts: object) -> float | None:
    return int(milliwatts) / 1000.0 if isinstance(milliwatts, int) and milliwatts > 0 else None


@dataclass
class NvmlBackend:
    """GPU settings through an NVML module (``pynvml`` from nvidia-ml-py, or a stand-in)."""

    nvml: Any
    name: str = "nvml"
    _ready: bool = field(default=False, repr=False)

    def _init(self) -> None:
        if not self._ready:
            try:
                self.nvml.nvmlInit()
            except Exception as exc:  # NVMLError, or OSError from a broken libnvidia-ml
                raise NoNvidiaGpu(f"NVML: {exc}") from exc
            self._ready = True

    def close(self) -> None:
        if self._ready:
            try:
                self.nvml.nvmlShutdown()
            except Exception as exc:
                log.debug("nvmlShutdown: %s", exc)
            self._ready = False

    def _get(self, fn: str, handle: object, *args: object) -> Any:
        """One query; None when this GPU does not support it."""
        try:
            return getattr(self.nvml, fn)(handle, *args)
        except self.nvml.NVMLError as exc:
            log.debug("NVML %s: %s", fn, exc)
            return None

    def _clocks(self, handle: object) -> tuple[int, ...]:
        found: set[int] = set()
        for mem in self._get("nvmlDeviceGetSupportedMemoryClocks", handle) or ():
            for mhz in self._get("nvmlDeviceGetSupportedGraphicsClocks", handle, mem) or ():
                if isinstance(mhz, int) and mhz > 0:
                    found.add(mhz)
        return tuple(sorted(found, reverse=True))

    def _reading(self, index: int, driver: str) -> GpuReading:
        nv = self.nvml
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        limits = self._get("nvmlDeviceGetPowerManagementLimitConstraints", handle)
        low, high = limits if isinstance(limits, (list, tuple)) and len(limits) == 2 else (0, 0)
        mode = self._get("nvmlDeviceGetPersistenceMode", handle)
        pci = self._get("nvmlDeviceGetPciInfo", handle)
        clock = self._get("nvmlDeviceGetMaxClockInfo", handle, nv.NVML_CLOCK_GRAPHICS)
        name = self._get("nvmlDeviceGetName", handle)
        uuid = self._get("nvmlDeviceGetUUID", handle)
        return GpuReading(
            index=index,
            name=_text(name) if name is not None else "",
            uuid=_text(uuid) if uuid is not None else "",
            pci_bus_id=normalize_pci_bus_id(_text(getattr(pci, "busId", "") or "")),
            persistence=None if mode is None else mode == nv.NVML_FEATURE_ENABLED,
            power_limit_w=_watts(self._get("nvmlDeviceGetPowerManagementLimit", handle)),
            power_enforced_w=_watts(self._get("nvmlDeviceGetEnforcedPowerLimit", handle)),
            power_default_w=_watts(self._get("nvmlDeviceGetPowerManagementDefaultLimit", handle)),
            power_min_w=_watts(low),
            power_max_w=_watts(high),
            clock_max_mhz=clock if isinstance(clock, int) and clock > 0 else None,
            supported_clocks_mhz=self._clocks(handle),
            driver=driver,
            source="nvml",
        )

    def read(self) -> tuple[GpuReading, ...]:
        self._init()
        nv = self.nvml
        try:
            driver = _text(nv.nvmlSystemGetDriverVersion())
        except nv.NVMLError:
            driver = ""
        try:
            count = int(nv.nvmlDeviceGetCount())
            return tuple(self._reading(i, driver) for i in range(count))
        except nv.NVMLError as exc:
            raise CommandError(
                f"NVML failed reading the GPUs ({exc}); try `nvidia-smi -q`"
            ) from exc

    def _set(self, what: str, gpu: GpuReading, fn: str, *args: object) -> None:
        self._init()
        nv = self.nvml
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(gpu.index)
            getattr(nv, fn)(handle, *args)
        except nv.NVMLError as exc:
            if getattr(exc, "value", None) == nv.NVML_ERROR_NO_PERMISSION:
                raise OpsError(
                    f"NVML refused to set {what} on {gpu.label} (Insufficient Permissions); "
                    "run as root"
                ) from exc
            raise CommandError(f"NVML could not set {what} on {gpu.label}: {exc}") from exc

    def set_persistence(self, gpu: GpuReading, on: bool) -> None:
        mode = self.nvml.NVML_FEATURE_ENABLED if on else self.nvml.NVML_FEATURE_DISABLED
        self._set("persistence mode", gpu, "nvmlDeviceSetPersistenceMode", mode)

    def set_power_limit(self, gpu: GpuReading, watts: float) -> None:
        milliwatts = round(watts * 1000)
        self._set("the power limit", gpu, "nvmlDeviceSetPowerManagementLimit", milliwatts)

    def lock_clocks(self, gpu: GpuReading, mhz: int) -> None:
        self._set("locked clocks", gpu, "nvmlDeviceSetGpuLockedClocks", mhz, mhz)

    def reset_clocks(self, gpu: GpuReading) -> None:
        self._set("the clock lock", gpu, "nvmlDeviceResetGpuLockedClocks")


# ---------------------------------------------------------------- nvidia-smi


@dataclass
class SmiBackend:
    """GPU settings through ``nvidia-smi``, run by the runtime's runner."""

    run: Runner
    program: str = NVIDIA_SMI
    name: str = "nvidia-smi"

    def _call(self, args: list[str], what: str) -> str:
        try:
            done = self.run([self.program, *args], check=False, timeout=60.0)
        except CommandError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                raise NoNvidiaGpu(f"{self.program} is not installed") from exc
            raise
        out = (done.stdout + "\n" + done.stderr).strip()
        if done.returncode != 0:
            last = (out.splitlines() or ["no output"])[-1].strip()
            # nvidia-smi exit codes: 4 no permission, 9 driver not loaded, 6 no such GPU.
            if done.returncode == 4 or "permission" in out.lower():
                raise OpsError(f"nvidia-smi refused to {what} ({last}); run as root")
            if done.returncode == 9 or "couldn't communicate" in out.lower():
                raise NoNvidiaGpu(last)
            if "no devices were found" in out.lower():
                raise NoNvidiaGpu(last)
            raise CommandError(f"nvidia-smi {' '.join(args)} exited {done.returncode}: {last}")
        return done.stdout

    def read(self) -> tuple[GpuReading, ...]:
        text = self._call(list(nvidia_smi.XML_ARGV), "read the GPUs")
        try:
            return nvidia_smi.parse_query_xml(text)
        except CommandError as exc:
            log.warning("%s; falling back to --query-gpu (no supported clocks)", exc)
        return self.read_csv()

    def read_csv(self) -> tuple[GpuReading, ...]:
        """The quick read (no supported clocks): read-back after apply."""
        return nvidia_smi.parse_query_csv(self._call(list(nvidia_smi.QUERY_ARGV), "read the GPUs"))

    def set_persistence(self, gpu: GpuReading, on: bool) -> None:
        self._call(nvidia_smi.persistence_argv(gpu.selector, on), "set persistence mode")

    def set_power_limit(self, gpu: GpuReading, watts: float) -> None:
        self._call(nvidia_smi.power_limit_argv(gpu.selector, watts), "set the power limit")

    def lock_clocks(self, gpu: GpuReading, mhz: int) -> None:
        self._call(nvidia_smi.lock_clocks_argv(gpu.selector, mhz), "lock the clocks")

    def reset_clocks(self, gpu: GpuReading) -> None:
        self._call(nvidia_smi.reset_clocks_argv(gpu.selector), "reset the clock lock")


# ---------------------------------------------------------------- choosing


def import_pynvml() -> Any | None:
    """The ``pynvml`` module of nvidia-ml-py, or None when it is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def find_backend(
    load_nvml: Callable[[], Any | None], run: Runner
) -> tuple[GpuBackend, tuple[GpuReading, ...]]:
    """The first backend that can read the GPUs, and what it read.

    NVML first; nvidia-smi when NVML is missing or cannot initialise.
    Raises NoNvidiaGpu (with both reasons) when neither finds a GPU.
    """
    why: list[str] = []
    module = load_nvml()
    if module is None:
        why.append("nvidia-ml-py not installed")
    else:
        nvml = NvmlBackend(module)
        try:
            found = nvml.read()
        except NoNvidiaGpu as exc:
            why.append(str(exc))
        else:
            if found:
                return nvml, found
            why.append("NVML sees no GPU")
    smi = SmiBackend(run)
    try:
        found = smi.read()
    except NoNvidiaGpu as exc:
        why.append(str(exc))
    else:
        if found:
            return smi, found
        why.append("nvidia-smi lists no GPU")
    raise NoNvidiaGpu("; ".join(why))
