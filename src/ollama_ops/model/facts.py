"""Facts about a host: the input of every sizing rule.

Pure data and its JSON form. Probing the live machine lives in ``probe``;
this module only models, validates and (de)serialises, so that a plan can be
made on one machine for another from its ``facts --json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from ollama_ops.errors import FactsError
from ollama_ops.unitfile.syntax import is_plain_path

# The home the official installer gives its `ollama` user (useradd -m -d ...).
INSTALLER_HOME = "/usr/share/ollama"


class GpuVendor(str, Enum):
    NVIDIA = "nvidia"
    AMD = "amd"


@dataclass(frozen=True)
class NumaNode:
    id: int
    cpus: str  # kernel list syntax, e.g. "0-15,32-47"


@dataclass(frozen=True)
class Gpu:
    index: int
    vendor: GpuVendor
    name: str = ""
    memory_bytes: int = 0
    numa_node: int | None = None  # None: the PCI device reports no node (-1)
    power_limit_max_w: float | None = None
    clock_max_mhz: int | None = None
    pci_bus_id: str = ""


@dataclass(frozen=True)
class OllamaInstall:
    binary: str | None = None  # absolute path of the `ollama` binary, if found
    version: str | None = None
    user: str | None = None  # the service account, if it exists
    group: str | None = None
    home: str | None = None
    unit_path: str | None = None  # the installed ollama.service, if any


@dataclass(frozen=True)
class HostFacts:
    memory_bytes: int
    cpus: int
    numa_nodes: tuple[NumaNode, ...] = ()
    gpus: tuple[Gpu, ...] = ()
    device_nodes: tuple[str, ...] = ()  # GPU device nodes present under /dev
    systemd_version: int = 252
    ollama: OllamaInstall = field(default_factory=OllamaInstall)
    hostname: str = ""

    @property
    def nvidia_gpus(self) -> tuple[Gpu, ...]:
        return tuple(g for g in self.gpus if g.vendor is GpuVendor.NVIDIA)

    @property
    def amd_gpus(self) -> tuple[Gpu, ...]:
        return tuple(g for g in self.gpus if g.vendor is GpuVendor.AMD)

    @property
    def vram_bytes(self) -> int:
        return sum(g.memory_bytes for g in self.gpus)

    def cpu_set(self) -> set[int]:
        """Every CPU of the host: the NUMA nodes' lists, else 0..cpus-1."""
        cpus: set[int] = set()
        for node in self.numa_nodes:
            cpus.update(parse_cpu_list(node.cpus))
        return cpus or set(range(self.cpus))


def parse_cpu_list(text: str) -> list[int]:
    """Expand kernel CPU-list syntax ("0-3,8,10-11") into CPU numbers."""
    cpus: list[int] = []
    text = text.strip()
    if not text:
        return cpus
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            start = int(lo)
            end = int(hi) if sep else start
        except ValueError as exc:
            raise FactsError(
                f'CPU list {text!r}: {part!r} is not a number or range; write e.g. "0-15,32-47"'
            ) from exc
        if start < 0 or end < start:
            raise FactsError(f"CPU list {text!r}: range {part!r} is backwards or negative")
        cpus.extend(range(start, end + 1))
    return cpus


def format_cpu_list(cpus: list[int] | tuple[int, ...]) -> str:
    """Compress CPU numbers into kernel CPU-list syntax."""
    ordered = sorted(set(cpus))
    ranges: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        ranges.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(ranges)


# ---------------------------------------------------------------- JSON form


def to_json_dict(facts: HostFacts) -> dict[str, Any]:
    data = asdict(facts)
    for gpu in data["gpus"]:
        gpu["vendor"] = GpuVendor(gpu["vendor"]).value
    return data


def dumps(facts: HostFacts) -> str:
    return json.dumps(to_json_dict(facts), indent=2, sort_keys=True) + "\n"


def _known(cls: type, data: Mapping[str, Any], where: str) -> None:
    import difflib

    names = {f.name for f in fields(cls)}
    for key in data:
        if key not in names:
            near = difflib.get_close_matches(key, sorted(names), n=1)
            hint = (
                f"; did you mean {near[0]!r}?"
                if near
                else f"; known keys: {', '.join(sorted(names))}"
            )
            raise FactsError(f"facts: unknown key {where}{key!r}{hint}")


def _int(
    data: Mapping[str, Any], key: str, default: int | None, where: str, *, minimum: int = 0
) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FactsError(f"facts: {where}{key} = {value!r} must be a whole number")
    if value < minimum:
        raise FactsError(
            f"facts: {where}{key} = {value} is impossible; it must be at least {minimum}"
        )
    return value


