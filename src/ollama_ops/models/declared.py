"""The ``[models]`` list, as apply carries it out: pull what is missing, warm, verify.

Like the NixOS module's ``loadModels``, but checked: after the pulls,
``/api/tags`` must list every model of ``pull`` and ``warm``; after loading
the ``warm`` ones (``/api/generate`` with no prompt and the configured
``keep_alive``), ``/api/ps`` must show each of them. Models already in the
store are not pulled again, so egress is opened only when something is
missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ollama_ops.errors import CommandError
from ollama_ops.model.config import ModelsConfig
from ollama_ops.models import spec
from ollama_ops.models.output import Sink
from ollama_ops.models.pull import PullReport, pull_models
from ollama_ops.models.rules import wanted
from ollama_ops.runtime import Runtime

if TYPE_CHECKING:
    from ollama_ops.models.api import ModelApi


@dataclass(frozen=True)
class ModelsOutcome:
    present: tuple[str, ...]  # already in the store
    pulled: PullReport | None
    warmed: tuple[str, ...]

    def summary(self) -> str:
        parts = []
        if self.pulled is not None and self.pulled.pulled:
            names = ", ".join(p.model for p in self.pulled.pulled)
            how = (
                f"egress open {self.pulled.open_seconds:.1f} s, closed again"
                if self.pulled.egress_opened
                else "egress was already open"
            )
            parts.append(f"pulled {names} ({how})")
        if self.present:
            parts.append(f"already present: {', '.join(self.present)}")
        if self.warmed:
            parts.append(f"loaded and kept warm: {', '.join(self.warmed)}")
        return "models: " + ("; ".join(parts) if parts else "none declared")


def ensure(
    rt: Runtime, api: ModelApi, unit: str, models: ModelsConfig, sink: Sink
) -> ModelsOutcome:
    """Pull the missing models of ``models``, warm the ``warm`` ones, verify both."""
    everything = wanted(models)
    if not everything:
        return ModelsOutcome((), None, ())
    have = {spec.short_name(n) for n in api.tags()}
    missing = [m for m in everything if m not in have]
    present = tuple(m for m in everything if m in have)
    report = pull_models(rt, api, unit, missing, sink, force=False) if missing else None
    listed = {spec.short_name(n) for n in api.tags()}
    absent = [m for m in everything if m not in listed]
    if absent:
        raise CommandError(
            f"/api/tags on {api.url} does not list {', '.join(absent)} after the pull; "
            "check the service's OLLAMA_MODELS and its journal"
        )
    wire = spec.keep_alive_wire(models.keep_alive)
    for model in models.warm:
        reason = api.load(model, wire)
        sink.note(
            "warm", f"{model}: loaded (done_reason {reason or '?'}), keep_alive {models.keep_alive}"
        )
    loaded = {spec.short_name(m.name) for m in api.ps()}
    cold = [m for m in models.warm if m not in loaded]
    if cold:
        raise CommandError(
            f"/api/ps on {api.url} does not show {', '.join(cold)} after loading it; "
            "check the service's memory limits and its journal"
        )
    return ModelsOutcome(present, report, models.warm)
