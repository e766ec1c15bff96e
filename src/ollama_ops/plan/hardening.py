"""Hardening and restart policy: the sandbox every host gets, and how the unit restarts.

Rows are (key, value, reason); a value of None is left weaker than the
maximum on purpose and the reason says why.
"""

from __future__ import annotations

from collections.abc import Iterable

from ollama_ops.model.config import DeploymentConfig
from ollama_ops.model.deployment import Section, Source
from ollama_ops.model.facts import HostFacts
from ollama_ops.models import rules
from ollama_ops.plan.builder import Builder

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


# A value granted to the service (a write path, a client network) and where it came from.
Grant = tuple[str, Source, str]

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
)


def hardening(
    b: Builder,
    facts: HostFacts,
    cfg: DeploymentConfig,
    rw_paths: list[Grant],
    networks: list[Grant],
) -> None:
    def add(rows: Iterable[_Row]) -> None:
        for key, value, reason in rows:
            b.add(Section.SERVICE, key, value, Source.HARDENING, reason)

    def grant(key: str, grants: list[Grant]) -> None:
        for value, source, reason in grants:
            b.add(Section.SERVICE, key, value, source, reason)

    home_like = any(
        p == q or p.startswith(q + "/")
        for p, _s, _r in rw_paths
        for q in ("/home", "/root", "/run/user")
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
        ]
    )
    grant("ReadWritePaths", rw_paths)
    add([("PrivateTmp", "yes", "own /tmp")])
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
        ]
    )
    if rules.egress_open(cfg):  # service.egress = "open": no IP filter (models/rules.py)
        b.add(Section.SERVICE, "IPAddressDeny", None, Source.CONFIG, rules.OPEN_REASON)
        for _net in networks:
            b.add(Section.SERVICE, "IPAddressAllow", None, Source.CONFIG, rules.OPEN_ALLOW_REASON)
        return
    add([("IPAddressDeny", "any", "default deny, in and out (`ollama-ops pull` opens it briefly)")])
    grant("IPAddressAllow", networks)


def restart(b: Builder, cfg: DeploymentConfig) -> None:
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
