"""Stand-ins for NVML and nvidia-smi, answering with the recorded values of real GPUs.

``FakeNvml`` has the function names, signatures and constants of nvidia-ml-py's
``pynvml`` (tests/test_gpu_readers.py checks them against the installed
package) and serves a tests/fixtures/gpu/nvml/*.json file. Setters change
its state, so a read-back sees them; ``deny`` makes them fail like a
non-root caller, ``ignore_power`` makes the driver accept and not apply.

``FakeSmi`` is a Runner that answers ``nvidia-smi -q -x`` with a recorded
XML capture and ``--query-gpu`` in the real CSV format, from its state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollama_ops.errors import CommandError
from ollama_ops.host import proc
from ollama_ops.host.nvidia_smi import QUERY_FIELDS, parse_query_xml

GPU_FIXTURES = Path(__file__).parent / "fixtures" / "gpu"


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__({3: "Not Supported", 4: "Insufficient Permissions"}.get(value, "Error"))
        self.value = value


@dataclass
class PciInfo:
    busId: bytes


@dataclass
class FakeNvml:
    """The subset of ``pynvml`` that ollama-ops calls, over recorded devices."""

    devices: list[dict[str, Any]]
    driver: str = ""
    deny: bool = False
    ignore_power: bool = False
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    locks: dict[int, tuple[int, int]] = field(default_factory=dict)

    NVMLError = NVMLError
    NVML_FEATURE_DISABLED = 0
    NVML_FEATURE_ENABLED = 1
    NVML_CLOCK_GRAPHICS = 0
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NO_PERMISSION = 4

    @classmethod
    def from_fixture(cls, *names: str) -> FakeNvml:
        devices: list[dict[str, Any]] = []
        driver = ""
        for name in names:
            data = json.loads((GPU_FIXTURES / "nvml" / f"{name}.json").read_text())
            devices += [dict(d) for d in data["devices"]]
            driver = data["driver"]
        return cls(devices, driver)

    def _value(self, handle: int, key: str) -> Any:
        value = self.devices[handle][key]
        if value is None:
            raise NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return value

    def _setter(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if self.deny:
            raise NVMLError(self.NVML_ERROR_NO_PERMISSION)

    # -- queries
    def nvmlInit(self) -> None:
        self.calls.append(("nvmlInit",))

    def nvmlShutdown(self) -> None:
        self.calls.append(("nvmlShutdown",))

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.devices):
            raise NVMLError(2)
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return str(self._value(handle, "name"))

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return str(self._value(handle, "uuid"))

    def nvmlDeviceGetPciInfo(self, handle: int) -> PciInfo:
        return PciInfo(str(self._value(handle, "busId")).encode())

    def nvmlDeviceGetPersistenceMode(self, handle: int) -> int:
        return int(self._value(handle, "persistence_mode"))

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: int) -> list[int]:
        return list(self._value(handle, "power_limit_constraints_mw"))

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: int) -> int:
        return int(self._value(handle, "power_default_limit_mw"))

    def nvmlDeviceGetPowerManagementLimit(self, handle: int) -> int:
        return int(self._value(handle, "power_limit_mw"))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return int(self._value(handle, "enforced_power_limit_mw"))

    def nvmlDeviceGetMaxClockInfo(self, handle: int, type: int) -> int:
        return int(self._value(handle, "max_clock_graphics_mhz"))

    def nvmlDeviceGetSupportedMemoryClocks(self, handle: int) -> list[int]:
        return [int(m) for m in self._value(handle, "supported_clocks_mhz")]

    def nvmlDeviceGetSupportedGraphicsClocks(
        self,
        handle: int,
        memoryClockMHz: int,
    ) -> list[int]:
        return list(self._value(handle, "supported_clocks_mhz")[str(memoryClockMHz)])

    # -- setters
    def nvmlDeviceSetPersistenceMode(self, handle: int, mode: int) -> None:
        self._setter("nvmlDeviceSetPersistenceMode", handle, mode)
        self.devices[handle]["persistence_mode"] = mode

    def nvmlDeviceSetPowerManagementLimit(self, handle: int, limit: int) -> None:
        self._setter("nvmlDeviceSetPowerManagementLimit", handle, limit)
        if not self.ignore_power:
            self.devices[handle]["power_limit_mw"] = limit
            self.devices[handle]["enforced_power_limit_mw"] = limit

    def nvmlDeviceSetGpuLockedClocks(
        self,
        handle: int,
        minGpuClockMHz: int,
        maxGpuClockMHz: int,
    ) -> None:
        self._setter("nvmlDeviceSetGpuLockedClocks", handle, minGpuClockMHz, maxGpuClockMHz)
        self.locks[handle] = (minGpuClockMHz, maxGpuClockMHz)

    def nvmlDeviceResetGpuLockedClocks(self, handle: int) -> None:
        self._setter("nvmlDeviceResetGpuLockedClocks", handle)
        self.locks.pop(handle, None)


def _w(mw: int | None) -> str:
    return "[N/A]" if mw is None else f"{mw / 1000:.2f} W"


@dataclass
class FakeSmi:
    """A Runner for ``nvidia-smi``: XML from a capture, CSV and setters from its state."""

    xml_fixture: str
    exit_code: int = 0  # e.g. 4: every setter fails with "Insufficient Permissions"
    calls: list[tuple[str, ...]] = field(default_factory=list)
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: bool = False

    def __post_init__(self) -> None:
        self.xml = (GPU_FIXTURES / "smi-xml" / f"{self.xml_fixture}.xml").read_text()
        for gpu in parse_query_xml(self.xml):
            self.state[gpu.selector] = {
                "index": gpu.index,
                "reading": gpu,
                "persistence": gpu.persistence,
                "power": gpu.power_limit_w,
            }

    def __call__(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = 60.0,
        env: Mapping[str, str] | None = None,
        input_text: str | None = None,
    ) -> proc.Completed:
        args = tuple(argv)
        self.calls.append(args)
        if self.missing:
            raise CommandError(f"{argv[0]}: command not found") from FileNotFoundError(argv[0])
        if args[1:] == ("-q", "-x"):
            return proc.Completed(args, 0, self.xml, "")
        if args[1].startswith("--query-gpu="):
            return proc.Completed(args, 0, self._csv(), "")
        if self.exit_code:
            err = (
                "Unable to set: Insufficient Permissions\nTerminating early due to previous errors."
            )
            return proc.Completed(args, self.exit_code, "", err)
        selector = args[1].removeprefix("--id=")
        gpu = self.state[selector]
        option, _, value = args[2].partition("=")
        if option == "--persistence-mode":
            gpu["persistence"] = value == "1"
        elif option == "--power-limit":
            gpu["power"] = float(value)
        return proc.Completed(args, 0, "All done.\n", "")

    def _csv(self) -> str:
        units = {
            "power.limit": " [W]",
            "enforced.power.limit": " [W]",
            "clocks.max.graphics": " [MHz]",
        }
        units |= {
            "power.default_limit": " [W]",
            "power.min_limit": " [W]",
            "power.max_limit": " [W]",
        }
        rows = [", ".join(f + units.get(f, "") for f in QUERY_FIELDS)]
        for selector, gpu in self.state.items():
            r = gpu["reading"]
            mode = {True: "Enabled", False: "Disabled", None: "[N/A]"}[gpu["persistence"]]
            power = None if gpu["power"] is None else round(gpu["power"] * 1000)
            cells = [
                str(gpu["index"]), r.name, r.uuid, selector if ":" in selector else r.pci_bus_id,
                r.driver, mode, _w(power), _w(power),
                _w(None if r.power_default_w is None else round(r.power_default_w * 1000)),
                _w(None if r.power_min_w is None else round(r.power_min_w * 1000)),
                _w(None if r.power_max_w is None else round(r.power_max_w * 1000)),
                f"{r.clock_max_mhz} MHz",
            ]  # fmt: skip
            rows.append(", ".join(cells))
        return "\n".join(rows) + "\n"
