"""Rules for several Ollama instances (ollama@NAME.service) on one host.

Per instance (``rule_instance``, in the rule list for every unit, quiet for
units that are not instances): GPUs named by index (indexes change when a
GPU is added or fails), GPU UUIDs the host lacks, a device ACL that opens
every GPU to an instance that should see a few, an instance sharing the
main unit's $HOME (one key, one default store). Across the units
(``check_fleet``): two units on one port, one GPU in two instances, a
shared model store that more than one unit prunes or that a non-pruning
sharer may write, memory limits adding up to more than the host's RAM.
``audit_instances`` is the edge: it finds the instances under a root (drop-in
directories and boot wants of the template) and audits each.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ollama_ops.audit.context import Ctx, Var, finding
from ollama_ops.audit.model import Finding, Report, Severity, ordered
from ollama_ops.audit.values import parse_memory
from ollama_ops.model.config import format_size
from ollama_ops.model.facts import GpuVendor, HostFacts
from ollama_ops.unitfile import effective as effective_mod

if TYPE_CHECKING:
    from ollama_ops.runtime import Runtime

_FRONTEND_NODE = "/dev/nvidia0"  # any numbered node: granted by a class, every GPU is


_SPECIFIER = re.compile(r"%(.)")


def _unescape(text: str) -> str:
    """systemd's unit_name_unescape for %I: '-' is '/', \\xNN a byte."""
    return re.sub(
        r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text.replace("-", "/")
    )


def expand_instance(unit: effective_mod.EffectiveUnit) -> effective_mod.EffectiveUnit:
    """An instance's assignments with the instance specifiers (%i %I %n %N %p %P) filled in.

    ``%%`` and every other specifier stay as written (the rules expand ``%%`` where
    systemd does); a unit that is not an instance is returned as it is.
    """
    prefix, at, rest = unit.name.partition("@")
    if not at or rest.startswith("."):
        return unit
    instance = rest.rsplit(".", 1)[0]
    table = {
        "i": instance,
        "I": _unescape(instance),
        "n": unit.name,
        "N": unit.name.rsplit(".", 1)[0],
        "p": prefix,
        "P": _unescape(prefix),
        "%": "%%",
    }

    def fill(value: str) -> str:
        return _SPECIFIER.sub(lambda m: table.get(m.group(1), m.group(0)), value)

    assignments = tuple(dataclasses.replace(a, value=fill(a.value)) for a in unit.assignments)
    return dataclasses.replace(unit, assignments=assignments)


def _is_instance(ctx: Ctx) -> bool:
    return "@" in ctx.u.name and not ctx.u.name.split("@", 1)[1].startswith(".")


def _visible(var: Var | None) -> list[str]:
    if var is None:
        return []
    return [p.strip() for p in var.value.strip("\"'").split(",") if p.strip()]


def _refs(ctx: Ctx) -> list[str] | None:
    """The GPUs an instance is given (CUDA_VISIBLE_DEVICES); None for other units."""
    if not _is_instance(ctx):
        return None
    return _visible(ctx.env.get("CUDA_VISIBLE_DEVICES"))


def scoped_facts(ctx: Ctx) -> HostFacts | None:
    """The host as one instance should see it: only its own NVIDIA GPUs and their nodes."""
    refs, facts = _refs(ctx), ctx.facts
    if refs is None or facts is None or not facts.nvidia_gpus:
        return facts
    mine = [
        g
        for g in facts.gpus
        if g.vendor is not GpuVendor.NVIDIA or str(g.index) in refs or g.uuid in refs
    ]
    others = {f"/dev/nvidia{g.index}" for g in facts.nvidia_gpus if g not in mine}
    nodes = tuple(d for d in facts.device_nodes if d not in others)
    return dataclasses.replace(facts, gpus=tuple(mine), device_nodes=nodes)


def reads_shared_store(ctx: Ctx, blocked_by: str) -> bool:
    """A non-pruning sharer made read-only on purpose (ReadOnlyPaths= on the store)."""
    return not _prunes(ctx) and blocked_by.startswith("ReadOnlyPaths")


