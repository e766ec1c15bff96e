"""GpuPlan -> the oneshot unit that applies the GPU settings at every boot. Pure, plus one reader.

``ollama-ops-gpu.service`` runs ``nvidia-smi`` once per setting, after the
driver is loaded and nvidia-persistenced is up, and before Ollama: the power
limit, persistence mode and clock locks do not survive a reboot or a driver
reload, so they are set again on every start. A drop-in for the
``ollama@.service`` template orders every instance after it too (a unit
cannot name a template in ``Before=``). A failed setting fails this unit,
visibly, but does not stop Ollama (``Wants=``, not ``Requires=``).
"""

from __future__ import annotations

from pathlib import Path

from ollama_ops.apply import journal
from ollama_ops.apply.fileio import read_bytes
from ollama_ops.gpu.model import GpuPlan
from ollama_ops.host import nvidia_smi
from ollama_ops.unitfile import syntax as unit

GPU_UNIT = "ollama-ops-gpu.service"
UNIT_PATH = f"/etc/systemd/system/{GPU_UNIT}"
INSTANCE_DROPIN = "/etc/systemd/system/ollama@.service.d/40-ollama-ops-gpu.conf"
PATHS = (UNIT_PATH, INSTANCE_DROPIN)
DEFAULT_NVIDIA_SMI = "/usr/bin/nvidia-smi"

HEADER = (
    "Written by `ollama-ops gpu apply`; `ollama-ops gpu plan` explains every value.",
    "Settings from the limits each GPU reports; `ollama-ops gpu rollback` undoes them.",
)


def exec_lines(gpu_plan: GpuPlan, nvidia_smi_path: str) -> list[str]:
    """The ExecStart= commands, one setting each, GPU by GPU."""
    lines: list[str] = []
    for target in gpu_plan.targets:
        sel = target.reading.selector
        argvs = []
        if target.persistence is not None:
            argvs.append(nvidia_smi.persistence_argv(sel, target.persistence))
        if target.power_limit_w is not None:
            argvs.append(nvidia_smi.power_limit_argv(sel, target.power_limit_w))
        if target.lock_clock_mhz is not None:
            argvs.append(nvidia_smi.lock_clocks_argv(sel, target.lock_clock_mhz))
        lines += [" ".join([nvidia_smi_path, *argv]) for argv in argvs]
    return lines


def render(gpu_plan: GpuPlan, service_unit: str, nvidia_smi_path: str) -> dict[str, str]:
    """{path: text}; empty when there is nothing to set (a oneshot needs an ExecStart=)."""
    commands = exec_lines(gpu_plan, nvidia_smi_path)
    if not commands:
        return {}
    sections: list[unit.Section] = [
        (
            "Unit",
            [
                ("Description", "GPU power, clocks and persistence for Ollama (ollama-ops)"),
                ("After", "systemd-modules-load.service nvidia-persistenced.service"),
                ("Before", service_unit),
                # The driver's proc entry: a host (or container) without the module skips cleanly.
                ("ConditionPathExists", "/proc/driver/nvidia/version"),
            ],
        ),
        (
            "Service",
            [
                ("Type", "oneshot"),
                ("RemainAfterExit", "yes"),
                *(("ExecStart", unit.escape_specifiers(c)) for c in commands),
            ],
        ),
        ("Install", [("WantedBy", "multi-user.target")]),
    ]
    dropin = unit.render(
        [("Unit", [("Wants", GPU_UNIT), ("After", GPU_UNIT)])],
        header=(
            "Written by `ollama-ops gpu apply`: every instance starts after the GPU settings.",
        ),
    )
    return {UNIT_PATH: unit.render(sections, header=HEADER), INSTANCE_DROPIN: dropin}


def installed(root: Path) -> dict[str, str]:
    """The GPU files an earlier `gpu apply` wrote, as installed now.

    The main `apply` keeps them (every apply plans every owned file), so it
    neither rewrites nor removes what `gpu apply` decided.
    """
    owned = journal.owned_files(root)
    kept: dict[str, str] = {}
    for path in PATHS:
        if path in owned:
            data = read_bytes(root, path)
            if data is not None:
                kept[path] = data.decode("utf-8", errors="replace")
    return kept
