"""Rules on GPU access: does the sandbox leave Ollama the GPUs the host has?

A DeviceAllow= list without DevicePolicy=closed, PrivateDevices=yes, device
lists that leave out the NVIDIA or AMD nodes, NoNewPrivileges= (or a setting
implying it) that stops the setuid nvidia-modprobe while nothing loads
nvidia_uvm at boot, MemoryDenyWriteExecute= (CUDA and ROCm map W+X code), and
ROCm's need for the render/video group (no DynamicUser=, no PrivateUsers=).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator

from ollama_ops.audit import rules_instances
from ollama_ops.audit.context import Ctx, finding
from ollama_ops.audit.model import Finding, Severity
from ollama_ops.model.facts import HostFacts

_DRIVER_NAMES: tuple[tuple[str, str], ...] = (
    (r"/dev/nvidia-uvm(-tools)?", "nvidia-uvm"),
    (r"/dev/nvidia-caps/.*", "nvidia-caps"),
    (r"/dev/nvidia(ctl|\d+|-modeset)", "nvidia-frontend"),
    (r"/dev/kfd", "kfd"),
    (r"/dev/dri/.*", "drm"),
)
_NVIDIA_GPU_NODE = r"/dev/nvidia\d+"


def _allows(spec: str, node: str) -> bool:
    """Whether one DeviceAllow= value grants read+write on ``node``."""
    words = spec.split()
    if not words:
        return False
    target, mode = words[0], (words[1] if len(words) > 1 else "rwm")
    if "r" not in mode or "w" not in mode:
        return False
    if target.startswith("/dev/"):
        return target == node
    if target.startswith("char-"):
        pattern = target[len("char-") :]
        for regex, driver in _DRIVER_NAMES:
            if re.fullmatch(regex, node):
                return fnmatch.fnmatchcase(driver, pattern)
    return False


def _gpu_nodes(facts: HostFacts) -> list[tuple[str, bool]]:
    """(device node, required) for the host's GPUs; not required: only for MIG."""
    nodes: list[tuple[str, bool]] = []
    present = facts.device_nodes
    if facts.nvidia_gpus:
        nodes += [("/dev/nvidiactl", True), ("/dev/nvidia-uvm", True)]
        numbered = [d for d in present if re.fullmatch(_NVIDIA_GPU_NODE, d)] or [
            f"/dev/nvidia{g.index}" for g in facts.nvidia_gpus
        ]
        nodes += [(d, True) for d in sorted(numbered)]
        nodes += [(d, False) for d in present if d.startswith("/dev/nvidia-caps/")]
    if facts.amd_gpus:
        nodes.append(("/dev/kfd", True))
        render = [d for d in present if d.startswith("/dev/dri/renderD")] or [
            f"/dev/dri/renderD{128 + g.index}" for g in facts.amd_gpus
        ]
        nodes += [(d, True) for d in sorted(render)]
    return nodes