def rule_instance(ctx: Ctx) -> Iterator[Finding]:
    if not _is_instance(ctx):
        return
    cuda = ctx.env.get("CUDA_VISIBLE_DEVICES")
    parts = _visible(cuda)
    uuids = ctx.facts is not None and all(g.uuid for g in ctx.facts.nvidia_gpus)
    if cuda is not None and any(p.isdigit() for p in parts):
        yield finding(
            "instance-gpu-by-index",
            Severity.WARNING if uuids else Severity.INFO,
            cuda,
            None,
            f"CUDA_VISIBLE_DEVICES={cuda.value} names GPUs by index: indexes shift when a GPU "
            "is added or fails, and the instance lands on another instance's GPU",
            "name them by UUID (`nvidia-smi -L`), as `ollama-ops apply` writes them",
        )
    known = {g.uuid for g in ctx.facts.gpus if g.uuid} if ctx.facts else set()
    unknown = [p for p in parts if p.startswith(("GPU-", "MIG-")) and known and p not in known]
    if cuda is not None and unknown:
        yield finding(
            "instance-gpu-uuid-unknown",
            Severity.ERROR,
            cuda,
            None,
            f"CUDA_VISIBLE_DEVICES names {', '.join(unknown)}, which this host does not have: "
            "the instance sees no such GPU",
            "list the UUIDs of `nvidia-smi -L` (or rerun `ollama-ops apply`)",
        )
    yield from _rule_all_gpus(ctx, parts)
    home = ctx.env.get("HOME")
    if home is None and not ctx.values("StateDirectory"):
        yield finding(
            "instance-shared-home",
            Severity.WARNING,
            None,
            "StateDirectory",
            f"{ctx.u.name} has no home of its own: every instance shares the service user's "
            "$HOME/.ollama (its key and, unless OLLAMA_MODELS is set, one model store each "
            "instance prunes at start)",
            "give each instance StateDirectory=ollama-NAME and HOME=/var/lib/ollama-NAME",
        )


def _rule_all_gpus(ctx: Ctx, parts: list[str]) -> Iterator[Finding]:
    """A class rule (char-nvidia-frontend) opens every GPU's node to one instance."""
    from ollama_ops.audit.rules_devices import _allows  # it imports this module

    if ctx.facts is None or len(ctx.facts.nvidia_gpus) < 2:
        return
    if not parts or len(parts) >= len(ctx.facts.nvidia_gpus):
        return
    for a in ctx.values("DeviceAllow"):
        if a.value.split()[0].startswith("char-") and _allows(a.value, _FRONTEND_NODE):
            yield finding(
                "instance-all-gpus",
                Severity.WARNING,
                a,
                None,
                f"DeviceAllow={a.value} opens every GPU to an instance that should use "
                f"{', '.join(parts)}: a runner ignoring CUDA_VISIBLE_DEVICES reaches the "
                "other instances' GPUs",
                "reset DeviceAllow= in the instance's drop-in and list its /dev/nvidiaN and the "
                "control nodes",
            )
            return


# ---------------------------------------------------------------- across the units


@dataclass(frozen=True)
class Unit:
    """What the fleet rules read of one unit (main or instance)."""

    name: str
    ctx: Ctx


def _port(var: Var | None) -> int:
    """The port Ollama listens on for an OLLAMA_HOST value (envconfig.Host)."""
    if var is None:
        return 11434
    text = var.value.strip().strip("\"'")
    scheme, sep, rest = text.partition("://")
    hostport = (rest if sep else text).split("/", 1)[0]
    match = re.search(r":(\d+)$", hostport)
    if match and (hostport.count(":") == 1 or hostport.startswith("[")):
        return int(match.group(1))
    return 443 if sep and scheme == "https" else 11434


def _store(ctx: Ctx) -> str | None:
    var = ctx.env.get("OLLAMA_MODELS")
    if var is not None:
        return var.value.rstrip("/")
    home, _why = ctx.home()
    return f"{home.rstrip('/')}/.ollama/models" if home else None


def _prunes(ctx: Ctx) -> bool:
    var = ctx.env.get("OLLAMA_NOPRUNE")
    return var is None or var.value.strip().lower() not in ("1", "true", "yes", "on", "t")


def _at(ctx: Ctx, name: str) -> Var | None:
    return ctx.env.get(name)


Located = tuple[str, Finding]  # the unit whose report gets the finding, and the finding


def _ports(units: Sequence[Unit]) -> Iterator[Located]:
    seen: dict[int, Unit] = {}
    for unit in units:
        port = _port(_at(unit.ctx, "OLLAMA_HOST"))
        if port not in seen:
            seen[port] = unit
            continue
        yield (
            unit.name,
            finding(
                "instance-port-clash",
                Severity.ERROR,
                _at(unit.ctx, "OLLAMA_HOST"),
                "OLLAMA_HOST",
                f"{unit.name} and {seen[port].name} both listen on port {port}: the second "
                "fails with 'address already in use' and restarts forever",
                "give each unit its own port (`ollama-ops instance add` picks a free one)",
            ),
        )


def _gpus(units: Sequence[Unit]) -> Iterator[Located]:
    owner: dict[str, Unit] = {}
    for unit in units:
        if "@" not in unit.name:
            continue
        var = _at(unit.ctx, "CUDA_VISIBLE_DEVICES")
        for gpu in _visible(var):
            if gpu not in owner:
                owner[gpu] = unit
                continue
            yield (
                unit.name,
                finding(
                    "instance-gpu-shared",
                    Severity.WARNING,
                    var,
                    None,
                    f"GPU {gpu} is in {unit.name} and {owner[gpu].name}: their models compete "
                    "for its VRAM and each sizes itself as if it had the GPU alone",
                    "give each instance its own GPUs (or mean it: share_gpus = true)",
                ),
            )


