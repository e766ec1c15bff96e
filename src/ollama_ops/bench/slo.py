"""Service-level objectives (pure): ``ttft=500ms,tpot=50ms`` and which requests meet them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import BenchError

#: Metrics an SLO may bound, each a per-request latency in seconds.
METRICS = ("ttft", "tpot", "itl", "e2e")
_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
_ITEM = re.compile(r"^\s*([a-z0-9]+)\s*=\s*(\d+(?:\.\d+)?)\s*([a-zµ]*)\s*$")
_HINT = "e.g. --slo ttft=500ms,tpot=50ms (metrics: ttft, tpot, itl = longest gap, e2e; ms or s)"


@dataclass(frozen=True)
class Slo:
    """Upper bounds in seconds, by metric name."""

    limits: tuple[tuple[str, float], ...]

    def met(self, values: dict[str, float | None]) -> bool:
        """A request meets the SLO when every bounded value is known and within its bound."""
        for name, limit in self.limits:
            v = values.get(name)
            if v is None or v > limit:
                return False
        return True

    def describe(self) -> str:
        return ",".join(f"{name}={_fmt(limit)}" for name, limit in self.limits)

    def to_json(self) -> dict[str, float]:
        return dict(self.limits)


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{seconds * 1e3:g}ms"


def parse_slo(text: str) -> Slo:
    limits: dict[str, float] = {}
    for item in text.split(","):
        m = _ITEM.match(item)
        if m is None:
            raise BenchError(f"--slo {text!r}: cannot read {item.strip()!r}; {_HINT}")
        name, number, unit = m.groups()
        if name not in METRICS:
            raise BenchError(f"--slo {text!r}: unknown metric {name!r}; {_HINT}")
        if unit not in _UNITS:
            raise BenchError(f"--slo {text!r}: {item.strip()!r} needs a unit (ms or s); {_HINT}")
        if name in limits:
            raise BenchError(f"--slo {text!r}: {name} is given twice; {_HINT}")
        limits[name] = float(number) * _UNITS[unit]
    return Slo(tuple(limits.items()))


def from_json(data: object) -> Slo | None:
    """The SLO saved in a result file (``{"ttft": 0.5}``), or None."""
    if not isinstance(data, dict) or not data:
        return None
    items = [(k, float(v)) for k, v in data.items() if k in METRICS and isinstance(v, int | float)]
    return Slo(tuple(items)) if items else None
