"""Pull models into the running service through a briefly opened egress.

Order: the API must answer first (no egress is opened for a server that is
down); a non-loopback bind is refused unless forced (the IP filter is open in
both directions while it pulls); then the egress window of ``egress.opened``
wraps the pulls, one model after the other, and closes however they end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ollama_ops.errors import CommandError, ConfigError
from ollama_ops.model.bind import is_loopback, split_bind
from ollama_ops.models import egress
from ollama_ops.models.output import Sink
from ollama_ops.models.progress import Tally, parse_line
from ollama_ops.runtime import Runtime

if TYPE_CHECKING:
    from ollama_ops.models.api import ModelApi

EPERM_TEXT = "operation not permitted"


@dataclass(frozen=True)
class Pulled:
    model: str
    bytes: int
    seconds: float


@dataclass(frozen=True)
class PullReport:
    pulled: tuple[Pulled, ...]
    egress_opened: bool
    open_seconds: float  # how long egress was open (0 when it was not opened)


def check_ingress(rt: Runtime, unit: str, *, force: bool) -> None:
    """Refuse a non-loopback bind: while the filter is open, anyone reaches the API."""
    value = egress.bind_of(rt.systemctl(), unit)
    if value is None:
        return
    host = split_bind(value)[0] or "0.0.0.0"
    if is_loopback(host) or force:
        return
    raise ConfigError(
        f"{unit} listens on {value} (OLLAMA_HOST): the IP filter applies both ways, so while "
        "egress is open any address reaches the API; pass --force to accept that, or bind to "
        "127.0.0.1 behind a proxy"
    )


def pull_one(api: ModelApi, model: str, sink: Sink, rt: Runtime) -> Pulled:
    """One model, its progress to ``sink``; CommandError when Ollama reports a failure."""
    tally = Tally()
    start = rt.clock()
    for obj in api.pull(model):
        step = parse_line(obj)
        if step.error:
            hint = ""
            if EPERM_TEXT in step.error:
                hint = " (the service's IP filter blocked the registry: is egress closed?)"
            raise CommandError(f"pulling {model} failed: {step.error}{hint}")
        tally.add(step)
        sink.step(model, step, tally)
    if not tally.succeeded:
        raise CommandError(
            f"pulling {model}: the stream ended after {tally.status or 'nothing'!r} without "
            "success; run the pull again"
        )
    seconds = rt.clock() - start
    sink.pulled(model, tally, seconds)
    return Pulled(model, tally.total, seconds)


def pull_models(
    rt: Runtime, api: ModelApi, unit: str, models: Sequence[str], sink: Sink, *, force: bool
) -> PullReport:
    """Pull ``models`` with egress open only meanwhile; the egress is closed on any exit."""
    api.version()  # CommandError when the server does not answer: nothing is opened
    check_ingress(rt, unit, force=force)
    done: list[Pulled] = []
    start = rt.clock()
    with egress.opened(rt, unit, sink.note) as window:
        for model in models:
            done.append(pull_one(api, model, sink, rt))
        held = rt.clock() - start
    return PullReport(tuple(done), window.opened, held if window.opened else 0.0)
