"""systemd's value syntax, as the rules need to read it: pure parsers.

Time spans ("5min", "1h 30s"), memory sizes (bytes with K/M/G/..., a share of
RAM in %, permille or permyriad, infinity) and booleans ("yes", "off", ...),
each parsed the way systemd parses them, so that a rule can tell what a value
means or that systemd ignores the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ollama_ops.model.facts import HostFacts

_TIME_UNITS: dict[str, float] = {
    "usec": 1e-6,
    "us": 1e-6,
    "µs": 1e-6,
    "msec": 1e-3,
    "ms": 1e-3,
    "seconds": 1,
    "second": 1,
    "sec": 1,
    "s": 1,
    "": 1,
    "minutes": 60,
    "minute": 60,
    "min": 60,
    "m": 60,
    "hours": 3600,
    "hour": 3600,
    "hr": 3600,
    "h": 3600,
    "days": 86400,
    "day": 86400,
    "d": 86400,
    "weeks": 604800,
    "week": 604800,
    "w": 604800,
    "months": 2629800,
    "month": 2629800,
    "M": 2629800,
    "years": 31557600,
    "year": 31557600,
    "y": 31557600,
}
_TIME_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-zµ]*)")


def parse_timespan(text: str) -> float | None:
    """Seconds in a systemd time span ("10", "5min", "1h 30s"); inf; None if invalid."""
    text = text.strip()
    if text == "infinity":
        return math.inf
    pos, total = 0, 0.0
    if not text:
        return None
    while pos < len(text):
        match = _TIME_PART.match(text, pos)
        if match is None or match.group(2) not in _TIME_UNITS:
            return None
        total += float(match.group(1)) * _TIME_UNITS[match.group(2)]
        pos = match.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    return total


_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGTPE]?)B?")
_SIZE_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SIZE_FACTORS["E"] = 1024**6


@dataclass(frozen=True)
class Size:
    bytes: float | None  # None: relative and no facts to resolve it
    text: str
    percent: float | None = None


def parse_memory(text: str, facts: HostFacts | None) -> Size | str:
    """A MemoryMax=-style value, or the reason it is invalid."""
    value = text.strip()
    if value == "infinity":
        return Size(math.inf, value)
    for sign, scale in (("%", 100.0), ("‰", 1000.0), ("‱", 10000.0)):
        if value.endswith(sign):
            try:
                share = float(value[: -len(sign)]) / scale
            except ValueError:
                return f"{value!r} is not a number followed by {sign}"
            if not 0 <= share <= 1:
                return f"{value} is more than all of the host's memory (at most 100%)"
            total = None if facts is None else share * facts.memory_bytes
            return Size(total, value, share * 100)
    match = _SIZE_RE.fullmatch(value)
    if match is None:
        return f"{value!r} is not a size such as 48G, 80% or infinity"
    return Size(float(match.group(1)) * _SIZE_FACTORS[match.group(2)], value)


_GO_INT = re.compile(r"[+-]?[0-9]{1,19}")


def parse_go_int(text: str) -> int | None:
    """A whole number as Go's strconv.Atoi reads it (ASCII digits, an int64); None if not one."""
    if _GO_INT.fullmatch(text) is None:
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


_BOOL_TRUE = {"1", "yes", "y", "true", "t", "on"}
_BOOL_FALSE = {"0", "no", "n", "false", "f", "off"}


def parse_bool(text: str | None) -> bool | None:
    """A systemd boolean; None when unset or not a boolean."""
    if text is None:
        return None
    low = text.strip().lower()
    if low in _BOOL_TRUE:
        return True
    if low in _BOOL_FALSE:
        return False
    return None
