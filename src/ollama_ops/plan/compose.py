"""Sizing and hardening rules: HostFacts + DeploymentConfig -> Deployment.

Pure: no I/O. Every value carries its source (a rule or the operator's file)
and the reason shown by ``ollama-ops plan``. Directives the target systemd
does not know are left out here, with the reason, so the renderer never
writes them blindly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from ollama_ops.errors import PlanError
from ollama_ops.model.config import DeploymentConfig, format_size, is_loopback, validate_bind
from ollama_ops.model.facts import HostFacts, format_cpu_list, parse_cpu_list
from ollama_ops.unitfile import directives

GiB = 1024**3
MiB = 1024**2

DROPIN_NAME = "50-ollama-ops.conf"
MODULES_LOAD_PATH = "/etc/modules-load.d/ollama-ops-nvidia.conf"
INSTALLER_HOME = "/usr/share/ollama"
DYNAMIC_HOME = "/var/lib/ollama"
DEFAULT_BINARY = "/usr/local/bin/ollama"

NVIDIA_DEVICE_ALLOW = (
    "/dev/nvidiactl rw",
    "/dev/nvidia-uvm rw",
    "/dev/nvidia-uvm-tools rw",
    "/dev/nvidia-modeset rw",
    "char-nvidia-frontend rw",  # /dev/nvidia0..N, also GPUs hot-added later
    "char-nvidia-caps rw",  # MIG
    "char-nvidia-uvm rw",
)
AMD_DEVICE_ALLOW = ("/dev/kfd rw", "char-drm rw")


class Source(str, Enum):
    RULE = "rule"
    CONFIG = "config"
    HARDENING = "hardening"


class Section(str, Enum):
    UNIT = "Unit"
    SERVICE = "Service"
    ENV = "Environment"  # rendered as Environment= lines in [Service]


@dataclass(frozen=True)
class Setting:
    section: Section
    key: str
    value: str | None  # None: deliberately left out; the reason says why
    source: Source
    reason: str


@dataclass(frozen=True)
class Deployment:
    unit_name: str
    systemd_version: int
    settings: tuple[Setting, ...]
    write_base_unit: bool  # no unit installed: write a whole one (never edit a packaged unit)
    base_unit: tuple[tuple[Section, str, str], ...]  # only used when write_base_unit
    modules_load: tuple[str, ...]  # kernel modules to load before the unit (NVIDIA)
    bind_host: str
    bind_port: int
    notes: tuple[str, ...] = ()

    @property
    def dropin_path(self) -> str:
        return f"/etc/systemd/system/{self.unit_name}.d/{DROPIN_NAME}"

    @property
    def unit_path(self) -> str:
        return f"/etc/systemd/system/{self.unit_name}"

    def active(self, section: Section | None = None) -> list[Setting]:
        return [
            s
            for s in self.settings
            if s.value is not None and (section is None or s.section is section)
        ]

    def value(self, key: str) -> str | None:
        """Last written value of a key (any section); None when left out."""
        found = [s.value for s in self.settings if s.key == key and s.value is not None]
        return found[-1] if found else None

    @property
    def api_url(self) -> str:
        host = self.bind_host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.bind_port}"


class _Builder:
    """Collects settings, filtering what the target systemd cannot read."""

    def __init__(self, version: int, relax: Iterable[str]) -> None:
        self.version = version
        self.relax = set(relax)
        self.settings: list[Setting] = []

    def add(
        self, section: Section, key: str, value: str | None, source: Source, reason: str
    ) -> None:
        if value is not None and section is not Section.ENV:
            known = directives.lookup(key)
            if known is not None and not directives.supported(key, self.version):
                value, reason = (
                    None,
                    f"left out: needs systemd >= {known.since}, target has {self.version}",
                )
            elif source is Source.HARDENING and key in self.relax:
                value, source, reason = (
                    None,
                    Source.CONFIG,
                    "left at systemd's default: hardening.relax",
                )
        self.settings.append(Setting(section, key, value, source, reason))


def _mib(num_bytes: int) -> str:
    return f"{num_bytes // MiB}M"


def _memory(b: _Builder, facts: HostFacts, cfg: DeploymentConfig) -> None:
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


def _cpu(b: _Builder, facts: HostFacts, cfg: DeploymentConfig) -> None:
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
    host_cpus = set()
    for numa in facts.numa_nodes:
        host_cpus.update(parse_cpu_list(numa.cpus))
    if not host_cpus:
        host_cpus = set(range(facts.cpus))
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
            if node is not None:
                b.add(
                    Section.SERVICE,
                    "AllowedCPUs",
                    node.cpus,
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


def _ollama_env(
    b: _Builder, facts: HostFacts, cfg: DeploymentConfig, bind: str, models: str
) -> None:
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
    b.add(
        Section.ENV,
        "OLLAMA_MODELS",
        models,
        Source.CONFIG if cfg.service.models_dir else Source.RULE,
        "service.models_dir"
        if cfg.service.models_dir
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


# The hardening every host gets, in the order it is written: (key, value, reason).
# A value of None means "left weaker than the maximum on purpose"; the reason says why.
_Row = tuple[str, str | None, str]
_KERNEL_AND_PROC: tuple[_Row, ...] = (
    ("PrivateMounts", "yes", "no mount changes leak in or out"),
    ("PrivateIPC", "yes", "own SysV IPC and POSIX queues"),
    ("ProtectKernelTunables", "yes", "/proc/sys and /sys read-only"),
    ("ProtectKernelModules", "yes", "no module loading (modules-load.d loads nvidia first)"),
    ("ProtectKernelLogs", "yes", "no kernel log ring buffer"),
    ("ProtectControlGroups", "yes", "cgroup tree read-only"),
    ("ProtectClock", "yes", "no clock changes"),
    ("ProtectHostname", "yes", "no hostname changes"),
    ("ProtectProc", "invisible", "other processes hidden in /proc"),
    ("ProcSubset", "all", "weaker than pid on purpose: Ollama reads /proc/meminfo to size models"),
    ("RestrictAddressFamilies", "", "reset: only the list below applies"),
    (
        "RestrictAddressFamilies",
        "AF_INET AF_INET6 AF_UNIX",
        "weaker on purpose: IP to serve the API, AF_UNIX for runtimes' socketpairs; no netlink, packet or others",
    ),
    ("RestrictNamespaces", "yes", "no new namespaces"),
    ("RestrictRealtime", "yes", "no realtime scheduling"),
    ("RestrictSUIDSGID", "yes", "no setuid/setgid files"),
    ("RemoveIPC", "yes", "IPC objects removed when the service stops"),
    ("LockPersonality", "yes", "no ABI personality changes"),
)
_SYSCALLS_AND_IDENTITY: tuple[_Row, ...] = (
    ("SystemCallArchitectures", "native", "no foreign ABIs"),
    ("SystemCallFilter", "", "reset: only the lists below apply"),
    (
        "SystemCallFilter",
        "@system-service",
        "service syscalls, @resources kept on purpose: ggml pins threads and binds NUMA memory",
    ),
    ("SystemCallFilter", "~@privileged", "no mount, reboot, swap, module or clock syscalls"),
    (
        "SystemCallErrorNumber",
        "EPERM",
        "a denied syscall fails with EPERM instead of killing Ollama",
    ),
    ("CapabilityBoundingSet", "", "no capabilities at all"),
    ("AmbientCapabilities", "", "no ambient capabilities"),
    ("KeyringMode", "private", "own kernel keyring"),
    ("UMask", "0077", "files Ollama creates are private to its user"),
    (
        "PrivateNetwork",
        None,
        "weaker: a network server needs the host's network; IPAddressAllow limits it",
    ),
    ("IPAddressDeny", "any", "default deny, in and out"),
)


def _hardening(
    b: _Builder, facts: HostFacts, cfg: DeploymentConfig, rw_paths: list[str], networks: list[str]
) -> None:
    def add(rows: Iterable[_Row]) -> None:
        for key, value, reason in rows:
            b.add(Section.SERVICE, key, value, Source.HARDENING, reason)

    home_like = any(
        p == q or p.startswith(q + "/") for p in rw_paths for q in ("/home", "/root", "/run/user")
    )
    gpu = bool(facts.nvidia_gpus or facts.amd_gpus)
    add(
        [
            ("NoNewPrivileges", "yes", "no setuid escalation from Ollama or its runners"),
            ("ProtectSystem", "strict", "the whole OS read-only except ReadWritePaths"),
            (
                (
                    "ProtectHome",
                    "read-only",
                    "home directories read-only: a write path lives under one",
                )
                if home_like
                else ("ProtectHome", "yes", "home directories invisible")
            ),
            *[
                ("ReadWritePaths", p, "Ollama writes its key, cache and models here")
                for p in rw_paths
            ],
            ("PrivateTmp", "yes", "own /tmp"),
        ]
    )
    if gpu:
        devices = (NVIDIA_DEVICE_ALLOW if facts.nvidia_gpus else ()) + (
            AMD_DEVICE_ALLOW if facts.amd_gpus else ()
        )
        add(
            [
                (
                    "PrivateDevices",
                    None,
                    "weaker: GPUs need their device nodes; DevicePolicy=closed lists them",
                ),
                (
                    "DevicePolicy",
                    "closed",
                    "only the GPU nodes below and /dev/null-style pseudo devices",
                ),
                ("DeviceAllow", "", "reset: only the list below applies"),
                *[("DeviceAllow", dev, "GPU access") for dev in devices],
            ]
        )
    else:
        add(
            [
                ("PrivateDevices", "yes", "no GPU: no hardware devices at all"),
                ("DevicePolicy", "closed", "only pseudo devices"),
            ]
        )
    add(
        [
            (
                "PrivateUsers",
                None,
                "weaker: /dev/kfd is reached through the render group, lost in a user namespace",
            )
            if facts.amd_gpus
            else ("PrivateUsers", "yes", "other users' files and IDs are invisible"),
            *_KERNEL_AND_PROC,
            (
                "MemoryDenyWriteExecute",
                None,
                "weaker: GPU runtimes (CUDA, ROCm) map writable+executable code",
            )
            if gpu
            else (
                "MemoryDenyWriteExecute",
                "yes",
                "no writable+executable memory (CPU inference needs none)",
            ),
            *_SYSCALLS_AND_IDENTITY,
            *[
                (
                    "IPAddressAllow",
                    net,
                    "allowed clients" if net != "localhost" else "loopback clients",
                )
                for net in networks
            ],
        ]
    )


def _restart(b: _Builder, cfg: DeploymentConfig) -> None:
    r = Source.RULE
    b.add(Section.SERVICE, "Type", "exec", r, "start fails at once when the binary cannot run")
    b.add(
        Section.SERVICE, "Restart", "on-failure", r, "restart on crash or kill, not on a clean stop"
    )
    b.add(Section.SERVICE, "RestartSec", "5", r, "5 s between attempts")
    b.add(Section.SERVICE, "RestartSteps", "5", r, "back off over 5 steps ...")
    b.add(Section.SERVICE, "RestartMaxDelaySec", "5min", r, "... to 5 min between attempts")
    b.add(
        Section.UNIT,
        "StartLimitIntervalSec",
        "600",
        r,
        "in [Unit], not [Service] as the guide has it: 5 failed starts in 10 min stop the loop",
    )
    b.add(Section.UNIT, "StartLimitBurst", "5", r, "see StartLimitIntervalSec")
    b.add(
        Section.SERVICE,
        "TimeoutStopSec",
        "30",
        r,
        "Ollama stops in seconds; do not wait the guide's 2 min",
    )
    nofile = cfg.limits.nofile
    if nofile is not None:
        b.add(Section.SERVICE, "LimitNOFILE", str(nofile), Source.CONFIG, "limits.nofile")
    else:
        b.add(
            Section.SERVICE,
            "LimitNOFILE",
            "65536",
            r,
            "one descriptor per client connection and model file",
        )
    b.add(
        Section.SERVICE,
        "LimitMEMLOCK",
        "infinity",
        r,
        "lets use_mlock pin model weights without a capability",
    )


def build(facts: HostFacts, cfg: DeploymentConfig) -> Deployment:
    """Decide every setting of the deployment for this host and config."""
    svc = cfg.service
    host, port = validate_bind(svc.bind)
    networks = ["localhost"]
    if not is_loopback(host):
        if host not in ("0.0.0.0", "::"):
            # Health checks connect to the bind address itself, from that address.
            networks.append(host)
        if not svc.allowed_networks:
            raise PlanError(
                f"service.bind = {svc.bind!r} exposes the API to the network; list the client "
                'networks in service.allowed_networks (e.g. ["10.0.0.0/8"]) or bind to 127.0.0.1'
            )
        networks += [n for n in svc.allowed_networks if n not in networks]
    elif svc.allowed_networks:
        raise PlanError(
            f"service.allowed_networks is set but service.bind = {svc.bind!r} is loopback; "
            "bind to a non-loopback address or remove allowed_networks"
        )
    if svc.models_dir and "OLLAMA_MODELS" in cfg.environment:
        raise PlanError(
            "set the model store once: service.models_dir or environment.OLLAMA_MODELS, not both"
        )

    b = _Builder(facts.systemd_version, cfg.hardening.relax)
    for name in cfg.hardening.relax:
        if directives.lookup(name) is None:
            raise PlanError(
                f"hardening.relax names {name!r}, which is not a directive ollama-ops writes"
            )
    installed = facts.ollama
    dynamic = installed.user is None
    # A system user made with `-d /` or `-d /nonexistent` has no usable home:
    # systemd sets no $HOME for "/", and `ollama serve` then exits. Give it a state directory.
    homeless = not dynamic and installed.home in ("/", "/nonexistent")
    home = DYNAMIC_HOME if dynamic or homeless else (installed.home or INSTALLER_HOME)
    models = svc.models_dir or cfg.environment.get("OLLAMA_MODELS") or f"{home}/.ollama/models"
    if dynamic and (svc.models_dir or "OLLAMA_MODELS" in cfg.environment):
        raise PlanError(
            f"a models directory ({models}) needs a fixed service user, but this host has no "
            "ollama user (DynamicUser); create it with `useradd -r -U -m -d /usr/share/ollama "
            "ollama` or leave service.models_dir unset"
        )
    rw_paths: list[str] = [] if dynamic or homeless else [home]
    if not (models == home or models.startswith(home + "/")):
        rw_paths.append(models)
    rw_paths += [p for p in cfg.hardening.read_write_paths if p not in rw_paths]

    unit = Section.UNIT
    b.add(unit, "After", "network-online.target", Source.RULE, "bind after the network is up")
    b.add(
        unit,
        "Wants",
        "network-online.target",
        Source.RULE,
        "pull network-online in (the installer only orders)",
    )
    modules: tuple[str, ...] = ()
    if facts.nvidia_gpus:
        modules = ("nvidia", "nvidia_uvm")
        b.add(
            unit,
            "After",
            "systemd-modules-load.service nvidia-persistenced.service",
            Source.RULE,
            "GPU driver loaded first: NoNewPrivileges stops nvidia-modprobe from loading nvidia_uvm later",
        )
    _restart(b, cfg)
    _memory(b, facts, cfg)
    _cpu(b, facts, cfg)
    if dynamic or homeless:
        b.add(
            Section.SERVICE,
            "StateDirectory",
            "ollama",
            Source.RULE,
            "no ollama user: systemd makes /var/lib/ollama"
            if dynamic
            else f"the ollama user's home is {installed.home}: systemd makes /var/lib/ollama instead",
        )
        if facts.amd_gpus:
            b.add(
                Section.SERVICE,
                "SupplementaryGroups",
                "render video",
                Source.RULE,
                "ROCm opens /dev/kfd and /dev/dri through these groups",
            )
        b.add(
            Section.ENV,
            "HOME",
            home,
            Source.RULE,
            "Ollama keeps its key and models under $HOME/.ollama",
        )
    _hardening(b, facts, cfg, rw_paths, networks)
    bind_text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    _ollama_env(b, facts, cfg, bind_text, models)

    base: tuple[tuple[Section, str, str], ...] = ()
    write_base = installed.unit_path is None
    if write_base:
        binary = svc.binary or installed.binary or DEFAULT_BINARY
        base = (
            (Section.UNIT, "Description", "Ollama Service"),
            (Section.UNIT, "Documentation", "https://github.com/ollama/ollama"),
            (Section.SERVICE, "ExecStart", f"{binary} serve"),
            *(
                ((Section.SERVICE, "DynamicUser", "yes"),)
                if dynamic
                else (
                    (Section.SERVICE, "User", installed.user or "ollama"),
                    (Section.SERVICE, "Group", installed.group or installed.user or "ollama"),
                )
            ),
            (Section.SERVICE, "Restart", "on-failure"),
        )
    elif svc.binary:
        b.add(Section.SERVICE, "ExecStart", "", Source.CONFIG, "reset the packaged ExecStart")
        b.add(Section.SERVICE, "ExecStart", f"{svc.binary} serve", Source.CONFIG, "service.binary")
    notes = []
    if installed.binary is None and not svc.binary:
        notes.append(
            f"ollama is not installed here: the unit runs {DEFAULT_BINARY}; install it before starting"
        )
    if networks == ["localhost"]:
        notes.append(
            "IPAddressDeny=any also blocks `ollama pull` (the server downloads): pull through a proxy "
            "in allowed_networks, or copy models in"
        )
    return Deployment(
        unit_name=svc.unit,
        systemd_version=facts.systemd_version,
        settings=tuple(b.settings),
        write_base_unit=write_base,
        base_unit=base,
        modules_load=modules,
        bind_host=host,
        bind_port=port,
        notes=tuple(notes),
    )
