"""Facts about a host: the input of every sizing rule.

Pure data and its JSON form. Probing the live machine lives in ``probe``;
this module only models, validates and (de)serialises, so that a plan can be
made on one machine for another from its ``facts --json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from typing import Any

from ollama_ops.errors import FactsError
from ollama_ops.unitfile.grammar import MAX_CPUS, cpu_ranges
from ollama_ops.unitfile.paths import is_plain_path, normalize

# The home the official installer gives its `ollama` user (useradd -m -d ...).
INSTALLER_HOME = "/usr/share/ollama"
# 52-bit physical addresses: no Linux host has more memory, no GPU either.
MAX_MEMORY_BYTES = 1 << 52
MAX_NUMA_NODES = 1024  # the kernel's largest MAX_NUMNODES (NODES_SHIFT 10)
MAX_GPUS = 1024


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
    uuid: str | None = None  # e.g. "GPU-5c3f..." (NVML / nvidia-smi); stable across re-indexing


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
    """Expand kernel CPU-list syntax ("0-3,8,10-11") into CPU numbers.

    ASCII digits only, every number below MAX_CPUS (the kernel's largest
    NR_CPUS), so a list can never stand for more CPUs than a kernel can have.
    Blanks around the list are allowed, nothing else; "" is no CPU at all.
    """
    cpus: list[int] = []
    stripped = text.strip(" \t\n")
    if not stripped:
        return cpus
    ranges = None if " " in stripped else cpu_ranges(stripped)
    if ranges is None:
        raise FactsError(
            f"CPU list {text[:60]!r} is not CPU numbers and ranges below {MAX_CPUS} "
            '(the largest NR_CPUS); write ASCII digits, e.g. "0-15,32-47"'
        )
    for first, last in ranges:
        cpus.extend(range(first, last + 1))
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
        if gpu["uuid"] is None:  # optional: facts files from before it stay the same
            del gpu["uuid"]
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
            raise FactsError(f"facts: unknown key {where}{_show(key)}{hint}")


def _int(
    data: Mapping[str, Any],
    key: str,
    default: int | None,
    where: str,
    *,
    minimum: int = 0,
    maximum: int = 1 << 31,
) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FactsError(f"facts: {where}{key} = {_show(value)} must be a whole number")
    if value < minimum:
        raise FactsError(
            f"facts: {where}{key} = {value} is impossible; it must be at least {minimum}"
        )
    if value > maximum:
        raise FactsError(
            f"facts: {where}{key} = {_show(value)} is impossible; it must be at most {maximum}"
        )
    return value


def _show(value: object) -> str:
    """A value for a one-line message: repr, cut short (a huge number stays readable)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return "a number of more than 30 digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _opt(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FactsError(f"facts: {where}{key} = {_show(value)} has the wrong type")
    if isinstance(value, float) and not 0 <= value < 1e9:
        raise FactsError(f"facts: {where}{key} = {_show(value)} is impossible")
    if isinstance(value, int) and not 0 <= value < 1 << 31:
        raise FactsError(f"facts: {where}{key} = {_show(value)} is impossible")
    return value


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    """An optional free-text field (hostname, a GPU's name): printable, one line, short."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FactsError(f"facts: {where}{key} = {_show(value)} must be a string")
    if not value.isprintable() or len(value) > 256:
        raise FactsError(
            f"facts: {where}{key} = {_show(value)} has control or unprintable characters or "
            "is over 256 characters; regenerate the facts with `ollama-ops facts --json`"
        )
    return value


# These values end up in unit files (ExecStart=, User=, ReadWritePaths=), where a
# space splits a path in two: only plain names and paths are accepted.
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")


def _check_install(ollama: OllamaInstall) -> OllamaInstall:
    """The install with its paths normalized; FactsError for a value that cannot be written."""
    paths: dict[str, str] = {}
    for key in ("binary", "home", "unit_path"):
        value = getattr(ollama, key)
        if value is None:
            continue
        if not is_plain_path(value):
            raise FactsError(
                f"facts: ollama.{key} = {_show(value)} must be an absolute path of letters, "
                "digits and ._/@+- (no spaces, quotes, '%' or '..')"
            )
        paths[key] = normalize(value)
    for key in ("user", "group"):
        value = getattr(ollama, key)
        if value is not None and not _NAME_RE.fullmatch(value):
            raise FactsError(
                f"facts: ollama.{key} = {_show(value)} is not a valid user or group name"
            )
    if ollama.version is not None and (
        not ollama.version.isprintable() or len(ollama.version) > 64
    ):
        raise FactsError(f"facts: ollama.version = {_show(ollama.version)} is not a version")
    return replace(ollama, **paths)


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    """A list field; absent or null is empty, anything else but a list is an error."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise FactsError(f"facts: {key} = {_show(value)} must be a list")
    return value


def _numa_nodes(raws: list[Any]) -> tuple[NumaNode, ...]:
    nodes: list[NumaNode] = []
    for i, raw in enumerate(raws):
        where = f"numa_nodes[{i}]."
        if not isinstance(raw, dict):
            raise FactsError(f"facts: {where[:-1]} must be an object with id and cpus")
        _known(NumaNode, raw, where)
        cpus = raw.get("cpus", "")
        if not isinstance(cpus, str):
            raise FactsError(
                f'facts: {where}cpus = {_show(cpus)} must be a CPU list string like "0-15"'
            )
        try:
            # "" is a node with memory and no CPUs (CXL, HBM); written back in one spelling.
            listed = format_cpu_list(parse_cpu_list(cpus))
        except FactsError as exc:
            raise FactsError(f"facts: {where}cpus: {exc}") from None
        node_id = _int(raw, "id", i, where, maximum=MAX_NUMA_NODES - 1)
        if any(n.id == node_id for n in nodes):
            raise FactsError(f"facts: {where}id = {node_id} is listed twice; each node once")
        nodes.append(NumaNode(id=node_id, cpus=listed))
    return tuple(nodes)


