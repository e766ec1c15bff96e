"""Sizing rules: memory limits, CPU weight and pinning, Ollama's own variables.

Pure: each rule reads the facts and the config and adds settings, each with
its source and the reason ``plan`` shows.
"""

from __future__ import annotations

from ollama_ops.errors import PlanError
from ollama_ops.model.config import MIN_SERVICE_MEMORY, DeploymentConfig, format_size
from ollama_ops.model.deployment import Section, Source
from ollama_ops.model.facts import HostFacts, format_cpu_list, parse_cpu_list
from ollama_ops.plan.builder import Builder

GiB = 1024**3
MiB = 1024**2


def _mib(num_bytes: int) -> str:
    return f"{num_bytes // MiB}M"


def os_reserve(facts: HostFacts, cfg: DeploymentConfig) -> tuple[int, str]:
    """The RAM kept for the OS, and why; what is left is every unit's memory budget."""
    lim = cfg.limits
    total = facts.memory_bytes
    if lim.os_reserve is not None:
        reserve, why = lim.os_reserve, f"OS reserve {format_size(lim.os_reserve)} from the config"
    elif total >= 16 * GiB:
        reserve, why = 4 * GiB, "OS reserve 4 GiB (the guide's worksheet)"
    else:
        reserve = max(512 * MiB, total // 4)
        why = f"OS reserve {format_size(reserve)} (a quarter of RAM on a host under 16 GiB)"
    if reserve >= total:
        raise PlanError(
            f"limits.os_reserve = {format_size(reserve)} leaves nothing of the host's "
            f"{format_size(total)} RAM for Ollama; lower it"
        )
    return reserve, why


def memory(b: Builder, facts: HostFacts, cfg: DeploymentConfig) -> None:
    lim = cfg.limits
    total = facts.memory_bytes
    reserve, why = os_reserve(facts, cfg)
    available = total - reserve
    base = f"RAM {format_size(total)} - {why} = {format_size(available)}"
    high = available * lim.memory_high_percent / 100
    high_b, high_src = int(high) // MiB * MiB, Source.RULE
    high_why = f"{lim.memory_high_percent:g}% of ({base}): throttles before the hard limit"
    mx = available * lim.memory_max_percent / 100
    max_b, max_src = int(mx) // MiB * MiB, Source.RULE
    max_why = f"{lim.memory_max_percent:g}% of ({base}): the OOM line, above MemoryHigh"
    for key, value in (("memory_high", lim.memory_high), ("memory_max", lim.memory_max)):
        if value is not None and value > total:
            raise PlanError(
                f"limits.{key} = {format_size(value)} is more than the host's RAM "
                f"({format_size(total)}); lower it or leave it to the rule"
            )
    if lim.memory_max is not None:
        max_b, max_src, max_why = lim.memory_max, Source.CONFIG, "limits.memory_max"
    if lim.memory_high is not None:
        high_b, high_src, high_why = lim.memory_high, Source.CONFIG, "limits.memory_high"
    elif high_b > max_b:
        high_b = int(max_b * lim.memory_high_percent / lim.memory_max_percent) // MiB * MiB
        high_why = f"{lim.memory_high_percent:g}/{lim.memory_max_percent:g} of MemoryMax"
    if high_b > max_b:
        raise PlanError(
            f"MemoryHigh {format_size(high_b)} is above MemoryMax {format_size(max_b)}; "
            "MemoryHigh must be at most MemoryMax (check limits.memory_high / memory_max)"
        )
    for key, value, why in (("MemoryHigh", high_b, high_why), ("MemoryMax", max_b, max_why)):
        if value < MIN_SERVICE_MEMORY:
            raise PlanError(
                f"{key} would be {format_size(value)} ({why}), below the 512 MiB ollama serve "
                "needs to start: the kernel would OOM-kill or stall it; raise the percentages, "
                "lower limits.os_reserve, or run Ollama on a host with more RAM"
            )
    b.add(
        Section.SERVICE,
        "MemoryHigh",
        _mib(high_b) if high_src is Source.RULE else str(high_b),
        high_src,
        high_why,
    )
    b.add(
        Section.SERVICE,
        "MemoryMax",
        _mib(max_b) if max_src is Source.RULE else str(max_b),
        max_src,
        max_why,
    )


def cpu(b: Builder, facts: HostFacts, cfg: DeploymentConfig) -> None:
    lim = cfg.limits
    if lim.cpu_weight is not None:
        b.add(Section.SERVICE, "CPUWeight", str(lim.cpu_weight), Source.CONFIG, "limits.cpu_weight")
    else:
        b.add(
            Section.SERVICE,
            "CPUWeight",
            "150",
            Source.RULE,
            "1.5x systemd's default 100: Ollama wins CPU contention against other services",
        )
    host_cpus = facts.cpu_set()
    choice = lim.allowed_cpus or "auto"
    if choice == "none":
        b.add(Section.SERVICE, "AllowedCPUs", None, Source.CONFIG, "limits.allowed_cpus = none")
    elif choice != "auto":
        wanted = set(parse_cpu_list(choice))
        missing = sorted(wanted - host_cpus)
        if missing:
            raise PlanError(
                f"limits.allowed_cpus = {choice!r} names CPUs this host lacks "
                f"({format_cpu_list(missing)}); the host has {format_cpu_list(sorted(host_cpus))}"
            )
        b.add(
            Section.SERVICE,
            "AllowedCPUs",
            format_cpu_list(sorted(wanted)),
            Source.CONFIG,
            "limits.allowed_cpus",
        )
    else:
        gpu_nodes = {g.numa_node for g in facts.gpus}
        if len(facts.numa_nodes) > 1 and len(gpu_nodes) == 1 and None not in gpu_nodes:
            node_id = next(iter(gpu_nodes))
            node = next((n for n in facts.numa_nodes if n.id == node_id), None)
            # A node without CPUs (memory only) cannot be pinned to: AllowedCPUs= empty resets.
            if node is not None and parse_cpu_list(node.cpus):
                b.add(
                    Section.SERVICE,
                    "AllowedCPUs",
                    format_cpu_list(parse_cpu_list(node.cpus)),
                    Source.RULE,
                    f"all GPUs sit on NUMA node {node_id}: pinning to its CPUs avoids cross-socket traffic",
                )
                return
        why = (
            "not pinned: one NUMA node"
            if len(facts.numa_nodes) <= 1
            else "not pinned: no GPU, or GPUs on different NUMA nodes"
        )
        b.add(Section.SERVICE, "AllowedCPUs", None, Source.RULE, why)


def ollama_env(b: Builder, facts: HostFacts, cfg: DeploymentConfig, bind: str, models: str) -> None:
    env = dict(cfg.environment)
    gpus = facts.gpus
    per_gpu = min((g.memory_bytes for g in gpus), default=0)

    def put(name: str, rule_value: str | None, reason: str) -> None:
        if name in env:
            b.add(Section.ENV, name, env.pop(name), Source.CONFIG, f"environment.{name}")
        else:
            b.add(Section.ENV, name, rule_value, Source.RULE, reason)

    b.add(
        Section.ENV,
        "OLLAMA_HOST",
        bind,
        Source.CONFIG if "service.bind" in cfg.set_keys else Source.RULE,
        "service.bind"
        if "service.bind" in cfg.set_keys
        else "loopback only: nothing reaches the API from the network",
    )
    # The model store is decided once (compose); [environment] must not write it again.
    from_env = env.pop("OLLAMA_MODELS", None) is not None
    b.add(
        Section.ENV,
        "OLLAMA_MODELS",
        models,
        Source.CONFIG if cfg.service.models_dir or from_env else Source.RULE,
        "service.models_dir"
        if cfg.service.models_dir
        else "environment.OLLAMA_MODELS"
        if from_env
        else "Ollama's default store under the service's home",
    )
    if gpus:
        loaded_per_gpu = 1 if per_gpu < 16 * GiB else 2 if per_gpu < 48 * GiB else 3
        loaded = loaded_per_gpu * len(gpus)
        loaded_why = f"{loaded_per_gpu} per GPU with {format_size(per_gpu)} VRAM each"
        # KV cache = slots x context. Ollama's default context is 4k under 24 GiB,
        # 32k up to 48 GiB and 256k above: slots are sized against that.
        parallel = 1 if per_gpu < 12 * GiB else 2 if per_gpu < 48 * GiB else 4
        if per_gpu >= 48 * GiB:
            put(
                "OLLAMA_CONTEXT_LENGTH",
                "32768",
                "Ollama's 256k default context on >48 GiB GPUs x 4 slots would crowd out the weights",
            )
        parallel_why = f"KV cache grows with slots x context; {format_size(per_gpu)} VRAM per GPU fits {parallel}"
        keep, keep_why = (
            "10m",
            "GPU host: reloading weights costs seconds, keep them 10 min after use",
        )
    else:
        loaded = 1 if facts.memory_bytes < 32 * GiB else 2
        loaded_why = f"CPU only, {format_size(facts.memory_bytes)} RAM: models live in RAM"
        parallel, parallel_why = (
            1,
            "CPU only: parallel slots share the same cores and only add latency",
        )
        keep, keep_why = "5m", "CPU host: free RAM after Ollama's default 5 min"
    queue = min(512, max(16, parallel * loaded * 32))
    put("OLLAMA_NUM_PARALLEL", str(parallel), parallel_why)
    put("OLLAMA_MAX_LOADED_MODELS", str(loaded), loaded_why)
    put("OLLAMA_KEEP_ALIVE", keep, keep_why)
    put(
        "OLLAMA_MAX_QUEUE",
        str(queue),
        f"32 waiting per slot ({parallel} x {loaded} models), capped at 512",
    )
    nvidia = facts.nvidia_gpus
    if nvidia:
        put(
            "CUDA_VISIBLE_DEVICES",
            ",".join(str(g.index) for g in nvidia),
            "every NVIDIA GPU of the host",
        )
        put(
            "CUDA_DEVICE_ORDER",
            "PCI_BUS_ID",
            "CUDA numbers GPUs like nvidia-smi, so the indexes above mean the same",
        )
    if facts.amd_gpus:
        put(
            "ROCR_VISIBLE_DEVICES",
            ",".join(str(g.index) for g in facts.amd_gpus),
            "every AMD GPU of the host",
        )
    put(
        "GOMAXPROCS",
        None,
        "not set: Go sizes it from the CPU affinity, which AllowedCPUs already narrows; "
        "inference threads live in the runner, which ignores it",
    )
    put(
        "OLLAMA_FLASH_ATTENTION",
        None,
        "not set: Ollama enables it per model where supported (auto)",
    )
    for name in sorted(env):
        b.add(Section.ENV, name, env[name], Source.CONFIG, f"environment.{name}")