def _stores(units: Sequence[Unit]) -> Iterator[Located]:
    by_store: dict[str, list[Unit]] = {}
    for unit in units:
        store = _store(unit.ctx)
        if store:
            by_store.setdefault(store, []).append(unit)
    for store, sharing in by_store.items():
        if len(sharing) < 2:
            continue
        pruners = [u for u in sharing if _prunes(u.ctx)]
        for unit in pruners[1:]:
            yield (
                unit.name,
                finding(
                    "instance-store-pruned-twice",
                    Severity.ERROR,
                    _at(unit.ctx, "OLLAMA_MODELS"),
                    "OLLAMA_MODELS",
                    f"{unit.name} and {pruners[0].name} share the model store {store} and both prune "
                    "it at start: each deletes the blobs of models only the other knows",
                    f"set OLLAMA_NOPRUNE=1 on every sharer but one ({unit.name} here)",
                ),
            )
        for unit in sharing:
            writable = [a for a in unit.ctx.values("ReadWritePaths") if a.value.strip("-") == store]
            if not _prunes(unit.ctx) and writable:
                yield (
                    unit.name,
                    finding(
                        "instance-store-writable",
                        Severity.WARNING,
                        writable[0],
                        None,
                        f"{unit.name} does not prune the shared store {store} but may write it: a "
                        "pull or delete there changes the models under the pruning unit",
                        f"ReadOnlyPaths={store} instead of ReadWritePaths= for non-pruning sharers",
                    ),
                )


def _memory(units: Sequence[Unit], facts: HostFacts | None) -> Iterator[Located]:
    if facts is None or len(units) < 2:
        return
    total, shown = 0.0, []
    for unit in units:
        a = unit.ctx.last("MemoryMax")
        size = parse_memory(a.value, facts) if a is not None else None
        if size is None or isinstance(size, str) or size.bytes is None:
            continue
        if not math.isfinite(size.bytes):
            return  # one unbounded unit: rule_memory already says so
        total += size.bytes
        shown.append(f"{unit.name} {format_size(int(size.bytes))}")
    if total > facts.memory_bytes:
        yield (
            units[-1].name,
            finding(
                "instance-memory-overcommit",
                Severity.WARNING,
                units[-1].ctx.last("MemoryMax"),
                "MemoryMax",
                f"MemoryMax adds up to {format_size(int(total))} ({', '.join(shown)}), more than the "
                f"host's {format_size(facts.memory_bytes)} RAM: together they can push the host "
                "into the OOM killer before any limit is reached",
                "lower the instances' memory_max (`ollama-ops plan` checks the sum)",
            ),
        )


def check_fleet(units: Sequence[Unit], facts: HostFacts | None) -> list[Located]:
    """Findings across the main unit and its instances, each with its unit; pure."""
    return [*_ports(units), *_gpus(units), *_stores(units), *_memory(units, facts)]


# ---------------------------------------------------------------- the edge


def find_instances(root: Path, main_unit: str = "ollama.service") -> list[str]:
    """Instance units of main_unit's template under root: drop-in dirs and boot wants."""
    prefix = main_unit.removesuffix(".service") + "@"
    names: set[str] = set()
    pattern = re.compile(rf"{re.escape(prefix)}[A-Za-z0-9:_.\\-]+\.service")
    for directory in effective_mod.unit_search_path(root):
        if not directory.is_dir():
            continue
        for path in directory.glob(f"{prefix}?*.service.d"):
            if path.is_dir() and pattern.fullmatch(path.name.removesuffix(".d")):
                names.add(path.name.removesuffix(".d"))
        for wants in directory.glob("*.wants"):
            names.update(p.name for p in wants.iterdir() if pattern.fullmatch(p.name))
        for conf in directory.glob("*.target.d/*.conf"):
            names.update(pattern.findall(conf.read_text(errors="replace")))
    return sorted(names)


def fleet_reports(
    rt: Runtime,
    main: Report,
    facts: HostFacts | None,
    *,
    systemd_version: int | None = None,
    with_exposure: bool = True,
) -> list[Report]:
    """One report per instance under the root, the cross-unit findings in the unit they
    concern. ``systemd_version`` as ``audit`` takes it (the caller's, asked once)."""
    from ollama_ops.audit import audit, read_root_files, systemd_version_for

    root = rt.root
    names = find_instances(root, main.unit)
    if not names:
        return []
    version = systemd_version_for(rt, facts, systemd_version)
    reports = [
        audit(rt, name, facts, systemd_version=version, with_exposure=with_exposure)
        for name in names
    ]
    units = []
    for report in [main, *reports]:
        loaded = expand_instance(effective_mod.load_effective(root, report.unit))
        units.append(Unit(report.unit, Ctx(loaded, facts, version, read_root_files(root, loaded))))
    extra = check_fleet(units, facts)
    return [
        dataclasses.replace(
            r, findings=tuple(ordered([*r.findings, *(f for u, f in extra if u == r.unit)]))
        )
        for r in reports
    ]
