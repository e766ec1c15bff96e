"""Where each instance keeps its models, and which one may prune a shared store. Pure.

By default an instance has its own store inside its state directory.
``models_dir = "shared"`` (the main unit's store) or a path several
instances name is shared: exactly one of them (or the main unit) prunes
it at start, the others get OLLAMA_NOPRUNE=1 and the store read-only
(Ollama deletes blobs it does not know when it prunes). A shared or named
store needs a fixed service user: dynamic users differ per unit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ollama_ops.errors import PlanError
from ollama_ops.model.config import DeploymentConfig
from ollama_ops.model.deployment import Deployment
from ollama_ops.model.facts import HostFacts
from ollama_ops.model.instances import SHARED, InstanceConfig


def state_dir(name: str) -> str:
    """The StateDirectory= of an instance (under /var/lib)."""
    return f"ollama-{name}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on", "t", "y")


@dataclass(frozen=True)
class Store:
    path: str
    role: str  # "own" (its state directory), "writer" (may prune), "reader" (read-only)
    reason: str


def plan_stores(facts: HostFacts, cfg: DeploymentConfig, main: Deployment) -> dict[str, Store]:
    """Where each instance keeps its models, and which single one may prune a shared store."""
    main_store = main.value("OLLAMA_MODELS") or ""
    main_prunes = not _truthy(main.value("OLLAMA_NOPRUNE"))
    paths: dict[str, str] = {}
    for inst in cfg.instances:
        if inst.models_dir is None:
            continue
        path = main_store if inst.models_dir == SHARED else inst.models_dir
        if facts.ollama.user is None:
            raise PlanError(
                f"instances.{inst.name}.models_dir = {inst.models_dir!r}: a shared or named store "
                "needs a fixed service user, but this host has no ollama user (DynamicUser); "
                "create it (`useradd -r -U -m -d /usr/share/ollama ollama`) or remove models_dir"
            )
        paths[inst.name] = path
    stores: dict[str, Store] = {}
    for inst in cfg.instances:
        if inst.name not in paths:
            own = f"/var/lib/{state_dir(inst.name)}/models"
            stores[inst.name] = Store(own, "own", "its own store in its state directory")
    groups: dict[str, list[InstanceConfig]] = {}
    for inst in cfg.instances:
        if inst.name in paths:
            groups.setdefault(paths[inst.name], []).append(inst)
    for path, members in groups.items():
        stores.update(_store_group(path, members, path == main_store and main_prunes, main))
    return stores


def _store_group(
    path: str, members: list[InstanceConfig], main_prunes: bool, main: Deployment
) -> dict[str, Store]:
    claim = [m for m in members if m.prune]
    if main_prunes:
        if claim:
            raise PlanError(
                f"instances.{claim[0].name}.prune: {main.unit_name} already prunes {path}; "
                "exactly one may: remove prune, or set OLLAMA_NOPRUNE = 1 in [environment]"
            )
        why = f"shared with {main.unit_name}, which prunes it: read-only here"
        return {m.name: Store(path, "reader", why) for m in members}
    if len(claim) > 1:
        names = ", ".join(m.name for m in claim)
        raise PlanError(
            f"instances {names} all set prune = true on the shared store {path}; exactly one may"
        )
    if len(members) == 1 and not claim and members[0].prune is None:
        return {members[0].name: Store(path, "writer", "models_dir, its alone")}
    writer = claim[0] if claim else next((m for m in members if m.prune is not False), None)
    if writer is None:
        raise PlanError(f"every instance sharing {path} sets prune = false; exactly one must prune")
    out = {}
    for m in members:
        if m is writer:
            why = "prune = true" if claim else "the first sharer by name (set prune on another)"
            out[m.name] = Store(path, "writer", f"shared store, this instance prunes it: {why}")
        else:
            out[m.name] = Store(path, "reader", f"shared with {writer.name}, which prunes it")
    return out
