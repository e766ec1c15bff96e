"""The real applier: each setting through the foundation's plan + apply, on the live service.

A setting is the deployment config with its ``[environment]`` overridden in
memory, planned for this host like any config (``plan.compose.build``, the
one preflight, ``render``) and installed by ``apply.transaction.apply``: one
generation, restart, verify, and apply's own rollback when the service does
not come up. The original configuration comes back by rolling back the
tune's generations (``marker.restore``); the winner is kept as one
generation over the original, then written to the config file.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from ollama_ops.apply import transaction
from ollama_ops.errors import ApplyError
from ollama_ops.model.config import DeploymentConfig
from ollama_ops.model.deployment import Deployment
from ollama_ops.model.facts import HostFacts
from ollama_ops.plan.compose import build
from ollama_ops.plan.preflight import preflight
from ollama_ops.render.systemd import render
from ollama_ops.runtime import Runtime

from . import configfile, marker
from .params import Setting


def planned(
    facts: HostFacts, cfg: DeploymentConfig, setting: Setting, root: Path
) -> tuple[Deployment, dict[str, str]]:
    """The deployment and files for ``cfg`` with ``setting`` in its [environment] (pure + preflight)."""
    env = dict(cfg.environment)
    for name, value in setting.values:
        if value is None:
            env.pop(name, None)  # unset: the plan's rule decides, as before the tune
        else:
            env[name] = value
    deployment = build(facts, dataclasses.replace(cfg, environment=env))
    preflight(deployment, root)
    return deployment, render(deployment)


class PlanApplier:
    """Applies settings with plan + apply; restores by rolling back the tune's generations."""

    def __init__(
        self,
        rt: Runtime,
        facts: HostFacts,
        cfg: DeploymentConfig,
        config_path: Path,
        state: marker.Marker,
        *,
        timeout: float,
    ) -> None:
        self.rt = rt
        self.facts = facts
        self.cfg = cfg
        self.config_path = config_path
        self.marker = state
        self.timeout = timeout
        self.dirty = False  # the files may differ from what the service runs
        self.restored = ""  # what the last restore did

    def apply(self, setting: Setting) -> str:
        deployment, files = planned(self.facts, self.cfg, setting, self.rt.root)
        outcome = transaction.apply(self.rt, deployment, files, timeout=self.timeout)
        if outcome.generation is None:
            return "already in place"
        return f"applied as generation {outcome.generation}"

    def restore(self) -> str:
        note = marker.restore(self.rt, self.marker, timeout=self.timeout, force_restart=self.dirty)
        marker.remove(self.rt.root)
        self.dirty = False
        if note == marker.UNCHANGED and self.restored:  # restored once already (idempotent)
            return self.restored
        self.restored = note
        return note

    def keep(self, setting: Setting) -> str:
        src = str(self.config_path)
        text = configfile.with_environment(configfile.read_text(self.config_path), setting.env, src)
        deployment, files = planned(self.facts, self.cfg, setting, self.rt.root)
        root, state = self.rt.root, self.marker
        self.marker = state = marker.update(root, state, phase=marker.KEEPING)
        self.dirty = True
        marker.roll_back_above(self.rt, state.base, state.unit, restart=False)
        try:
            outcome = transaction.apply(self.rt, deployment, files, timeout=self.timeout)
        except ApplyError:
            self.dirty = False  # apply put the original files back and restarted them
            raise
        if outcome.generation is None:  # the original files already say this: run them
            marker.restart(self.rt, state.unit)
            marker.wait_up(self.rt, state.url, state.unit, self.timeout)
        self.dirty = False
        self.marker = marker.update(
            root,
            state,
            winner_generation=outcome.generation,
            config_path=str(self.config_path),
            config_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        )
        configfile.write(self.config_path, text)
        marker.remove(root)
        names = ", ".join(f"{k} = {v}" for k, v in setting.env.items())
        done = f"generation {outcome.generation}" if outcome.generation else "no file change"
        return f"kept: wrote {names} to {self.config_path} ([environment]) and applied it ({done})"
