"""Read the live host into HostFacts, through the injected Runtime.

Every reader works under ``rt.root`` (the directory that stands for ``/``),
so the whole probe runs against a fake tree in tests or a mounted image, and
only touches the running system (NVML, nvidia-smi, ``systemctl``, ``ollama
--version``, the kernel's hostname), through the runtime, when it is live. Paths are
reported as the host sees them, without the ``root`` prefix.

Missing optional things (GPUs, NVML, nvidia-smi, ollama, its user, its unit)
are normal and give empty tuples or None. Only a root that is not a Linux
host at all (no readable ``proc/meminfo``) raises FactsError.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ollama_ops.errors import CommandError, FactsError
from ollama_ops.host.nvml import normalize_pci_bus_id
from ollama_ops.host.systemd import installed_version
from ollama_ops.model.facts import (
    Gpu,
    GpuVendor,
    HostFacts,
    NumaNode,
    OllamaInstall,
    format_cpu_list,
    parse_cpu_list,
)

if TYPE_CHECKING:
    from ollama_ops.runtime import Runner, Runtime

log = logging.getLogger(__name__)

DEFAULT_SYSTEMD_VERSION = 252
OLLAMA_USER = "ollama"
OLLAMA_BINARIES = ("usr/local/bin/ollama", "usr/bin/ollama", "bin/ollama")
OLLAMA_UNITS = (
    "etc/systemd/system/ollama.service",
    "usr/local/lib/systemd/system/ollama.service",
    "usr/lib/systemd/system/ollama.service",
    "lib/systemd/system/ollama.service",
)
# Globs relative to root/dev; see "Devices" in the Ollama facts reference.
DEVICE_GLOBS = (
    "nvidiactl",
    "nvidia[0-9]*",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
    "nvidia-caps/*",
    "kfd",
    "dri/renderD*",
    "dxg",
)
NVIDIA_SMI_QUERY = "index,name,memory.total,power.max_limit,clocks.max.sm,pci.bus_id,uuid"
AMD_VENDOR_ID = "0x1002"
MIB = 1024 * 1024


def probe_host(rt: Runtime, *, use_nvml: bool = True) -> HostFacts:
    """Collect the facts of the host whose filesystem is mounted at ``root``.

    With ``root`` other than ``/`` nothing live is queried: NVIDIA GPUs, the
    systemctl version, the ollama version and the kernel hostname then come
    only from files under ``root`` (or are absent). ``use_nvml=False`` skips
    NVML and asks nvidia-smi directly.
    """
    root, live = rt.root, rt.live
    memory = _read_memory_bytes(root)
    online = _read_online_cpus(root)
    nodes = _read_numa_nodes(root)
    cpus = _count_cpus(online, nodes, live)
    if not nodes:
        all_cpus = online if online is not None else format_cpu_list(list(range(cpus)))
        nodes = (NumaNode(id=0, cpus=all_cpus),)
    gpus = _nvidia_gpus(rt, use_nvml=use_nvml) + _read_amd_gpus(root)
    return HostFacts(
        memory_bytes=memory,
        cpus=cpus,
        numa_nodes=nodes,
        gpus=gpus,
        device_nodes=_read_device_nodes(root),
        systemd_version=_systemd_version(rt),
        ollama=_ollama_install(rt),
        hostname=_hostname(rt),
    )


# ---------------------------------------------------------------- helpers


def _read_text(path: Path) -> str | None:
    """The file's text, or None when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _read_first_line(path: Path) -> str | None:
    text = _read_text(path)
    if text is None:
        return None
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def _host_path(root: Path, path: Path) -> str:
    """``path`` (under ``root``) as the host itself names it."""
    return "/" + path.relative_to(root).as_posix()


def _natural_key(text: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _numa_node(path: Path) -> int | None:
    """A sysfs ``numa_node`` file: -1 (or missing, or junk) means no node."""
    text = _read_first_line(path)
    try:
        node = int(text) if text else -1
    except ValueError:
        return None
    return node if node >= 0 else None


# ---------------------------------------------------------------- memory and CPUs


def _read_memory_bytes(root: Path) -> int:
    path = root / "proc/meminfo"
    text = _read_text(path)
    if text is None:
        raise FactsError(
            f"{path}: cannot read it, so {root} is not a readable Linux host; "
            "pass --facts FILE or run on the host itself"
        )
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.MULTILINE)
    if not match or int(match.group(1)) <= 0:
        raise FactsError(f"{path}: no MemTotal line; pass --facts FILE or run on the host itself")
    return int(match.group(1)) * 1024


def _read_online_cpus(root: Path) -> str | None:
    """The kernel list of online CPUs ("0-15"), or None when it is unknown."""
    text = _read_first_line(root / "sys/devices/system/cpu/online")
    if not text:
        return None
    try:
        parse_cpu_list(text)
    except FactsError:
        log.warning(
            "%s: unparsable CPU list %r; ignoring it", root / "sys/devices/system/cpu/online", text
        )
        return None
    return text


