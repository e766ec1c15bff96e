"""Statistics (pure): percentiles and distributions of latencies."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted values, interpolated linearly between ranks."""
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0-100")
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    frac = pos - lo
    return ordered[lo] + (ordered[hi] - ordered[lo]) * frac


@dataclass(frozen=True)
class Dist:
    """A latency distribution in seconds."""

    n: int
    mean: float
    median: float
    p90: float
    p99: float
    min: float
    max: float

    def to_json(self) -> dict[str, float]:
        return {
            "n": self.n,
            "mean": self.mean,
            "median": self.median,
            "p90": self.p90,
            "p99": self.p99,
            "min": self.min,
            "max": self.max,
        }


def dist(values: Iterable[float | None]) -> Dist | None:
    """The distribution of the known values, or None when there are none."""
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    return Dist(
        n=len(ordered),
        mean=math.fsum(ordered) / len(ordered),
        median=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        min=ordered[0],
        max=ordered[-1],
    )


def dist_from_json(data: object) -> Dist | None:
    if not isinstance(data, dict):
        return None
    try:
        return Dist(
            n=int(data["n"]),
            mean=float(data["mean"]),
            median=float(data["median"]),
            p90=float(data["p90"]),
            p99=float(data["p99"]),
            min=float(data["min"]),
            max=float(data["max"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def cdf(values: Iterable[float | None], points: int = 200) -> tuple[list[float], list[float]]:
    """(x, share <= x) for a plot, thinned to about ``points`` steps."""
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return [], []
    step = max(1, len(ordered) // points)
    idx = list(range(0, len(ordered), step))
    if idx[-1] != len(ordered) - 1:
        idx.append(len(ordered) - 1)
    return [ordered[i] for i in idx], [(i + 1) / len(ordered) for i in idx]
