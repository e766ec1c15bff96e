"""NVIDIA GPUs through NVML (nvidia-ml-py), loaded only when asked for.

Returns None whenever NVML cannot answer, so the caller falls back to
``nvidia-smi``. numa_node is left None: the prober reads it from sysfs.
"""

from __future__ import annotations

import logging
from typing import Any

from ollama_ops.model.facts import Gpu, GpuVendor

log = logging.getLogger(__name__)


def normalize_pci_bus_id(bus_id: str) -> str:
    """NVML/nvidia-smi style ``00000000:17:00.0`` -> sysfs style ``0000:17:00.0``."""
    bus_id = bus_id.strip().lower()
    domain, sep, rest = bus_id.partition(":")
    if not sep or rest.count(":") != 1:
        return bus_id
    try:
        return f"{int(domain, 16):04x}:{rest}"
    except ValueError:
        return bus_id


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _nvml_field(nvml: Any, fn_name: str, handle: object, *args: object) -> object | None:
    """One NVML query; None when this GPU does not support it."""
    fn = getattr(nvml, fn_name, None)
    if fn is None:  # an older nvidia-ml-py
        return None
    try:
        result: object = fn(handle, *args)
    except nvml.NVMLError as exc:
        log.debug("NVML %s: %s", fn_name, exc)
        return None
    return result


def read_nvml_gpus() -> tuple[Gpu, ...] | None:
    """NVIDIA GPUs through NVML; None when NVML is missing or fails.

    numa_node is left None: the caller reads it from sysfs by bus id.
    """
    try:
        import pynvml
    except ImportError:
        log.debug("pynvml is not installed; trying nvidia-smi")
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError, or OSError from a broken library
        log.debug("NVML unavailable (%s); trying nvidia-smi", exc)
        return None
    try:
        gpus: list[Gpu] = []
        for index in range(int(pynvml.nvmlDeviceGetCount())):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = _nvml_field(pynvml, "nvmlDeviceGetName", handle)
            mem = _nvml_field(pynvml, "nvmlDeviceGetMemoryInfo", handle)
            limits = _nvml_field(pynvml, "nvmlDeviceGetPowerManagementLimitConstraints", handle)
            clock = _nvml_field(pynvml, "nvmlDeviceGetMaxClockInfo", handle, pynvml.NVML_CLOCK_SM)
            pci = _nvml_field(pynvml, "nvmlDeviceGetPciInfo", handle)
            uuid = _nvml_field(pynvml, "nvmlDeviceGetUUID", handle)
            power: float | None = None
            if isinstance(limits, (list, tuple)) and len(limits) == 2 and limits[1]:
                power = int(limits[1]) / 1000.0  # mW -> W
            gpus.append(
                Gpu(
                    index=index,
                    vendor=GpuVendor.NVIDIA,
                    name=_text(name) if name is not None else "",
                    memory_bytes=int(getattr(mem, "total", 0) or 0),
                    power_limit_max_w=power,
                    clock_max_mhz=clock if isinstance(clock, int) and clock > 0 else None,
                    pci_bus_id=normalize_pci_bus_id(_text(getattr(pci, "busId", "") or "")),
                    uuid=(_text(uuid).strip() or None) if uuid is not None else None,
                )
            )
        return tuple(gpus)
    except Exception as exc:  # an NVMLError outside a single field
        log.warning("NVML failed (%s); trying nvidia-smi", exc)
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown: %s", exc)