def _count_cpus(online: str | None, nodes: tuple[NumaNode, ...], live: bool) -> int:
    if online is not None:
        return max(1, len(parse_cpu_list(online)))
    from_nodes = {cpu for node in nodes for cpu in parse_cpu_list(node.cpus)}
    if from_nodes:
        return len(from_nodes)
    if live:
        return os.cpu_count() or 1
    log.warning("no online CPU list under the probed root; assuming 1 CPU")
    return 1


def _read_numa_nodes(root: Path) -> tuple[NumaNode, ...]:
    """NUMA nodes that have CPUs, sorted by id; () when sysfs shows none.

    Memory-only nodes (CXL memory, GPU memory exposed as a node) have an
    empty cpulist and nothing to pin a process to, so they are left out.
    """
    nodes: list[NumaNode] = []
    base = root / "sys/devices/system/node"
    for path in base.glob("node*"):
        match = re.fullmatch(r"node(\d+)", path.name)
        if not match:
            continue
        cpus = _read_first_line(path / "cpulist")
        if not cpus:
            continue
        try:
            parse_cpu_list(cpus)
        except FactsError:
            log.warning("%s: unparsable CPU list %r; ignoring the node", path, cpus)
            continue
        nodes.append(NumaNode(id=int(match.group(1)), cpus=cpus))
    return tuple(sorted(nodes, key=lambda n: n.id))


# ---------------------------------------------------------------- NVIDIA


def _nvidia_gpus(rt: Runtime, *, use_nvml: bool) -> tuple[Gpu, ...]:
    if not rt.live:
        return ()
    root = rt.root
    found = rt.nvml() if use_nvml else None
    if found is None:
        found = _read_nvidia_smi_gpus(rt.run)
    return tuple(
        replace(
            gpu, numa_node=_numa_node(root / "sys/bus/pci/devices" / gpu.pci_bus_id / "numa_node")
        )
        if gpu.pci_bus_id
        else gpu
        for gpu in found
    )


def _smi_value(text: str) -> str | None:
    text = text.strip()
    if not text or text.strip("[]").lower() in {"n/a", "not supported", "unknown error"}:
        return None
    return text


def _parse_nvidia_smi_csv(text: str) -> tuple[Gpu, ...]:
    """Parse ``nvidia-smi --query-gpu=<NVIDIA_SMI_QUERY> --format=csv,noheader,nounits``."""
    gpus: list[Gpu] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        # The uuid column comes last (GPU-... or MIG-...); older output lacks it.
        uuid = cells.pop() if len(cells) >= 7 and re.match(r"(GPU|MIG)-", cells[-1]) else None
        if len(cells) < 6:
            log.warning("nvidia-smi: unexpected line %r; skipping it", line)
            continue
        # A name with a comma would shift the cells: rejoin the middle.
        index_s, *name_cells = cells[: len(cells) - 4]
        mem_s, power_s, clock_s, bus_s = (_smi_value(c) for c in cells[-4:])
        try:
            index = int(index_s)
            memory = int(float(mem_s)) * MIB if mem_s else 0
            power = float(power_s) if power_s else None
            clock = int(float(clock_s)) if clock_s else None
        except ValueError:
            log.warning("nvidia-smi: unexpected values in %r; skipping the line", line)
            continue
        gpus.append(
            Gpu(
                index=index,
                vendor=GpuVendor.NVIDIA,
                name=_smi_value(", ".join(name_cells)) or "",
                memory_bytes=memory,
                power_limit_max_w=power,
                clock_max_mhz=clock,
                pci_bus_id=normalize_pci_bus_id(bus_s) if bus_s else "",
                uuid=uuid,
            )
        )
    return tuple(gpus)


