"""Checks of the instances against the host, before anything is written. Pure.

GPUs that exist and belong to one instance (unless both share), ports that
clash with nothing and need no capability, memory limits that add up within
the host's budget (defaults: one share per GPU, so adding or removing an
instance never changes another's), and declared models that fit an
instance's VRAM (sizes from the tag's parameter count and quantization, or
as declared).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ollama_ops.errors import PlanError
from ollama_ops.model.bind import is_loopback
from ollama_ops.model.config import DeploymentConfig, format_size
from ollama_ops.model.deployment import Deployment
from ollama_ops.model.facts import Gpu, HostFacts
from ollama_ops.model.instances import InstanceConfig
from ollama_ops.plan import sizing

MiB = 1024**2
# What a model needs beyond its weights at Ollama's default context: KV cache and graph.
OVERHEAD = 0.20


def shares(facts: HostFacts) -> int:
    """Memory shares of the host: one per GPU (at least one) plus one for the main unit.

    Fixed by the host, not by the number of instances, so adding or removing
    an instance never changes another one's limits.
    """
    return max(len(facts.gpus), 1) + 1


def memory_bytes(value: str | None) -> int:
    """A MemoryMax= value as written by the plan ("1234M" or bytes) in bytes."""
    if not value:
        return 0
    return int(value[:-1]) * MiB if value.endswith("M") else int(value)


def _gpu_of(facts: HostFacts, ref: int | str, where: str) -> Gpu:
    for gpu in facts.gpus:
        if gpu.index == ref or (gpu.uuid is not None and gpu.uuid == ref):
            return gpu
    known = ", ".join(str(g.index) for g in facts.gpus) or "none"
    raise PlanError(
        f"{where}: GPU {ref!r} does not exist on this host (GPUs: {known}); "
        "list GPUs from `ollama-ops facts`"
    )


def resolve_gpus(facts: HostFacts, cfg: DeploymentConfig) -> dict[str, tuple[Gpu, ...]]:
    """Each instance's GPUs; a GPU in two instances only where both allow sharing."""
    out: dict[str, tuple[Gpu, ...]] = {}
    owner: dict[int, InstanceConfig] = {}
    for inst in cfg.instances:
        gpus = tuple(_gpu_of(facts, r, f"instances.{inst.name}.gpus") for r in inst.gpus)
        for gpu in gpus:
            other = owner.get(gpu.index)
            if other is not None and not (other.share_gpus and inst.share_gpus):
                raise PlanError(
                    f"GPU {gpu.index} is in instances {other.name} and {inst.name}; give each "
                    "instance its own GPUs or set share_gpus = true on both"
                )
            owner[gpu.index] = inst
        if len({g.index for g in gpus}) != len(gpus):
            raise PlanError(f"instances.{inst.name}.gpus names one GPU twice (index and UUID)")
        out[inst.name] = gpus
    return out


def check_ports(cfg: DeploymentConfig, main: Deployment) -> None:
    for inst in cfg.instances:
        where = f"instances.{inst.name}.port = {inst.port}"
        if inst.port == main.bind_port:
            raise PlanError(
                f"{where} is {main.unit_name}'s port ({cfg.service.bind}); pick another port"
            )
        if inst.port < 1024:
            raise PlanError(
                f"{where} needs CAP_NET_BIND_SERVICE, which the hardening drops; use 1024-65535"
            )
        if not is_loopback(inst.bind) and not inst.allowed_networks:
            raise PlanError(
                f"instances.{inst.name}.bind = {inst.bind!r} exposes the instance to the network; "
                'list client networks in its allowed_networks (e.g. ["10.0.0.0/8"]) or bind '
                "to 127.0.0.1 and use the front door"
            )
        if is_loopback(inst.bind) and inst.allowed_networks:
            raise PlanError(
                f"instances.{inst.name}.allowed_networks is set but it binds to loopback "
                f"{inst.bind}; remove allowed_networks or bind to a non-loopback address"
            )


@dataclass(frozen=True)
class Sized:
    memory_max: int
    reason: str


