"""Rules on restarting: does a crashed Ollama come back, and does a broken one stop?

Restart= off leaves Ollama down after a crash or an OOM kill; a start limit
that is disabled, or that can never trip because RestartSec= (with the
RestartSteps= back-off where systemd supports it) times StartLimitBurst= is
longer than StartLimitIntervalSec=, loops a broken start forever; a burst of 1
gives up after one crash. Only the start-limit assignments systemd honours
(right section, supported spelling) count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from ollama_ops.audit.context import Ctx, finding
from ollama_ops.audit.model import Finding, Severity
from ollama_ops.audit.values import parse_timespan
from ollama_ops.unitfile import directives
from ollama_ops.unitfile import syntax as unit

DEFAULT_START_LIMIT_INTERVAL = 10.0  # DefaultStartLimitIntervalSec= of system.conf
DEFAULT_START_LIMIT_BURST = 5
DEFAULT_RESTART_SEC = 0.1
_UINT_MAX = 2**32 - 1


def _time(a: unit.Assignment | None, default: float) -> tuple[float, list[Finding]]:
    if a is None:
        return default, []
    seconds = parse_timespan(a.value)
    if seconds is None:
        return default, [
            finding(
                "invalid-value",
                Severity.WARNING,
                a,
                None,
                f"{a.key}={a.value} is not a time span; systemd ignores the line",
                f"write {a.key}= in seconds or with a unit, e.g. 10s or 5min",
            )
        ]
    return seconds, []


def _effective_start_limit(ctx: Ctx, names: tuple[str, ...]) -> unit.Assignment | None:
    """The last assignment systemd honours among the spellings/sections of one setting."""
    found: unit.Assignment | None = None
    for a in ctx.u.assignments:
        if a.key not in names:
            continue
        d = directives.lookup(a.key)
        since = d.accepted_in(a.section) if d is not None else None
        if since is not None and since <= ctx.version:
            found = a if a.value != "" else None
    return found


def _restart_span(ctx: Ctx, base: float, count: int) -> float:
    """Seconds the delays before restarts 1..count add up to, RestartSteps= back-off included.

    In closed form (delay n is base * (top/base)^(n/steps) up to the last step, then
    top), so a StartLimitBurst= of four billion costs no more than one of five.
    """
    steps_a = ctx.last("RestartSteps")
    max_a = ctx.last("RestartMaxDelaySec")
    steps = 0
    if steps_a is not None and directives.supported("RestartSteps", ctx.version):
        steps = _uint(steps_a.value) or 0
    top = parse_timespan(max_a.value) if max_a is not None else None
    if (
        steps <= 0
        or top is None
        or not directives.supported("RestartMaxDelaySec", ctx.version)
        or not math.isfinite(top)
        or top <= base
        or base <= 0
    ):
        return base * count
    growing = min(count, steps)
    ratio = math.pow(top / base, 1 / steps)
    rising = base * growing if ratio == 1 else base * (math.pow(ratio, growing) - 1) / (ratio - 1)
    return rising + top * (count - growing)


def _uint(text: str) -> int | None:
    """An unsigned int as systemd's safe_atou reads it; None when it is not one (or >= 2^32)."""
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,10}", text) or int(text) > _UINT_MAX:
        return None
    return int(text)


def rule_restart(ctx: Ctx) -> Iterator[Finding]:
    restart_a = ctx.last("Restart")
    restart = ctx.restart()
    if not ctx.restarts:
        yield finding(
            "restart-never",
            Severity.WARNING,
            restart_a,
            "Restart",
            f"Restart={restart}: after a crash or an OOM kill Ollama stays down",
            "set Restart=on-failure with RestartSec=5 and a start limit in [Unit] "
            "(StartLimitIntervalSec=600, StartLimitBurst=5)",
        )
        return
    rs_a = ctx.last("RestartSec")
    restart_sec, bad = _time(rs_a, DEFAULT_RESTART_SEC)
    yield from bad
    int_a = _effective_start_limit(ctx, ("StartLimitIntervalSec", "StartLimitInterval"))
    interval, bad = _time(int_a, DEFAULT_START_LIMIT_INTERVAL)
    yield from bad
    burst_a = _effective_start_limit(ctx, ("StartLimitBurst",))
    burst = DEFAULT_START_LIMIT_BURST
    if burst_a is not None:
        parsed = _uint(burst_a.value)
        if parsed is None:
            yield finding(
                "invalid-value",
                Severity.WARNING,
                burst_a,
                None,
                f"StartLimitBurst={burst_a.value[:40]} is not a whole number from 0 to "
                f"{_UINT_MAX}; systemd ignores it",
                "write StartLimitBurst=5 in [Unit]",
            )
        else:
            burst = parsed
    interval_text = (
        f"StartLimitIntervalSec={int_a.value}"
        if int_a is not None
        else f"the default {DEFAULT_START_LIMIT_INTERVAL:g} s start-limit window"
    )
    fix_limit = (
        "put StartLimitIntervalSec=600 and StartLimitBurst=5 in [Unit] and keep "
        "RestartSec= x StartLimitBurst= well below the interval"
    )
    if interval == 0 or burst == 0:
        yield finding(
            "restart-loop-forever",
            Severity.WARNING,
            int_a if interval == 0 else burst_a,
            None,
            f"Restart={restart} with the start limit disabled: a service that cannot start "
            "(e.g. an unwritable $HOME) restarts forever",
            fix_limit,
        )
        return
    if burst == 1:
        yield finding(
            "restart-gives-up",
            Severity.WARNING,
            burst_a,
            None,
            "StartLimitBurst=1: the first automatic restart inside the window is refused, so "
            "one crash leaves Ollama down",
            "set StartLimitBurst=5 in [Unit]",
        )
        return
    span = _restart_span(ctx, restart_sec, burst)
    if span >= interval:
        yield finding(
            "restart-loop-forever",
            Severity.WARNING,
            restart_a,
            "Restart",
            f"Restart={restart} with RestartSec={rs_a.value if rs_a else '100ms'}: {burst} "
            f"restarts take at least {span:g} s, longer than {interval_text}, so the start "
            "limit can never trip and a broken start loops forever",
            fix_limit,
        )