def _read_nvidia_smi_gpus(run: Runner) -> tuple[Gpu, ...]:
    """NVIDIA GPUs from nvidia-smi; () when it is missing or fails."""
    argv = ["nvidia-smi", f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits"]
    try:
        done = run(argv, timeout=30.0)
    except (CommandError, OSError) as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            log.debug("nvidia-smi not installed: no NVIDIA GPUs")
        else:
            log.warning("%s; reporting no NVIDIA GPUs", exc)
        return ()
    return _parse_nvidia_smi_csv(done.stdout)


# ---------------------------------------------------------------- AMD


def _read_amd_gpus(root: Path) -> tuple[Gpu, ...]:
    """AMD GPUs (vendor 0x1002 with VRAM) from /sys/class/drm/card*/device."""
    drm = root / "sys/class/drm"
    if not (root / "dev/kfd").exists() and not drm.is_dir():
        return ()
    cards: list[tuple[int, Path]] = []
    for path in drm.glob("card*"):
        match = re.fullmatch(r"card(\d+)", path.name)  # not card0-DP-1 connectors
        if match:
            cards.append((int(match.group(1)), path / "device"))
    gpus: list[Gpu] = []
    seen: set[Path] = set()
    for _, device in sorted(cards):
        if (_read_first_line(device / "vendor") or "").lower() != AMD_VENDOR_ID:
            continue
        vram = _read_first_line(device / "mem_info_vram_total")
        if not vram or not vram.isdigit():
            continue
        resolved = device.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        gpus.append(
            Gpu(
                index=len(gpus),
                vendor=GpuVendor.AMD,
                name=_read_first_line(device / "product_name") or "",
                memory_bytes=int(vram),
                numa_node=_numa_node(device / "numa_node"),
                pci_bus_id=_amd_bus_id(device, resolved),
            )
        )
    return tuple(gpus)


def _amd_bus_id(device: Path, resolved: Path) -> str:
    for line in (_read_text(device / "uevent") or "").splitlines():
        key, _, value = line.partition("=")
        if key == "PCI_SLOT_NAME" and value.strip():
            return normalize_pci_bus_id(value)
    if re.fullmatch(r"[0-9a-fA-F]+:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]", resolved.name):
        return normalize_pci_bus_id(resolved.name)
    return ""


# ---------------------------------------------------------------- devices


def _read_device_nodes(root: Path) -> tuple[str, ...]:
    dev = root / "dev"
    found: set[str] = set()
    for pattern in DEVICE_GLOBS:
        for path in dev.glob(pattern):
            found.add(_host_path(root, path))
    return tuple(sorted(found, key=_natural_key))


# ---------------------------------------------------------------- systemd


def _parse_libsystemd_shared_name(name: str) -> int | None:
    """``libsystemd-shared-252.so`` or ``libsystemd-shared-257.1-1.so`` -> 252 / 257."""
    match = re.fullmatch(r"libsystemd-shared-(\d+)(?:[.~-][^/]*)?\.so", name)
    return int(match.group(1)) if match else None


def _read_systemd_library_version(root: Path) -> int | None:
    versions: list[int] = []
    for libdir in ("usr/lib/systemd", "lib/systemd"):
        for path in (root / libdir).glob("libsystemd-shared-*.so"):
            version = _parse_libsystemd_shared_name(path.name)
            if version is not None:
                versions.append(version)
    return max(versions, default=None)


def _systemd_version(rt: Runtime) -> int:
    root = rt.root
    if rt.live:
        version = installed_version(rt.run)
        if version is not None:
            return version
    version = _read_systemd_library_version(root)
    if version is not None:
        return version
    log.warning("cannot tell the systemd version of %s; assuming %d", root, DEFAULT_SYSTEMD_VERSION)
    return DEFAULT_SYSTEMD_VERSION


# ---------------------------------------------------------------- ollama


def _parse_ollama_version(text: str) -> str | None:
    """The binary's version from ``ollama --version``.

    ``Warning: client version is X`` (printed when no server answers, or when
    it runs another version) names the binary itself, so it wins over
    ``ollama version is Y`` (the server's version).
    """
    client = re.search(r"client version is\s+(\S+)", text)
    if client:
        return client.group(1)
    server = re.search(r"ollama version is\s+(\S+)", text)
    return server.group(1) if server else None


def _ollama_version(run: Runner, binary: str) -> str | None:
    try:
        done = run([binary, "--version"], check=False, timeout=5.0)
    except (CommandError, OSError) as exc:  # OSError: not executable, wrong arch
        log.warning("%s --version: %s; version unknown", binary, exc)
        return None
    version = _parse_ollama_version(done.stdout + "\n" + done.stderr)
    if version is None:
        log.warning("%s --version: no version in its output", binary)
    return version


def _first_existing(root: Path, candidates: Iterable[str]) -> str | None:
    for rel in candidates:
        if (root / rel).is_file():
            return "/" + rel
    return None


def _colon_records(path: Path) -> list[list[str]]:
    records: list[list[str]] = []
    for raw in (_read_text(path) or "").splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "+", "-")):
            records.append(line.split(":"))
    return records


def _read_service_account(
    root: Path, user: str = OLLAMA_USER
) -> tuple[str | None, str | None, str | None]:
    """(user, group, home) of ``user`` from root/etc/passwd and root/etc/group.

    The group is the user's primary group; without the user, a group of the
    same name is still reported.
    """
    groups = {rec[2]: rec[0] for rec in _colon_records(root / "etc/group") if len(rec) >= 3}
    for rec in _colon_records(root / "etc/passwd"):
        if len(rec) >= 7 and rec[0] == user:
            return user, groups.get(rec[3]), rec[5] or None
    return None, (user if user in groups.values() else None), None


def _ollama_install(rt: Runtime) -> OllamaInstall:
    root = rt.root
    binary = _first_existing(root, OLLAMA_BINARIES)
    user, group, home = _read_service_account(root)
    return OllamaInstall(
        binary=binary,
        version=_ollama_version(rt.run, binary) if binary and rt.live else None,
        user=user,
        group=group,
        home=home,
        unit_path=_first_existing(root, OLLAMA_UNITS),
    )


# ---------------------------------------------------------------- hostname


def _hostname(rt: Runtime) -> str:
    for raw in (_read_text(rt.root / "etc/hostname") or "").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            return line
    return rt.hostname() if rt.live else ""
