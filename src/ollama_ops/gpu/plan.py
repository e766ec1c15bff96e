"""GPU readings + the [gpu] config -> what each GPU should be set to, with reasons. Pure.

Rules, per GPU, from what the GPU itself reports:

* persistence mode on (the driver stays initialised between clients, so a
  model load does not pay the GPU's start-up), unless the config says no or
  the GPU does not report the mode;
* the power limit the operator asked for (watts or a percentage of the
  card's default), refused unless it lies inside the card's own min-max
  range; otherwise the card's default limit, which undoes a throttle left by
  an earlier ``nvidia-smi -pl``;
* clocks locked only when asked, and only to a graphics clock the card lists
  as supported.

Bad input (an index that does not exist, a value outside the card's range,
an unsupported clock) raises PlanError naming the GPU, the value and what
would fit; nothing has been changed at that point.
"""

from __future__ import annotations

import bisect

from ollama_ops.errors import PlanError
from ollama_ops.gpu.model import GpuPlan, GpuReading, GpuTarget
from ollama_ops.gpu.spec import ClockSpec, PowerSpec
from ollama_ops.model.config import GpuConfig


def _fmt_w(watts: float) -> str:
    return f"{watts:g} W"


def select(readings: tuple[GpuReading, ...], wanted: tuple[int, ...] | None) -> list[GpuReading]:
    """The GPUs named by ``wanted`` (None: all); PlanError for an index the host lacks."""
    by_index = {r.index: r for r in readings}
    if wanted is None:
        return sorted(readings, key=lambda r: r.index)
    missing = [i for i in wanted if i not in by_index]
    if missing:
        have = ", ".join(str(i) for i in sorted(by_index)) or "none"
        raise PlanError(
            f"GPU index {missing[0]} does not exist on this host (its NVIDIA GPUs: {have}); "
            "use an index from `ollama-ops gpu status` or `nvidia-smi -L`"
        )
    return [by_index[i] for i in wanted]


def power_target(gpu: GpuReading, asked: PowerSpec | None) -> tuple[float | None, str]:
    """The power limit for ``gpu`` and why; PlanError when ``asked`` does not fit the card."""
    if not gpu.power_settable:
        if asked is not None:
            raise PlanError(
                f"{gpu.label} reports no settable power limit (power management N/A), so "
                f"gpu.power_limit = {asked} cannot be set; remove it or list other GPUs in gpu.gpus"
            )
        return None, "left alone: the GPU reports no settable power limit"
    assert gpu.power_min_w is not None
    assert gpu.power_max_w is not None
    span = f"{_fmt_w(gpu.power_min_w)}-{_fmt_w(gpu.power_max_w)}"
    if asked is None:
        if gpu.power_default_w is None:
            return None, f"left alone: no default limit reported (range {span})"
        why = f"the card's default (its range is {span})"
        if gpu.power_limit_w is not None and abs(gpu.power_limit_w - gpu.power_default_w) >= 0.5:
            why += f"; it is {_fmt_w(gpu.power_limit_w)} now"
        return gpu.power_default_w, why
    if asked.watts is not None:
        watts, source = float(round(asked.watts)), f"gpu.power_limit = {asked}"
    else:
        assert asked.percent is not None
        if gpu.power_default_w is None:
            raise PlanError(
                f"{gpu.label} reports no default power limit, so gpu.power_limit = {asked} has "
                f"no base; give watts inside {span}"
            )
        watts = float(round(gpu.power_default_w * asked.percent / 100))
        source = (
            f"gpu.power_limit = {asked.percent:g}% of the default {_fmt_w(gpu.power_default_w)}"
        )
    if not gpu.power_min_w <= watts <= gpu.power_max_w:
        raise PlanError(
            f"power limit {_fmt_w(watts)} ({source}) is outside the range of {gpu.label}, "
            f"{span}; choose a value inside it"
        )
    return watts, f"{source}, inside the card's range {span}"


def _nearest(clocks: tuple[int, ...], mhz: int) -> str:
    ordered = sorted(clocks)
    at = bisect.bisect_left(ordered, mhz)
    near = ordered[max(0, at - 1) : at + 1]
    return ", ".join(f"{c} MHz" for c in near)


def clock_target(gpu: GpuReading, asked: ClockSpec | None) -> tuple[int | None, str]:
    """The graphics clock to lock ``gpu`` to, and why; PlanError for a clock it does not list."""
    if asked is None:
        return None, "not locked: the driver boosts and throttles as it sees fit (default)"
    supported = gpu.supported_clocks_mhz
    if not supported:
        raise PlanError(
            f"{gpu.label} reported no supported clocks, so gpu.lock_clocks = {asked} cannot be "
            "checked; read it with NVML or `nvidia-smi -q -x`, or remove gpu.lock_clocks"
        )
    if asked.highest:
        return supported[0], "gpu.lock_clocks = max: the highest clock the card lists"
    assert asked.mhz is not None
    if asked.mhz not in supported:
        raise PlanError(
            f"{gpu.label} does not list {asked.mhz} MHz as a supported graphics clock; the "
            f"nearest are {_nearest(supported, asked.mhz)} (`nvidia-smi -q -d SUPPORTED_CLOCKS`)"
        )
    return asked.mhz, f"gpu.lock_clocks = {asked.mhz}: a clock the card lists as supported"


def _target(gpu: GpuReading, cfg: GpuConfig) -> GpuTarget:
    if not cfg.persistence:
        persistence, p_why = None, "left alone: gpu.persistence = false"
    elif gpu.persistence is None:
        persistence, p_why = None, "left alone: the GPU does not report persistence mode"
    else:
        persistence = True
        p_why = "on: the driver stays initialised between model loads" + (
            "" if gpu.persistence else "; it is off now"
        )
    watts, w_why = power_target(gpu, cfg.power_limit)
    mhz, c_why = clock_target(gpu, cfg.lock_clocks)
    return GpuTarget(gpu, persistence, p_why, watts, w_why, mhz, c_why)


def plan(readings: tuple[GpuReading, ...], cfg: GpuConfig) -> GpuPlan:
    """What to set on each selected GPU; PlanError (one line) for anything that cannot be set."""
    chosen = select(readings, cfg.gpus)
    targets = tuple(_target(gpu, cfg) for gpu in chosen)
    notes = []
    left = sorted({r.index for r in readings} - {t.index for t in targets})
    if left:
        notes.append("not managed (gpu.gpus): " + ", ".join(f"GPU {i}" for i in left))
    if any(t.lock_clock_mhz for t in targets):
        notes.append(
            "locked clocks cannot be read back (NVML and nvidia-smi have no getter); apply "
            "checks that the driver accepted the lock"
        )
    return GpuPlan(targets, tuple(notes))
