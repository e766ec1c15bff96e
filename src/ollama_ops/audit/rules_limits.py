"""Rules on the numbers: memory, CPUs and GPUs the unit grants, measured against the host.

MemoryHigh=/MemoryMax= that are invalid, missing, inverted or larger than the
RAM; AllowedCPUs= naming CPUs the host lacks; CUDA/ROCm visible-device lists
naming GPUs it lacks; OLLAMA_MAX_LOADED_MODELS x OLLAMA_NUM_PARALLEL beyond
the VRAM (or RAM); a GOMAXPROCS that does not match the CPUs. Rules that need
the host stay quiet without host facts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from ollama_ops.audit.context import Ctx, Var, finding
from ollama_ops.audit.model import Finding, Severity
from ollama_ops.audit.values import Size, parse_go_int, parse_memory
from ollama_ops.errors import FactsError
from ollama_ops.model.config import format_size
from ollama_ops.model.facts import format_cpu_list, parse_cpu_list
from ollama_ops.unitfile import syntax as unit

GiB = 1024**3
_INDEX = re.compile(r"-?[0-9]+")  # a device index as CUDA and ROCm read it: ASCII digits


def _cpu_set(text: str) -> set[int]:
    """An AllowedCPUs= value ("0-3 8,9"); raises FactsError if it is not a CPU list."""
    return set(parse_cpu_list(",".join(text.split())))


def rule_memory(ctx: Ctx) -> Iterator[Finding]:
    """Memory limits that are invalid, contradict each other or the host, or are missing."""
    sizes: dict[str, tuple[unit.Assignment, Size]] = {}
    for key in ("MemoryHigh", "MemoryMax"):
        a = ctx.last(key)
        if a is None:
            continue
        parsed = parse_memory(a.value, ctx.facts)
        if isinstance(parsed, str):
            yield finding(
                "invalid-value",
                Severity.WARNING,
                a,
                None,
                f"{key}={a.value}: {parsed}; systemd ignores the line",
                f"write {key}= as bytes with K/M/G/T, a percentage of RAM or infinity",
            )
            continue
        sizes[key] = (a, parsed)
    if not any(s.bytes is None or math.isfinite(s.bytes) for _a, s in sizes.values()):
        yield finding(
            "no-memory-limit",
            Severity.WARNING,
            None,
            "MemoryMax",
            "no MemoryMax=/MemoryHigh=: Ollama does not see cgroup limits and can load a "
            "model that pushes the whole host into the OOM killer",
            "set MemoryHigh= and MemoryMax= below the host's RAM minus an OS reserve "
            "(`ollama-ops plan` computes them)",
        )
    high, mx = sizes.get("MemoryHigh"), sizes.get("MemoryMax")
    high_b = high[1].bytes if high else None
    max_b = mx[1].bytes if mx else None
    if (
        high
        and mx
        and high_b is not None
        and max_b is not None
        and math.isfinite(high_b)
        and high_b > max_b
    ):
        yield finding(
            "memory-high-above-max",
            Severity.ERROR,
            high[0],
            None,
            f"MemoryHigh={high[1].text} is above MemoryMax={mx[1].text}: the hard limit "
            "OOM-kills Ollama before throttling ever starts",
            "set MemoryHigh= below MemoryMax= (e.g. 80 % and 93 % of RAM minus the OS reserve)",
        )
    if ctx.facts is not None:
        total = ctx.facts.memory_bytes
        for key, (a, size) in sizes.items():
            finite = size.bytes is not None and math.isfinite(size.bytes)
            if size.percent is None and finite and size.bytes is not None and size.bytes > total:
                yield finding(
                    "memory-above-host",
                    Severity.WARNING,
                    a,
                    None,
                    f"{key}={size.text} is more than the host's RAM "
                    f"({format_size(total)}): the limit can never act",
                    f"lower {key}= below {format_size(total)} minus an OS reserve",
                )


def rule_cpus(ctx: Ctx) -> Iterator[Finding]:
    a = ctx.last("AllowedCPUs")
    if a is None:
        return
    try:
        wanted = _cpu_set(a.value)
    except FactsError:
        yield finding(
            "invalid-value",
            Severity.WARNING,
            a,
            None,
            f"AllowedCPUs={a.value} is not a CPU list; systemd ignores the line",
            'write a CPU list such as "0-15,32-47"',
        )
        return
    if ctx.facts is None:
        return
    host = ctx.facts.cpu_set()
    missing = sorted(wanted - host)
    if missing:
        yield finding(
            "cpus-not-on-host",
            Severity.ERROR,
            a,
            None,
            f"AllowedCPUs={a.value} names CPUs this host lacks ({format_cpu_list(missing)}); "
            "the kernel rejects the cpuset and the pinning is not applied",
            f"use CPUs of this host ({format_cpu_list(sorted(host))}), e.g. the NUMA node "
            "of the GPUs",
        )


def _visible_list(ctx: Ctx, name: str) -> tuple[Var, list[str]] | None:
    var = ctx.env.get(name)
    if var is None:
        return None
    return var, [p.strip() for p in var.value.split(",") if p.strip()]


def rule_gpu_env(ctx: Ctx) -> Iterator[Finding]:
    """CUDA/ROCm device lists naming GPUs the host lacks."""
    if ctx.facts is None:
        return
    for name, gpus, vendor in (
        ("CUDA_VISIBLE_DEVICES", ctx.facts.nvidia_gpus, "NVIDIA"),
        ("ROCR_VISIBLE_DEVICES", ctx.facts.amd_gpus, "AMD"),
        ("HIP_VISIBLE_DEVICES", ctx.facts.amd_gpus, "AMD"),
    ):
        found = _visible_list(ctx, name)
        if found is None:
            continue
        var, parts = found
        indexes = {g.index for g in gpus} | set(range(len(gpus)))
        numeric = [p for p in parts if _INDEX.fullmatch(p)]
        if not gpus and parts:
            yield finding(
                "gpus-not-on-host",
                Severity.WARNING,
                var,
                None,
                f"{name}={var.value} but the host has no {vendor} GPU",
                f"remove {name}=",
            )
            continue
        # A number too long to be an index names no GPU (and is not worth converting).
        bad = [p for p in numeric if len(p) > 9 or int(p) not in indexes]
        if not bad:
            continue
        # CUDA stops at the first invalid index: the ones before it stay visible.
        usable = 0
        for p in parts:
            if p in bad:
                break
            usable += 1
        yield finding(
            "gpus-not-on-host",
            Severity.ERROR if usable == 0 else Severity.WARNING,
            var,
            None,
            f"{name}={var.value[:40]} names GPU {', '.join(b[:12] for b in bad)}, but the host has "
            f"{len(gpus)} {vendor} GPU(s) ({', '.join(str(i) for i in sorted(indexes))}); "
            + (
                "no GPU is visible and Ollama runs on the CPU"
                if usable == 0
                else "the devices from the first invalid index on are ignored"
            ),
            f"list only {', '.join(str(g.index) for g in gpus)} (or unset {name} to use all)",
        )


def rule_models_vs_memory(ctx: Ctx) -> Iterator[Finding]:
    """A light heuristic: ~4 GiB per resident model plus ~1 GiB of KV cache per slot."""
    if ctx.facts is None:
        return
    loaded = ctx.int_env("OLLAMA_MAX_LOADED_MODELS")
    parallel = ctx.int_env("OLLAMA_NUM_PARALLEL")
    if loaded is None and parallel is None:
        return
    gpus = ctx.facts.gpus
    n_loaded = loaded[1] if loaded and loaded[1] > 0 else (3 * len(gpus) if gpus else 3)
    n_parallel = parallel[1] if parallel and parallel[1] > 0 else 1
    budget = ctx.facts.vram_bytes if gpus else ctx.facts.memory_bytes
    kind = "VRAM" if gpus else "RAM (CPU only)"
    need = n_loaded * (4 * GiB + n_parallel * GiB)
    if need <= budget:
        return
    where = loaded[0] if loaded else parallel[0] if parallel else None
    yield finding(
        "models-exceed-memory",
        Severity.WARNING,
        where,
        None,
        f"OLLAMA_MAX_LOADED_MODELS={n_loaded} x OLLAMA_NUM_PARALLEL={n_parallel} needs about "
        f"{format_size(need)} (4 GiB per small model + 1 GiB KV cache per slot), the host has "
        f"{format_size(budget)} {kind}: models will be evicted or OOM-killed",
        "lower OLLAMA_MAX_LOADED_MODELS and OLLAMA_NUM_PARALLEL (`ollama-ops plan` sizes "
        "them from VRAM and RAM)",
    )


def rule_gomaxprocs(ctx: Ctx) -> Iterator[Finding]:
    var = ctx.env.get("GOMAXPROCS")
    if var is None:
        return
    value = parse_go_int(var.value.strip())
    if value is None:
        yield finding(
            "env-not-a-number",
            Severity.WARNING,
            var,
            None,
            f"GOMAXPROCS={var.value} is not a number: Go ignores it",
            "remove GOMAXPROCS",
        )
        return
    if ctx.facts is None:
        yield finding(
            "gomaxprocs-fixed",
            Severity.INFO,
            var,
            None,
            f"GOMAXPROCS={value} is fixed; without host facts it cannot be compared with the CPUs",
            "remove GOMAXPROCS: Go sizes it from the CPU affinity (AllowedCPUs=)",
        )
        return
    cpus = ctx.facts.cpu_set()
    where = "the host"
    allowed = ctx.value("AllowedCPUs")
    if allowed:
        try:
            pinned = cpus & _cpu_set(allowed)
        except FactsError:
            pinned = set()
        if pinned:
            cpus, where = pinned, "AllowedCPUs="
    if value != len(cpus):
        yield finding(
            "gomaxprocs-fixed",
            Severity.WARNING,
            var,
            None,
            f"GOMAXPROCS={value} but {where} has {len(cpus)} CPUs: "
            + ("threads oversubscribe the cores" if value > len(cpus) else "cores sit idle"),
            "remove GOMAXPROCS: Go sizes it from the CPU affinity, and inference threads live "
            "in the runner, which ignores it",
        )
