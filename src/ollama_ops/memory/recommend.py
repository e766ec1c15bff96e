"""Memory limits from what the service really used: the guide's FAQ rule, with its caveats. Pure.

MemoryHigh = peak + 20 % and MemoryMax = peak + 40 %, where the peak is the
cgroup's own record since the unit started, but never below what the models
loaded now need in RAM (``size - size_vram`` in ``/api/ps``). A peak is not
trusted when the run is young, when no model was loaded since the start
(the idle server's peak), or when the old limit capped it (OOM kills, or the
peak sitting at MemoryMax): the recommendation says so and ``--apply``
refuses it unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass

from ollama_ops.memory.cgroup import CgroupMemory
from ollama_ops.model.config import format_size

MiB = 1024**2
HIGH_FACTOR = 1.20
MAX_FACTOR = 1.40
MIN_AGE_S = 3600.0  # a peak from under an hour of service has likely not seen a busy period


@dataclass(frozen=True)
class LoadedModel:
    name: str
    size: int  # bytes, RAM + VRAM
    size_vram: int

    @property
    def ram(self) -> int:
        return max(0, self.size - self.size_vram)


@dataclass(frozen=True)
class Observation:
    unit: str
    memory: CgroupMemory
    host_memory: int
    uptime_s: float | None  # None: unknown (not the live host)
    loads_since_start: int | None  # None: the journal could not tell
    loaded: tuple[LoadedModel, ...] | None  # None: /api/ps did not answer


@dataclass(frozen=True)
class Recommendation:
    memory_high: int
    memory_max: int
    base: int
    base_reason: str
    warnings: tuple[str, ...]  # why the peak is not to be trusted (empty: trusted)
    notes: tuple[str, ...]

    @property
    def trusted(self) -> bool:
        return not self.warnings


def _up_mib(n: float) -> int:
    return int(-(-n // MiB)) * MiB


def age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def models_ram(loaded: tuple[LoadedModel, ...] | None) -> int:
    return sum(m.ram for m in loaded or ())


def _warnings(obs: Observation, peak: int) -> list[str]:
    cg = obs.memory
    out: list[str] = []
    if cg.peak is None:
        out.append(
            "this kernel keeps no peak (memory.peak needs Linux 5.19): the current usage "
            "stands in for it"
        )
    if obs.uptime_s is not None and obs.uptime_s < MIN_AGE_S:
        out.append(
            f"the service started {age(obs.uptime_s)} ago: the peak may miss a busy period; "
            "measure after an hour or more of real traffic"
        )
    if obs.loads_since_start == 0 and not obs.loaded:
        out.append(
            f"no model was loaded since the start: {format_size(peak)} is the idle server's peak; "
            "load your models under real traffic first"
        )
    if cg.oom_kills:
        out.append(
            f"the unit was OOM-killed {cg.oom_kills} time(s) in this run: the peak is the old "
            "limit, not the need; raise MemoryMax, run again, then measure"
        )
    elif cg.max is not None and cg.limit_hits and peak >= cg.max * 0.95:
        out.append(
            f"the peak sits at MemoryMax ({format_size(cg.max)}, hit {cg.limit_hits} times): the "
            "old limit capped it"
        )
    return out


def recommend(obs: Observation) -> Recommendation:
    cg = obs.memory
    peak = cg.peak if cg.peak is not None else cg.current
    need = models_ram(obs.loaded)
    since = f" over {age(obs.uptime_s)}" if obs.uptime_s is not None else ""
    if need > peak:
        names = ", ".join(m.name for m in obs.loaded or () if m.ram)
        base = need
        base_reason = (
            f"the loaded models need {format_size(need)} of RAM ({names}), more than the "
            f"measured peak {format_size(peak)}"
        )
    else:
        base = peak
        base_reason = f"measured peak {format_size(peak)}{since} (cgroup v{cg.version})"
    high = _up_mib(base * HIGH_FACTOR)
    mx = _up_mib(base * MAX_FACTOR)
    notes: list[str] = []
    if mx > obs.host_memory:
        mx = obs.host_memory // MiB * MiB
        high = min(high, int(mx * HIGH_FACTOR / MAX_FACTOR) // MiB * MiB)
        notes.append(
            f"peak +40 % exceeds the host's {format_size(obs.host_memory)} RAM: MemoryMax capped "
            "at the RAM; this host is small for this load"
        )
    if need and need <= peak:
        notes.append(f"the loaded models need {format_size(need)} of RAM, within the peak")
    return Recommendation(high, mx, base, base_reason, tuple(_warnings(obs, peak)), tuple(notes))
