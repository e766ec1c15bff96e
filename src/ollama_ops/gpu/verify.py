"""Compare what the GPUs report after a change with what was planned. Pure.

Power limits compare within half a watt (NVML keeps milliwatts; nvidia-smi
prints two decimals). Persistence mode compares exactly. Locked clocks have
no read-back, so they are reported as "accepted", never as verified.
"""

from __future__ import annotations

from dataclasses import dataclass

from ollama_ops.gpu.model import GpuReading, GpuTarget

TOLERANCE_W = 0.5


@dataclass(frozen=True)
class Check:
    index: int
    what: str
    planned: str
    read: str
    ok: bool | None  # None: cannot be read back

    def line(self) -> str:
        mark = {True: "ok", False: "MISMATCH", None: "accepted"}[self.ok]
        return f"GPU {self.index} {self.what}: planned {self.planned}, reads {self.read} [{mark}]"


def _match(readings: tuple[GpuReading, ...], target: GpuReading) -> GpuReading | None:
    for r in readings:
        if target.uuid and r.uuid == target.uuid and target.selector == target.uuid:
            return r
        if target.pci_bus_id and r.pci_bus_id == target.pci_bus_id:
            return r
    return next((r for r in readings if r.index == target.index), None)


def _mode(value: bool | None) -> str:
    return {True: "Enabled", False: "Disabled", None: "N/A"}[value]


def _watts(value: float | None) -> str:
    return "N/A" if value is None else f"{value:g} W"


def check(targets: tuple[GpuTarget, ...], readback: tuple[GpuReading, ...]) -> list[Check]:
    """One Check per planned value."""
    checks: list[Check] = []
    for t in targets:
        now = _match(readback, t.reading)
        if t.persistence is not None:
            got = now.persistence if now else None
            checks.append(
                Check(
                    t.index,
                    "persistence mode",
                    _mode(t.persistence),
                    _mode(got),
                    got == t.persistence,
                )
            )
        if t.power_limit_w is not None:
            got_w = None if now is None else (now.power_limit_w or now.power_enforced_w)
            ok = got_w is not None and abs(got_w - t.power_limit_w) <= TOLERANCE_W
            checks.append(Check(t.index, "power limit", _watts(t.power_limit_w), _watts(got_w), ok))
        if t.lock_clock_mhz is not None:
            checks.append(
                Check(
                    t.index,
                    "locked clocks",
                    f"{t.lock_clock_mhz} MHz",
                    "no read-back in NVML or nvidia-smi",
                    None,
                )
            )
    return checks


def mismatches(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.ok is False]
