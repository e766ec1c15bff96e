"""The operator's GPU wishes as values: a power limit in watts or percent, a clock to lock to.

Parsed from the ``[gpu]`` table of the config file and from the command
line (``--power-limit``, ``--lock-clocks``, ``--gpu``); whether a value fits
a card is the plan's question, since only the card knows its range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ollama_ops.errors import ConfigError

_POWER_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(W|%)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class PowerSpec:
    """A power limit asked for: ``watts``, or ``percent`` of the card's default limit."""

    watts: float | None = None
    percent: float | None = None

    def __str__(self) -> str:
        if self.watts is not None:
            return f"{self.watts:g} W"
        return f"{self.percent:g}% of the default"


def parse_power(value: object, where: str) -> PowerSpec | None:
    """ "300W", 300, "85%" or "default" (None: the card's default limit)."""
    if isinstance(value, str) and value.strip().lower() == "default":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), "W"
    else:
        match = _POWER_RE.match(value) if isinstance(value, str) else None
        if not match:
            raise ConfigError(
                f'{where} = {value!r} is not a power limit; write watts ("300W"), a share of the '
                'default ("90%") or "default"'
            )
        number, unit = float(match.group(1)), match.group(2).upper()
    if unit == "%":
        if not 1 <= number <= 200:
            raise ConfigError(f"{where} = {value!r}: a percentage of the default must be 1-200")
        return PowerSpec(percent=number)
    if number <= 0:
        raise ConfigError(f"{where} = {value!r}: a power limit must be above 0 W")
    return PowerSpec(watts=number)


@dataclass(frozen=True)
class ClockSpec:
    """A graphics clock to lock to, in MHz, or the highest the card supports."""

    mhz: int | None = None  # None with highest=True: the card's highest supported clock
    highest: bool = False

    def __str__(self) -> str:
        return "the highest supported clock" if self.highest else f"{self.mhz} MHz"


def parse_clock(value: object, where: str) -> ClockSpec | None:
    """1410, "1410", "1410MHz", "max" or "none" (None: clocks are not locked)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", "off", ""):
            return None
        if text == "max":
            return ClockSpec(highest=True)
        text = text.removesuffix("mhz").strip()
        if text.isdigit():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 10000:
        return ClockSpec(mhz=value)
    raise ConfigError(
        f'{where} = {value!r} is not a clock; write MHz the card lists (e.g. 1410), "max" or '
        '"none" (see `ollama-ops gpu status`)'
    )


def parse_persistence(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} = {value!r} must be true or false")
    return value


def parse_gpu_indexes(value: object, where: str) -> tuple[int, ...] | None:
    """[0, 1], "0,1" or "all" (None: every NVIDIA GPU)."""
    if isinstance(value, str):
        if value.strip().lower() == "all":
            return None
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if parts and all(p.isdigit() for p in parts):
            value = [int(p) for p in parts]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
    ):
        return tuple(sorted(set(value)))
    raise ConfigError(
        f"{where} = {value!r} is not a GPU list; write indexes as nvidia-smi numbers them, e.g. "
        '[0, 1] or "all"'
    )
