"""The instances and the front door after apply writes (or rollback restores) their files.

Which units to restart or stop follows from the changed paths alone: a
changed template restarts every instance, a changed drop-in its own
instance, a removed drop-in stops that instance; nothing else is touched,
so removing one instance leaves the others running. The front door is
tested with ``nginx -t`` before anything is written and again, as the live
configuration, before nginx reloads; a failure rolls the generation back.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ollama_ops.apply.activate import _check_properties, _wait_healthy
from ollama_ops.apply.diff import Change
from ollama_ops.apply.fileio import host_path, read_bytes
from ollama_ops.errors import CommandError, OpsError
from ollama_ops.host import nginx, proc
from ollama_ops.host.systemd import SystemManager
from ollama_ops.model.deployment import DROPIN_NAME, MODULES_LOAD_PATH, Deployment
from ollama_ops.render import nginx as render_nginx
from ollama_ops.runtime import Runner, Runtime

UNIT_DIR = "/etc/systemd/system/"
_DROPIN = re.compile(rf"^{UNIT_DIR}(?P<unit>[^/@]+@[^/@]+\.service)\.d/{re.escape(DROPIN_NAME)}$")
_TEMPLATE = re.compile(rf"^{UNIT_DIR}[^/@]+@\.service$")


def main_changed(deployment: Deployment, changes: Iterable[Change]) -> bool:
    """Whether a file of the main unit changed (its drop-in, its unit, modules-load.d)."""
    mine = {deployment.dropin_path, deployment.unit_path, MODULES_LOAD_PATH}
    return any(c.path in mine for c in changes)


@dataclass(frozen=True)
class Actions:
    restart: tuple[Deployment, ...]  # writers of a shared store first
    stop: tuple[str, ...]
    frontdoor: bool  # the nginx file was written or removed


def actions(deployment: Deployment, changes: Iterable[Change]) -> Actions:
    plan = deployment.instances
    planned = {d.unit_name: d for d in plan.instances} if plan else {}
    restart: set[str] = set()
    stop: set[str] = set()
    frontdoor = False
    door = plan.frontdoor.path if plan and plan.frontdoor else None
    for change in changes:
        match = _DROPIN.match(change.path)
        if match and change.new is None:
            stop.add(match["unit"])
        elif match:
            restart.add(match["unit"])
        elif _TEMPLATE.match(change.path) and change.new is not None:
            restart.update(planned)
        elif change.path == door or (change.path.startswith("/etc/nginx/") and change.new is None):
            frontdoor = True
    ordered = sorted(
        (planned[u] for u in restart if u in planned),
        key=lambda d: (d.value("OLLAMA_NOPRUNE") is not None, d.unit_name),
    )
    return Actions(tuple(ordered), tuple(sorted(stop - set(planned))), frontdoor)


def activate(
    rt: Runtime,
    systemctl: SystemManager,
    deployment: Deployment,
    changes: Iterable[Change],
    timeout: float,
) -> str | None:
    """Stop removed instances, restart changed ones and wait for each, reload nginx."""
    todo = actions(deployment, changes)
    for unit in todo.stop:
        systemctl.stop(unit)
        systemctl.reset_failed(unit)
    for d in todo.restart:  # one at a time: a shared store's writer is up before its readers
        systemctl.reset_failed(d.unit_name)
        try:
            systemctl.restart(d.unit_name)
        except CommandError as exc:
            return str(exc)
        problem = _check_properties(systemctl, d, rt.root) or _wait_healthy(
            rt, systemctl, d, timeout
        )
        if problem:
            return problem
    if todo.frontdoor:
        return nginx.check_live(rt.run) or nginx.reload(rt.run)
    return None


def preflight(deployment: Deployment, root: Path, run: Runner = proc.run) -> None:
    """Before anything is written: nginx accepts the front door (plan.preflight did the paths)."""
    plan = deployment.instances
    if plan is None:
        return
    door = plan.frontdoor
    if door is None or read_bytes(root, door.path) == render_nginx.render(door).encode():
        return
    prefix = "" if str(root) == "/" else str(root)
    nginx.check_candidate(render_nginx.render(door, path_prefix=prefix), run)


def after_restore(
    root: Path, systemctl: SystemManager, restored: Mapping[str, object], run: Runner
) -> None:
    """Bring instances and nginx in line with the files a rollback just put back."""
    units: set[str] = set()
    stop: set[str] = set()
    for path, content in restored.items():
        match = _DROPIN.match(path)
        if match:
            (stop if content is None else units).add(match["unit"])
        elif _TEMPLATE.match(path):
            units.update(_installed_instances(root, path))
    for unit in sorted(stop):
        systemctl.stop(unit)
    for unit in sorted(units - stop):
        systemctl.reset_failed(unit)
        with contextlib.suppress(OpsError):  # the old files may not start either; they are back
            systemctl.restart(unit)
    if any(p.startswith("/etc/nginx/") for p in restored):
        nginx.reload(run)


def _installed_instances(root: Path, template: str) -> list[str]:
    prefix = Path(template).name.removesuffix("@.service")
    base = host_path(root, UNIT_DIR)
    return sorted(
        p.parent.name.removesuffix(".d")
        for p in base.glob(f"{prefix}@?*.service.d/{DROPIN_NAME}")
        if p.is_file()
    )
