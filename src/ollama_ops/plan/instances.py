"""Several Ollama instances on one host: the ollama@.service template and one drop-in each.

Pure: HostFacts + DeploymentConfig + the main unit's Deployment -> InstancesPlan.
The template is the main unit's plan (the same hardening and restart rules,
so the same exposure) without the values that differ per instance; each
instance's drop-in gets those from the same sizing rules (memory, CPUs,
Ollama's variables) run over the instance's own GPUs, plus what only an
instance has: its port, its state directory, CUDA_VISIBLE_DEVICES by GPU
UUID, a device ACL with exactly its GPU nodes, a NUMA memory policy, its
access to a shared model store. Everything is checked before anything is
written: ports, GPUs, the memory budget, model sizes, names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from ollama_ops.errors import PlanError
from ollama_ops.model.bind import is_loopback, validate_bind
from ollama_ops.model.config import DeploymentConfig, LimitsConfig, ServiceConfig
from ollama_ops.model.deployment import Deployment, Section, Setting, Source
from ollama_ops.model.facts import Gpu, GpuVendor, HostFacts
from ollama_ops.model.instances import InstanceConfig, InstancesPlan, check_name, unit_name
from ollama_ops.plan import frontdoor, hardening, sizing
from ollama_ops.plan import instance_checks as checks
from ollama_ops.plan.builder import Builder
from ollama_ops.plan.instance_stores import Store, plan_stores, state_dir

MiB = 1024**2
BOOT_PATH = "/etc/systemd/system/multi-user.target.d/50-ollama-ops-instances.conf"
# Values every instance decides for itself: left out of the template.
PER_INSTANCE = frozenset(
    {"MemoryHigh", "MemoryMax", "CPUWeight", "AllowedCPUs", "StateDirectory", "ExecStart"}
)
FRONTEND = "char-nvidia-frontend rw"
_DEFAULT_LIMITS = LimitsConfig()


# ---------------------------------------------------------------- the main unit's share


def _main_explicit(cfg: DeploymentConfig) -> bool:
    lim = cfg.limits
    return (
        lim.memory_max is not None
        or lim.memory_high is not None
        or lim.memory_max_percent != _DEFAULT_LIMITS.memory_max_percent
        or lim.memory_high_percent != _DEFAULT_LIMITS.memory_high_percent
    )


def main_share(cfg: DeploymentConfig, facts: HostFacts) -> DeploymentConfig:
    """The config ollama.service is sized with: with instances, one of ``shares`` of memory.

    Only when the operator set none of the main unit's memory limits.
    """
    if not cfg.instances or _main_explicit(cfg):
        return cfg
    lim, n = cfg.limits, checks.shares(facts)
    shared = dataclasses.replace(
        lim,
        memory_high_percent=lim.memory_high_percent / n,
        memory_max_percent=lim.memory_max_percent / n,
    )
    return dataclasses.replace(cfg, limits=shared)


# ---------------------------------------------------------------- the template


def template_name(main_unit: str) -> str:
    return unit_name(main_unit, "")


def _template_setting(s: Setting, cfg: DeploymentConfig) -> Setting | None:
    """A main-unit setting as the template has it; None: only the instances' drop-ins set it."""
    if s.section is Section.ENV or s.key in PER_INSTANCE:
        return None
    if s.key == "ReadWritePaths" and s.value not in cfg.hardening.read_write_paths:
        return None  # the main unit's home and store; each instance writes its state directory
    if s.key == "IPAddressAllow" and s.value != "localhost":
        return None  # the main unit's clients; each instance lists its own
    if s.key == "DeviceAllow" and s.value == FRONTEND:
        return dataclasses.replace(
            s, value=None, reason="left to each instance: its drop-in lists its own /dev/nvidiaN"
        )
    return s


def build_template(facts: HostFacts, cfg: DeploymentConfig, main: Deployment) -> Deployment:
    """ollama@.service: the main unit's rules minus what each instance decides."""
    from ollama_ops.plan.compose import DEFAULT_BINARY

    settings = [t for s in main.settings if (t := _template_setting(s, cfg)) is not None]
    installed = facts.ollama
    binary = cfg.service.binary or installed.binary or DEFAULT_BINARY
    user: tuple[tuple[Section, str, str], ...] = (
        ((Section.SERVICE, "DynamicUser", "yes"),)
        if installed.user is None
        else (
            (Section.SERVICE, "User", installed.user),
            (Section.SERVICE, "Group", installed.group or installed.user),
        )
    )
    base = (
        (Section.UNIT, "Description", "Ollama instance (ollama-ops)"),
        (Section.UNIT, "Documentation", "https://github.com/ollama/ollama"),
        (Section.SERVICE, "ExecStart", f"{binary} serve"),
        *user,
    )
    return Deployment(
        unit_name=template_name(main.unit_name),
        systemd_version=main.systemd_version,
        settings=tuple(settings),
        write_base_unit=True,
        base_unit=base,
        modules_load=(),
        bind_host="",
        bind_port=0,
    )