# NVML's "GPU-5c3f..." (MIG: "MIG-..."): ASCII letters, digits and dashes, bounded, so it
# is printable and fits one line wherever it lands (a config, a reason, a message).
_UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,99}")


def _uuid(raw: Mapping[str, Any], where: str) -> str | None:
    value: str | None = _opt(raw, "uuid", str, where)
    if value is not None and not _UUID_RE.fullmatch(value):
        raise FactsError(
            f"facts: {where}uuid = {_show(value)} is not a GPU UUID such as GPU-5c3f...; "
            "regenerate the facts with `ollama-ops facts --json`"
        )
    return value


def _gpu(raw: Any, i: int) -> Gpu:
    where = f"gpus[{i}]."
    if not isinstance(raw, dict):
        raise FactsError(f"facts: {where[:-1]} must be an object")
    _known(Gpu, raw, where)
    vendor_raw = raw.get("vendor", "nvidia")
    try:
        vendor = GpuVendor(vendor_raw)
    except (ValueError, TypeError) as exc:
        raise FactsError(
            f"facts: {where}vendor = {_show(vendor_raw)}; use one of: "
            + ", ".join(v.value for v in GpuVendor)
        ) from exc
    numa = raw.get("numa_node")
    if numa is not None and (isinstance(numa, bool) or not isinstance(numa, int)):
        raise FactsError(f"facts: {where}numa_node = {_show(numa)} must be a whole number or null")
    if numa is not None and numa >= MAX_NUMA_NODES:
        raise FactsError(f"facts: {where}numa_node = {_show(numa)} is impossible")
    return Gpu(
        index=_int(raw, "index", i, where, maximum=MAX_GPUS - 1),
        vendor=vendor,
        name=_text(raw, "name", where),
        memory_bytes=_int(raw, "memory_bytes", 0, where, maximum=MAX_MEMORY_BYTES),
        numa_node=None if numa is None or numa < 0 else numa,
        power_limit_max_w=_opt(raw, "power_limit_max_w", (int, float), where),
        clock_max_mhz=_opt(raw, "clock_max_mhz", int, where),
        pci_bus_id=_text(raw, "pci_bus_id", where),
        uuid=_uuid(raw, where),
    )


def _gpus(raws: list[Any]) -> tuple[Gpu, ...]:
    gpus: list[Gpu] = []
    for i, raw in enumerate(raws):
        gpu = _gpu(raw, i)
        if any(g.vendor is gpu.vendor and g.index == gpu.index for g in gpus):
            raise FactsError(
                f"facts: gpus[{i}].index = {gpu.index} is listed twice for {gpu.vendor.value}; "
                "each GPU once"
            )
        if gpu.uuid is not None and any(g.uuid == gpu.uuid for g in gpus):
            # [instances] may name a GPU by its UUID: it must name exactly one.
            raise FactsError(
                f"facts: gpus[{i}].uuid = {gpu.uuid!r} is listed twice; each GPU has its own"
            )
        gpus.append(gpu)
    return tuple(gpus)


def _device_nodes(raws: list[Any]) -> tuple[str, ...]:
    for path in raws:
        if not isinstance(path, str) or not is_plain_path(path) or not path.startswith("/dev/"):
            raise FactsError(
                f'facts: device_nodes has {_show(path)}; list paths such as "/dev/nvidia0"'
            )
    return tuple(raws)


def from_json_dict(data: Any) -> HostFacts:
    if not isinstance(data, dict):
        raise FactsError(
            "facts: the top level must be a JSON object such as `ollama-ops facts --json` prints"
        )
    _known(HostFacts, data, "")
    ollama_raw = data.get("ollama")
    if ollama_raw is None:
        ollama_raw = {}
    if not isinstance(ollama_raw, dict):
        raise FactsError("facts: ollama must be an object")
    _known(OllamaInstall, ollama_raw, "ollama.")
    ollama = OllamaInstall(**{k: _opt(ollama_raw, k, str, "ollama.") for k in ollama_raw})
    return HostFacts(
        memory_bytes=_int(data, "memory_bytes", None, "", minimum=1, maximum=MAX_MEMORY_BYTES),
        cpus=_int(data, "cpus", 1, "", minimum=1, maximum=MAX_CPUS),
        numa_nodes=_numa_nodes(_list(data, "numa_nodes")),
        gpus=_gpus(_list(data, "gpus")),
        device_nodes=_device_nodes(_list(data, "device_nodes")),
        systemd_version=_int(data, "systemd_version", 252, "", minimum=200, maximum=9999),
        ollama=_check_install(ollama),
        hostname=_text(data, "hostname", ""),
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FactsError(
                f"facts: the key {_show(key)} appears twice in one object; JSON readers "
                "disagree on which one wins, so keep one"
            )
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise FactsError(f"facts: {name} is not a JSON number; write a finite number")


def loads(text: str, source: str = "facts") -> HostFacts:
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        return from_json_dict(data)
    except json.JSONDecodeError as exc:
        raise FactsError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "regenerate it with `ollama-ops facts --json`"
        ) from exc
    except (ValueError, RecursionError) as exc:  # a number of over 4300 digits, deep nesting
        raise FactsError(
            f"{source}: cannot be read as facts ({(str(exc).splitlines() or ['?'])[0][:80]}); "
            "regenerate it with `ollama-ops facts --json`"
        ) from exc
    except FactsError as exc:
        raise FactsError(f"{source}: {exc}".replace(f"{source}: facts: ", f"{source}: ")) from exc
