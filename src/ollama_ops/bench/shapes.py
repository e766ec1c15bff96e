"""Load shapes (pure): stages of fixed concurrency or request rate, arrivals, stop rules.

A :class:`Shape` is a list of stages run one after the other (a sweep has
several), each stopped by a duration or a request count, after an optional
number of warm-up requests that are not counted.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import BenchError

#: The guide's benchmark: five sequential requests with this prompt.
GUIDE_REQUESTS = 5


class Arrival(enum.Enum):
    """How request start times are spread in a rate stage."""

    CONSTANT = "constant"
    POISSON = "poisson"
    GAMMA = "gamma"


@dataclass(frozen=True)
class Stage:
    """One load level: ``concurrency`` streams (closed loop) or ``rate`` requests/s (open loop)."""

    concurrency: int | None = None
    rate: float | None = None
    arrival: Arrival = Arrival.POISSON
    burstiness: float = 1.0  # gamma shape: < 1 burstier than Poisson, > 1 more regular
    max_concurrency: int | None = None  # cap on requests in flight in a rate stage

    @property
    def label(self) -> str:
        if self.rate is not None:
            cap = f" cap {self.max_concurrency}" if self.max_concurrency else ""
            return f"rate {self.rate:g}/s{cap}"
        return f"concurrency {self.concurrency}"

    @property
    def level(self) -> float:
        """The x value of a sweep plot: the concurrency or the rate."""
        return float(self.rate if self.rate is not None else self.concurrency or 1)


@dataclass(frozen=True)
class Stop:
    """When a stage ends: after ``duration_s`` seconds of sending or ``requests`` requests."""

    duration_s: float | None = None
    requests: int | None = None


def default_ramp(streams: int) -> float:
    """Closed-loop streams start 2 ms apart, over at most 1 s (as load generators ramp)."""
    return min(1.0, 0.002 * streams)


@dataclass(frozen=True)
class Shape:
    stages: tuple[Stage, ...]
    stop: Stop
    warmup: int = 1
    seed: int = 0
    name: str = "custom"
    # Seconds over which a closed-loop stage starts its streams; None: 2 ms per stream, at most
    # 1 s. Spread over about one request's length, the streams stop arriving in waves, so a
    # server's cost of taking in a burst of requests stays out of the steady-state figures.
    ramp_s: float | None = None

    def ramp_for(self, streams: int) -> float:
        return self.ramp_s if self.ramp_s is not None else default_ramp(streams)

    @property
    def kind(self) -> str:
        """``concurrency`` or ``rate``: what the x axis of a sweep is."""
        return "rate" if self.stages and self.stages[0].rate is not None else "concurrency"


def sequential(requests: int = GUIDE_REQUESTS, warmup: int = 0) -> Shape:
    """The guide's benchmark: one request at a time."""
    return Shape((Stage(concurrency=1),), Stop(requests=requests), warmup, name="sequential")


def concurrency_sweep(
    levels: tuple[int, ...], stop: Stop, warmup: int = 1, ramp_s: float | None = None
) -> Shape:
    _check_stop(stop)
    for n in levels:
        if n < 1:
            raise BenchError(f"--concurrency {n}: each level must be at least 1")
    if ramp_s is not None and not 0 <= ramp_s <= 3600:
        raise BenchError(f"--ramp-up {ramp_s:g}: must be seconds from 0 to 3600")
    name = "concurrency" if len(levels) == 1 else "concurrency sweep"
    stages = tuple(Stage(concurrency=n) for n in levels)
    return Shape(stages, stop, warmup, name=name, ramp_s=ramp_s)


def rate_sweep(
    rates: tuple[float, ...],
    stop: Stop,
    *,
    arrival: Arrival = Arrival.POISSON,
    burstiness: float = 1.0,
    max_concurrency: int | None = None,
    warmup: int = 1,
    seed: int = 0,
) -> Shape:
    _check_stop(stop)
    for r in rates:
        if not r > 0:
            raise BenchError(f"--rate {r:g}: each rate must be above 0 requests/s")
    if not burstiness > 0:
        raise BenchError(f"--burstiness {burstiness:g}: must be above 0 (1 = Poisson)")
    if max_concurrency is not None and max_concurrency < 1:
        raise BenchError(f"--max-concurrency {max_concurrency}: must be at least 1")
    stages = tuple(
        Stage(rate=r, arrival=arrival, burstiness=burstiness, max_concurrency=max_concurrency)
        for r in rates
    )
    name = "rate" if len(rates) == 1 else "rate sweep"
    return Shape(stages, stop, warmup, seed, name)


def _check_stop(stop: Stop) -> None:
    if stop.duration_s is None and stop.requests is None:
        raise BenchError("give --duration S or --requests N to end each stage")
    if stop.duration_s is not None and not stop.duration_s > 0:
        raise BenchError(f"--duration {stop.duration_s:g}: must be above 0 seconds")
    if stop.requests is not None and stop.requests < 1:
        raise BenchError(f"--requests {stop.requests}: must be at least 1")


def arrivals(stage: Stage, seed: int) -> Iterator[float]:
    """Offsets in seconds from the stage start at which requests are due (endless)."""
    if stage.rate is None:
        raise ValueError("arrivals() needs a rate stage")
    rng = random.Random(seed)
    mean = 1.0 / stage.rate
    t = 0.0
    while True:
        yield t
        if stage.arrival is Arrival.CONSTANT:
            t += mean
        elif stage.arrival is Arrival.POISSON:
            t += rng.expovariate(stage.rate)
        else:
            # Gamma with shape k and mean 1/rate (scale = mean / k), as vLLM's burstiness.
            k = stage.burstiness
            t += rng.gammavariate(k, mean / k)


def parse_levels(text: str, option: str = "--concurrency") -> tuple[int, ...]:
    """``"1,4,16"`` -> (1, 4, 16)."""
    try:
        levels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BenchError(
            f"{option} {text!r}: give whole numbers separated by commas, e.g. 1,8,32"
        ) from None
    return levels


def parse_rates(text: str) -> tuple[float, ...]:
    """``"0.5,2,8"`` -> (0.5, 2.0, 8.0) requests per second."""
    try:
        rates = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise BenchError(
            f"--rate {text!r}: give requests per second separated by commas, e.g. 0.5,2,8"
        ) from None
    if not all(math.isfinite(r) for r in rates):
        raise BenchError(f"--rate {text!r}: give finite numbers, e.g. 0.5,2,8")
    return rates