def share_memory(
    facts: HostFacts, cfg: DeploymentConfig, gpus: Mapping[str, Sequence[Gpu]]
) -> tuple[dict[str, Sized], int, str]:
    """Each instance's MemoryMax and why; the host budget and how it was worked out."""
    reserve, reserve_why = sizing.os_reserve(facts, cfg)
    budget = facts.memory_bytes - reserve
    budget_why = f"RAM {format_size(facts.memory_bytes)} - {reserve_why} = {format_size(budget)}"
    pct, n = cfg.limits.memory_max_percent, shares(facts)
    out = {}
    for inst in cfg.instances:
        if inst.memory_max is not None:
            out[inst.name] = Sized(inst.memory_max, f"instances.{inst.name}.memory_max")
            continue
        mine = max(len(gpus[inst.name]), 1)
        value = int(budget * pct / 100 * mine / n) // MiB * MiB
        why = (
            f"{mine} of {n} shares (one per GPU, one for the main unit) of {pct:g}% of "
            f"({budget_why}): the OOM line, above MemoryHigh"
        )
        out[inst.name] = Sized(value, why)
    return out, budget, budget_why


def check_budget(
    main: Deployment, instances: Sequence[Deployment], budget: int, budget_why: str
) -> None:
    parts = [(main.unit_name, memory_bytes(main.value("MemoryMax")))]
    parts += [(d.unit_name, memory_bytes(d.value("MemoryMax"))) for d in instances]
    total = sum(v for _n, v in parts)
    if total > budget:
        shown = " + ".join(f"{n} {format_size(v)}" for n, v in parts)
        raise PlanError(
            f"memory limits add up to {format_size(total)} ({shown}), more than the host's "
            f"budget ({budget_why}); lower instances' memory_max or limits.memory_max"
        )


_QUANT_BITS = (
    ("q2", 3.0),
    ("q3", 3.9),
    ("q4_0", 4.5),
    ("q4_1", 5.0),
    ("q4", 4.85),
    ("q5_0", 5.5),
    ("q5_1", 6.0),
    ("q5", 5.7),
    ("q6", 6.6),
    ("q8", 8.5),
    ("bf16", 16.0),
    ("fp16", 16.0),
    ("f16", 16.0),
    ("fp32", 32.0),
    ("f32", 32.0),
)
_PARAMS_RE = re.compile(r"(?:^|[-_:])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?=$|[-_])")


def model_need(name: str, declared: int | None) -> tuple[int, str]:
    """The VRAM a model needs at Ollama's default context, and how that was worked out."""
    if declared is not None:
        return declared, f"{format_size(declared)} as declared"
    tag = name.rpartition(":")[2].lower() if ":" in name else ""
    match = _PARAMS_RE.search(tag)
    if match is None:
        raise PlanError(
            f"cannot tell the size of model {name!r} from its tag; declare it, e.g. "
            f'models = {{ "{name}" = "5G" }}'
        )
    experts = int(match.group(1) or 1)
    params = experts * float(match.group(2)) * (1e9 if match.group(3) == "b" else 1e6)
    quant, bits = "Q4_K_M (Ollama's default)", 4.85
    for prefix, value in _QUANT_BITS:
        if re.search(rf"(?:^|[-_]){prefix}", tag):
            quant, bits = prefix.upper(), value
            break
    weights = int(params * bits / 8)
    need = int(weights * (1 + OVERHEAD))
    return need, (
        f"{format_size(need)}: {params / 1e9:g}B parameters at {quant} = "
        f"{format_size(weights)} + {OVERHEAD:.0%} for KV cache and graph"
    )


def check_models(inst: InstanceConfig, gpus: Sequence[Gpu], memory_max: int) -> list[str]:
    """Refuse a declared model bigger than the instance's VRAM (RAM without GPUs); notes."""
    if not inst.models:
        return []
    if gpus:
        room = sum(g.memory_bytes for g in gpus)
        where = f"the {format_size(room)} of VRAM on GPU {', '.join(str(g.index) for g in gpus)}"
    else:
        room, where = memory_max, f"its MemoryMax of {format_size(memory_max)} (no GPU)"
    needs = []
    for model in inst.models:
        try:
            need, how = model_need(model.name, model.vram_bytes)
        except PlanError as exc:
            raise PlanError(f"instances.{inst.name}.models: {exc}") from exc
        if need > room:
            raise PlanError(
                f"instances.{inst.name}.models: {model.name} needs about {how}, more than {where}; "
                "give the instance more GPUs or serve the model from a bigger instance"
            )
        needs.append((model.name, need))
    shown = ", ".join(f"{n} {format_size(b)}" for n, b in needs)
    total = sum(b for _n, b in needs)
    fits = "all fit at once" if total <= room else "they take turns (not all fit at once)"
    return [f"ollama@{inst.name}: models {shown} in {where}: {fits}"]