def rule_devices(ctx: Ctx) -> Iterator[Finding]:
    allow = ctx.values("DeviceAllow")
    policy_a = ctx.last("DevicePolicy")
    policy = policy_a.value.strip() if policy_a is not None else "auto"
    if allow and policy == "auto":
        yield finding(
            "device-policy-implicit",
            Severity.WARNING,
            allow[0],
            "DeviceAllow",
            "DeviceAllow= without DevicePolicy=closed: the kernel enforces the list only "
            "implicitly (auto + a list acts as closed), systemd-analyze security counts it as "
            '"no device ACL", and a later DeviceAllow= reset opens every device',
            "add DevicePolicy=closed next to the DeviceAllow= list",
        )
    facts = rules_instances.scoped_facts(ctx)  # an instance needs only its own GPUs
    if facts is None or not facts.gpus:
        return
    private = ctx.enabled("PrivateDevices")
    if private is not None:
        yield finding(
            "private-devices-gpu",
            Severity.ERROR,
            private,
            None,
            "PrivateDevices=yes gives the service a /dev without GPU nodes: Ollama finds no "
            "GPU and runs on the CPU",
            "set PrivateDevices=no and list the GPU nodes with DevicePolicy=closed and "
            "DeviceAllow=",
        )
    elif policy in ("closed", "strict") or allow:
        where = policy_a if policy_a is not None else allow[0]
        shown = policy if policy != "auto" else "auto (with a list: closed)"
        denied = [
            (node, required)
            for node, required in _gpu_nodes(facts)
            if not any(_allows(a.value, node) for a in allow)
        ]
        for required in (True, False):
            nodes = [node for node, req in denied if req is required]
            if not nodes:
                continue
            numbered = any(re.fullmatch(_NVIDIA_GPU_NODE, n) for n in nodes)
            yield finding(
                "gpu-device-denied",
                Severity.ERROR if required else Severity.WARNING,
                where,
                "DeviceAllow",
                f"DevicePolicy={shown} does not allow {', '.join(nodes)} rw: "
                + ("Ollama cannot use the GPU(s) behind them" if required else "MIG is unusable"),
                " ".join(f"DeviceAllow={n} rw" for n in nodes)
                + (" (or DeviceAllow=char-nvidia-frontend rw for every GPU)" if numbered else "")
                + ("" if required else " (or DeviceAllow=char-nvidia-caps rw)"),
            )
    if facts.nvidia_gpus:
        nnp = ctx.nnp()
        mods = ctx.files.boot_modules
        if nnp is not None and mods is not None and "nvidia_uvm" not in mods:
            yield finding(
                "nvidia-uvm-not-loaded",
                Severity.WARNING,
                nnp,
                None,
                (
                    "NoNewPrivileges=yes"
                    if nnp.key == "NoNewPrivileges"
                    else f"{nnp.key}={nnp.value} implies NoNewPrivileges=yes"
                )
                + ": the setuid nvidia-modprobe "
                "cannot load nvidia_uvm on first GPU use, and no modules-load.d entry loads it "
                "at boot: after a reboot Ollama may find no GPU",
                "list nvidia and nvidia_uvm in /etc/modules-load.d/nvidia.conf "
                "(`ollama-ops apply` writes it)",
            )
    mdwe = ctx.enabled("MemoryDenyWriteExecute")
    if mdwe is not None:
        yield finding(
            "mdwe-gpu",
            Severity.WARNING,
            mdwe,
            None,
            "MemoryDenyWriteExecute=yes on a GPU host: CUDA and ROCm map writable+executable "
            "code, so GPU runners can fail to start",
            "remove MemoryDenyWriteExecute= (keep it only on CPU-only hosts)",
        )
    if facts.amd_gpus:
        yield from _rule_amd_groups(ctx)
    pu = ctx.enabled("PrivateUsers")
    if facts.amd_gpus and pu is not None:
        yield finding(
            "private-users-amd",
            Severity.ERROR,
            pu,
            None,
            "PrivateUsers=yes on an AMD host: /dev/kfd and /dev/dri are reached through the "
            "render/video groups, which are unmapped in the user namespace",
            "remove PrivateUsers= on ROCm hosts",
        )


def _rule_amd_groups(ctx: Ctx) -> Iterator[Finding]:
    """ROCm opens /dev/kfd and /dev/dri/renderD* through the render (or video) group."""
    wanted = {"render", "video"}
    extra = set(ctx.words("SupplementaryGroups"))
    group = ctx.value("Group")
    if extra & wanted or (group in wanted):
        return
    groups = ctx.files.groups
    if ctx.dynamic:
        why = "DynamicUser=yes belongs to no group"
        where = ctx.last("DynamicUser")
    elif (
        groups is None
        or not ctx.non_root
        or any(ctx.user in groups.get(g, frozenset()) for g in wanted)
    ):
        return
    else:
        why = f"user {ctx.user} is in neither render nor video (/etc/group)"
        where = ctx.last("User")
    yield finding(
        "amd-no-render-group",
        Severity.ERROR,
        where,
        "SupplementaryGroups",
        f"{why}: ROCm cannot open /dev/kfd or /dev/dri/renderD*, so Ollama runs on the CPU",
        "add SupplementaryGroups=render video",
    )
