"""The sweep (pure): the grid of settings to measure, the current one first, each once.

The current setting (what the service runs now, as the deployment's plan
says) is measured first: it needs no restart, and every other setting is
compared with it. When it is one of the grid's points it is not measured
again, so a sweep over N settings costs N benchmark runs (N + 1 when the
current setting is outside the grid). Combinations Ollama would run as
another point of the grid are left out, with the reason.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import TuneError
from .params import Axis, Setting

#: More settings than this is a night of benchmarks, not a tune: refused with a hint.
MAX_SETTINGS = 32


@dataclass(frozen=True)
class SweepPlan:
    settings: tuple[Setting, ...]  # in the order they are measured; the current one first
    current: Setting
    current_in_grid: bool  # False: the current setting is one extra run
    skipped: tuple[str, ...]  # combinations left out, each with why


def _quantized_without_flash(setting: Setting) -> bool:
    kv = setting.get("OLLAMA_KV_CACHE_TYPE")
    return kv not in (None, "f16") and setting.get("OLLAMA_FLASH_ATTENTION") == "0"


def plan_sweep(axes: tuple[Axis, ...], current: Mapping[str, str | None]) -> SweepPlan:
    """The settings to measure: ``current`` (the swept variables' values now), then the grid."""
    size = math.prod(len(a.values) for a in axes)
    if size > MAX_SETTINGS:
        shape = " x ".join(f"{len(a.values)} {a.param.name}" for a in axes)
        raise TuneError(
            f"{shape} values make {size} settings (at most {MAX_SETTINGS}); "
            "sweep fewer values, or one parameter at a time"
        )
    now = Setting.of({a.param.env: current.get(a.param.env) for a in axes})
    grid: list[Setting] = []
    skipped: list[str] = []
    for combo in itertools.product(*(a.values for a in axes)):
        setting = Setting.of({a.param.env: v for a, v in zip(axes, combo, strict=True)})
        if _quantized_without_flash(setting):
            skipped.append(
                f"{setting.label()}: Ollama ignores a quantized KV cache without flash "
                "attention (it would run as kv_cache_type=f16)"
            )
            continue
        grid.append(setting)
    in_grid = now in grid
    rest = [s for s in grid if s != now]
    return SweepPlan((now, *rest), now, in_grid, tuple(skipped))