def _opt(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FactsError(f"facts: {where}{key} = {value!r} has the wrong type")
    return value


# These values end up in unit files (ExecStart=, User=, ReadWritePaths=), where a
# space splits a path in two: only plain names and paths are accepted.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$")


def _check_install(ollama: OllamaInstall) -> None:
    for key in ("binary", "home", "unit_path"):
        value = getattr(ollama, key)
        if value is not None and not is_plain_path(value):
            raise FactsError(
                f"facts: ollama.{key} = {value!r} must be an absolute path of letters, digits "
                "and ._/@+- (no spaces, quotes, '%' or '..')"
            )
    for key in ("user", "group"):
        value = getattr(ollama, key)
        if value is not None and not _NAME_RE.match(value):
            raise FactsError(f"facts: ollama.{key} = {value!r} is not a valid user or group name")


def from_json_dict(data: Any) -> HostFacts:
    if not isinstance(data, dict):
        raise FactsError(
            "facts: the top level must be a JSON object such as `ollama-ops facts --json` prints"
        )
    _known(HostFacts, data, "")
    for key in ("numa_nodes", "gpus", "device_nodes"):
        if not isinstance(data.get(key) or [], list):
            raise FactsError(f"facts: {key} = {data[key]!r} must be a list")
    nodes = []
    for i, raw in enumerate(data.get("numa_nodes") or []):
        where = f"numa_nodes[{i}]."
        if not isinstance(raw, dict):
            raise FactsError(f"facts: {where[:-1]} must be an object with id and cpus")
        _known(NumaNode, raw, where)
        cpus = raw.get("cpus", "")
        if not isinstance(cpus, str):
            raise FactsError(f'facts: {where}cpus = {cpus!r} must be a CPU list string like "0-15"')
        parse_cpu_list(cpus)
        nodes.append(NumaNode(id=_int(raw, "id", i, where), cpus=cpus))
    gpus = []
    for i, raw in enumerate(data.get("gpus") or []):
        where = f"gpus[{i}]."
        if not isinstance(raw, dict):
            raise FactsError(f"facts: {where[:-1]} must be an object")
        _known(Gpu, raw, where)
        vendor_raw = raw.get("vendor", "nvidia")
        try:
            vendor = GpuVendor(vendor_raw)
        except ValueError as exc:
            raise FactsError(
                f"facts: {where}vendor = {vendor_raw!r}; use one of: "
                + ", ".join(v.value for v in GpuVendor)
            ) from exc
        numa = raw.get("numa_node")
        if numa is not None and (isinstance(numa, bool) or not isinstance(numa, int)):
            raise FactsError(f"facts: {where}numa_node = {numa!r} must be a whole number or null")
        gpus.append(
            Gpu(
                index=_int(raw, "index", i, where),
                vendor=vendor,
                name=str(raw.get("name") or ""),
                memory_bytes=_int(raw, "memory_bytes", 0, where),
                numa_node=None if numa is None or numa < 0 else numa,
                power_limit_max_w=_opt(raw, "power_limit_max_w", (int, float), where),
                clock_max_mhz=_opt(raw, "clock_max_mhz", int, where),
                pci_bus_id=str(raw.get("pci_bus_id") or ""),
            )
        )
    ollama_raw = data.get("ollama") or {}
    if not isinstance(ollama_raw, dict):
        raise FactsError("facts: ollama must be an object")
    _known(OllamaInstall, ollama_raw, "ollama.")
    ollama = OllamaInstall(**{k: _opt(ollama_raw, k, str, "ollama.") for k in ollama_raw})
    _check_install(ollama)
    devices = data.get("device_nodes") or []
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise FactsError('facts: device_nodes must be a list of paths such as "/dev/nvidia0"')
    return HostFacts(
        memory_bytes=_int(data, "memory_bytes", None, "", minimum=1),
        cpus=_int(data, "cpus", 1, "", minimum=1),
        numa_nodes=tuple(nodes),
        gpus=tuple(gpus),
        device_nodes=tuple(devices),
        systemd_version=_int(data, "systemd_version", 252, "", minimum=200),
        ollama=ollama,
        hostname=str(data.get("hostname") or ""),
    )


def loads(text: str, source: str = "facts") -> HostFacts:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FactsError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "regenerate it with `ollama-ops facts --json`"
        ) from exc
    try:
        return from_json_dict(data)
    except FactsError as exc:
        raise FactsError(f"{source}: {exc}".replace(f"{source}: facts: ", f"{source}: ")) from exc