# ---------------------------------------------------------------- one instance


def _retag(settings: Iterable[Setting], fixes: Mapping[str, tuple[Source, str]]) -> list[Setting]:
    out = []
    for s in settings:
        if s.key in fixes and s.value is not None:
            source, reason = fixes[s.key]
            out.append(dataclasses.replace(s, source=source, reason=reason))
        else:
            out.append(s)
    return out


def _instance_config(
    cfg: DeploymentConfig, inst: InstanceConfig, memory_max: int
) -> DeploymentConfig:
    """The config the sizing rules see for one instance."""
    env = {
        k: v
        for k, v in cfg.environment.items()
        if k not in ("OLLAMA_MODELS", "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
    }
    env.update(inst.environment)
    limits = LimitsConfig(
        os_reserve=cfg.limits.os_reserve,
        memory_high=inst.memory_high,
        memory_max=memory_max,
        memory_high_percent=cfg.limits.memory_high_percent,
        memory_max_percent=cfg.limits.memory_max_percent,
        cpu_weight=inst.cpu_weight,
        allowed_cpus=inst.allowed_cpus,
    )
    return DeploymentConfig(
        service=ServiceConfig(bind=f"{inst.bind}:{inst.port}"),
        limits=limits,
        environment=env,
        hardening=cfg.hardening,
    )


def _bind_text(inst: InstanceConfig) -> str:
    return f"[{inst.bind}]:{inst.port}" if ":" in inst.bind else f"{inst.bind}:{inst.port}"


def _numa(b: Builder, facts: HostFacts, inst: InstanceConfig, gpus: Sequence[Gpu]) -> None:
    nodes = {g.numa_node for g in gpus}
    node_ids = {n.id for n in facts.numa_nodes}
    why = ""
    if inst.allowed_cpus == "none":
        why = f"not set: instances.{inst.name}.allowed_cpus = none"
    elif len(facts.numa_nodes) <= 1:
        why = "not set: one NUMA node"
    elif not gpus:
        why = "not set: no GPU, so no node to prefer"
    elif len(nodes) != 1 or None in nodes or not nodes <= node_ids:
        why = "not set: its GPUs sit on different NUMA nodes (or report none)"
    if why:
        b.add(Section.SERVICE, "NUMAPolicy", None, Source.RULE, why)
        return
    node = next(iter(nodes))
    b.add(
        Section.SERVICE,
        "NUMAPolicy",
        "preferred",
        Source.RULE,
        f"memory from the NUMA node of its GPUs; preferred, not bind, so a model bigger than "
        f"node {node} still loads",
    )
    b.add(Section.SERVICE, "NUMAMask", str(node), Source.RULE, f"GPU(s) sit on NUMA node {node}")


def _devices(b: Builder, facts: HostFacts, gpus: Sequence[Gpu]) -> None:
    if not facts.gpus:
        return  # CPU-only host: the template has PrivateDevices=yes
    add = b.add
    h = Source.HARDENING
    add(Section.SERVICE, "DeviceAllow", "", h, "reset: only this instance's devices below")
    nvidia = [g for g in gpus if g.vendor is GpuVendor.NVIDIA]
    amd = [g for g in gpus if g.vendor is GpuVendor.AMD]
    if nvidia:
        for dev in hardening.NVIDIA_DEVICE_ALLOW:
            if dev != FRONTEND:
                add(Section.SERVICE, "DeviceAllow", dev, h, "NVIDIA control node every GPU needs")
        for g in nvidia:
            add(
                Section.SERVICE,
                "DeviceAllow",
                f"/dev/nvidia{g.index} rw",
                h,
                f"GPU {g.index} ({g.name or 'NVIDIA'}); no other GPU's node",
            )
    if amd:
        for dev in hardening.AMD_DEVICE_ALLOW:
            add(
                Section.SERVICE,
                "DeviceAllow",
                dev,
                h,
                "ROCm: render nodes are not told apart per GPU here; ROCR_VISIBLE_DEVICES picks",
            )
    if not gpus:
        b.settings[-1] = dataclasses.replace(
            b.settings[-1], reason="reset: no GPU for this instance, so no GPU device at all"
        )


def _cuda(settings: list[Setting], gpus: Sequence[Gpu]) -> list[Setting]:
    """CUDA_VISIBLE_DEVICES by UUID where the facts have them; the reasons to match."""
    nvidia = [g for g in gpus if g.vendor is GpuVendor.NVIDIA]
    listed = ", ".join(str(g.index) for g in nvidia)
    by_uuid = all(g.uuid for g in nvidia)
    out = []
    for s in settings:
        new = s
        if s.value is not None and s.key == "CUDA_VISIBLE_DEVICES" and by_uuid:
            new = dataclasses.replace(
                s,
                value=",".join(str(g.uuid) for g in nvidia),
                reason=f"GPU {listed} by UUID: stays right when GPUs are added, removed or fail",
            )
        elif s.value is not None and s.key == "CUDA_VISIBLE_DEVICES":
            why = f"GPU {listed} by index: the facts carry no UUID (rerun `ollama-ops facts`)"
            new = dataclasses.replace(s, reason=why)
        elif s.value is not None and s.key == "ROCR_VISIBLE_DEVICES":
            new = dataclasses.replace(s, reason="this instance's AMD GPU(s), by index")
        elif s.value is not None and s.key == "CUDA_DEVICE_ORDER":
            new = dataclasses.replace(s, reason="CUDA numbers the listed GPUs like nvidia-smi")
        out.append(new)
    return out


def _service(
    b: Builder, facts: HostFacts, inst: InstanceConfig, gpus: Sequence[Gpu], store: Store
) -> None:
    """[Service] rows of an instance besides the sizing rules: NUMA, devices, store, clients."""
    _numa(b, facts, inst, gpus)
    _devices(b, facts, gpus)
    if store.role == "writer":
        b.add(Section.SERVICE, "ReadWritePaths", store.path, Source.CONFIG, store.reason)
    elif store.role == "reader":
        b.add(Section.SERVICE, "ReadOnlyPaths", store.path, Source.CONFIG, store.reason)
    if not is_loopback(inst.bind):
        why = f"instances.{inst.name}.allowed_networks"
        for net in dict.fromkeys([inst.bind, *inst.allowed_networks]):
            b.add(Section.SERVICE, "IPAddressAllow", net, Source.CONFIG, why)


def _environment(
    b: Builder,
    inst: InstanceConfig,
    inst_facts: HostFacts,
    inst_cfg: DeploymentConfig,
    store: Store,
) -> None:
    """Its $HOME, Ollama's variables sized for its GPUs, and OLLAMA_NOPRUNE for a store reader."""
    home = f"/var/lib/{state_dir(inst.name)}"
    why = "its state directory: Ollama keeps its key under $HOME/.ollama"
    b.add(Section.ENV, "HOME", home, Source.RULE, why)
    sizing.ollama_env(b, inst_facts, inst_cfg, _bind_text(inst), store.path)
    if store.role == "reader":
        why = "shared store: only one instance may prune it"
        b.add(Section.ENV, "OLLAMA_NOPRUNE", "1", Source.CONFIG, why)
    elif inst.prune is False:
        why = f"instances.{inst.name}.prune = false"
        b.add(Section.ENV, "OLLAMA_NOPRUNE", "1", Source.CONFIG, why)


def _own_reasons(
    settings: list[Setting], inst: InstanceConfig, store: Store, sized: checks.Sized
) -> list[Setting]:
    """The shared rules' rows, retold for this instance: its keys, its store, its GPUs."""
    name = inst.name
    fixes: dict[str, tuple[Source, str]] = {
        "OLLAMA_HOST": (Source.CONFIG, f"instances.{name}.port (and bind): its own address"),
        "OLLAMA_MODELS": (
            Source.RULE if store.role == "own" else Source.CONFIG,
            f"{store.reason} ({store.role})",
        ),
        "MemoryMax": (Source.RULE if inst.memory_max is None else Source.CONFIG, sized.reason),
    }
    for key, value in (
        ("MemoryHigh", inst.memory_high),
        ("CPUWeight", inst.cpu_weight),
        ("AllowedCPUs", None if inst.allowed_cpus == "auto" else inst.allowed_cpus),
    ):
        if value is not None:
            fixes[key] = (Source.CONFIG, f"instances.{name}.{_CONFIG_KEY[key]}")
    out = [
        dataclasses.replace(s, reason=f"instances.{name}.environment.{s.key}")
        if s.section is Section.ENV and s.key in inst.environment
        else dataclasses.replace(s, reason=s.reason.replace("limits.", f"instances.{name}."))
        for s in _retag(settings, fixes)
    ]
    if inst.memory_max is None:  # the share, written like the rule's values
        out = [
            dataclasses.replace(s, value=f"{sized.memory_max // MiB}M")
            if s.key == "MemoryMax"
            else s
            for s in out
        ]
    return out


_CONFIG_KEY = {
    "MemoryHigh": "memory_high",
    "CPUWeight": "cpu_weight",
    "AllowedCPUs": "allowed_cpus",
}


def build_instance(
    facts: HostFacts,
    cfg: DeploymentConfig,
    inst: InstanceConfig,
    *,
    gpus: Sequence[Gpu],
    store: Store,
    sized: checks.Sized,
) -> Deployment:
    """The drop-in of one instance: everything that differs from the template, with reasons."""
    inst_facts = dataclasses.replace(facts, gpus=tuple(gpus))
    inst_cfg = _instance_config(cfg, inst, sized.memory_max)
    b = Builder(facts.systemd_version, cfg.hardening.relax)
    state = state_dir(inst.name)
    why = f"its own /var/lib/{state}, owned by the service user: key and caches"
    b.add(Section.SERVICE, "StateDirectory", state, Source.RULE, why)
    try:
        sizing.memory(b, inst_facts, inst_cfg)
        sizing.cpu(b, inst_facts, inst_cfg)
    except PlanError as exc:  # the rules name the main unit's keys; say which instance
        raise PlanError(str(exc).replace("limits.", f"instances.{inst.name}.")) from exc
    _service(b, facts, inst, gpus, store)
    _environment(b, inst, inst_facts, inst_cfg, store)
    settings = _cuda(_own_reasons(b.settings, inst, store, sized), gpus)
    host, port = validate_bind(_bind_text(inst), f"instances.{inst.name}")
    return Deployment(
        unit_name=unit_name(cfg.service.unit, inst.name),
        systemd_version=facts.systemd_version,
        settings=tuple(settings),
        write_base_unit=False,
        base_unit=(),
        modules_load=(),
        bind_host=host,
        bind_port=port,
    )


# ---------------------------------------------------------------- all together


def build(facts: HostFacts, cfg: DeploymentConfig, main: Deployment) -> InstancesPlan | None:
    """The instances of ``cfg`` on this host, or None when there are none."""
    if not cfg.instances:
        if cfg.frontdoor is not None:
            raise PlanError(
                "[frontdoor] has no instances to balance; add [instances.NAME] tables "
                "(`ollama-ops instance add NAME --gpus 0`) or remove [frontdoor]"
            )
        return None
    for inst in cfg.instances:  # the unit name, with this config's service.unit, must fit
        check_name(inst.name, f"[instances.{inst.name}]", cfg.service.unit)
    gpus = checks.resolve_gpus(facts, cfg)
    checks.check_ports(cfg, main)
    stores = plan_stores(facts, cfg, main)
    sized, budget, budget_why = checks.share_memory(facts, cfg, gpus)
    notes: list[str] = []
    built = []
    for inst in cfg.instances:
        d = build_instance(
            facts, cfg, inst, gpus=gpus[inst.name], store=stores[inst.name], sized=sized[inst.name]
        )
        notes += checks.check_models(
            inst, gpus[inst.name], checks.memory_bytes(d.value("MemoryMax"))
        )
        built.append(d)
    checks.check_budget(main, built, budget, budget_why)
    if main_share(cfg, facts) is not cfg:
        notes.append(
            f"{main.unit_name} shares the memory budget with its instances: its limits are 1 "
            f"of {checks.shares(facts)} shares (one per GPU, one for it) of the usual percentages"
        )
    claimed = sorted({g.index for inst_gpus in gpus.values() for g in inst_gpus})
    if claimed and main.value("CUDA_VISIBLE_DEVICES") is not None:
        notes.append(
            f"{main.unit_name} also sees GPU {', '.join(map(str, claimed))} of the instances: "
            "stop it (`systemctl disable --now ollama`) or set "
            "[environment] CUDA_VISIBLE_DEVICES to the GPUs left"
        )
    door = frontdoor.build(cfg, built, main) if cfg.frontdoor is not None else None
    return InstancesPlan(
        template=build_template(facts, cfg, main),
        instances=tuple(built),
        boot_path=BOOT_PATH,
        frontdoor=door,
        notes=tuple(notes),
    )


def attach(facts: HostFacts, cfg: DeploymentConfig, main: Deployment) -> Deployment:
    """The main deployment with its instances (the hook in ``compose.build``)."""
    plan = build(facts, cfg, main)
    return main if plan is None else dataclasses.replace(main, instances=plan)
