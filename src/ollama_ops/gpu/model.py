"""What a GPU reports about its settable limits, and what ollama-ops wants it set to. Pure data.

A :class:`GpuReading` is one NVIDIA GPU as NVML or ``nvidia-smi`` reports it:
its identity, persistence mode, the power limit with the range the card
allows, and the graphics clocks it lists as supported. A :class:`GpuTarget`
is what the plan wants for one GPU, each value with its reason. Both have a
JSON form: ``ollama-ops gpu status --json`` writes readings, and ``--facts``
reads them back, so a plan can be made for another machine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from ollama_ops.errors import FactsError


@dataclass(frozen=True)
class GpuReading:
    """One NVIDIA GPU's identity, settings and limits, in watts and MHz.

    None means the GPU (or the reader) does not report the value; a card
    without a settable power limit has no min/max.
    """

    index: int
    name: str = ""
    uuid: str = ""
    pci_bus_id: str = ""
    persistence: bool | None = None
    power_limit_w: float | None = None  # the limit set now (requested)
    power_enforced_w: float | None = None  # the limit in force (may be lower: other caps)
    power_default_w: float | None = None
    power_min_w: float | None = None
    power_max_w: float | None = None
    clock_max_mhz: int | None = None  # highest graphics clock
    supported_clocks_mhz: tuple[int, ...] = ()  # graphics clocks the card lists, highest first
    driver: str = ""
    source: str = ""  # which reader produced it: nvml, nvidia-smi -q -x, nvidia-smi --query-gpu

    @property
    def power_settable(self) -> bool:
        return (
            self.power_min_w is not None
            and self.power_max_w is not None
            and self.power_max_w >= self.power_min_w > 0
        )

    @property
    def selector(self) -> str:
        """What ``nvidia-smi --id=`` gets: the UUID, else the PCI bus id, else the index."""
        if self.uuid and self.uuid.strip("GPU-0") != "":
            return self.uuid
        return self.pci_bus_id or str(self.index)

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.name or 'unnamed'})"


@dataclass(frozen=True)
class GpuTarget:
    """The settings the plan wants for one GPU; None leaves a value alone."""

    reading: GpuReading
    persistence: bool | None
    persistence_reason: str
    power_limit_w: float | None
    power_reason: str
    lock_clock_mhz: int | None
    clock_reason: str

    @property
    def index(self) -> int:
        return self.reading.index


@dataclass(frozen=True)
class GpuPlan:
    targets: tuple[GpuTarget, ...]
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------- JSON form


def readings_to_json(readings: tuple[GpuReading, ...]) -> str:
    data = {"gpus": [asdict(r) for r in readings]}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _number(raw: dict[str, Any], key: str, where: str, kind: type) -> Any:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FactsError(f"{where}{key} = {value!r} must be a number or null")
    if kind is int:
        if not float(value).is_integer():
            raise FactsError(f"{where}{key} = {value!r} must be a whole number")
        return int(value)
    return float(value)


def _reading(raw: object, i: int) -> GpuReading:
    where = f"gpus[{i}]."
    if not isinstance(raw, dict):
        raise FactsError(f"gpus[{i}] must be an object as `ollama-ops gpu status --json` writes")
    known = {f.name for f in fields(GpuReading)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise FactsError(
            f"{where}{unknown[0]} is not a GPU field; known: {', '.join(sorted(known))}"
        )
    index = raw.get("index", i)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise FactsError(f"{where}index = {index!r} must be a whole number >= 0")
    persistence = raw.get("persistence")
    if persistence is not None and not isinstance(persistence, bool):
        raise FactsError(f"{where}persistence = {persistence!r} must be true, false or null")
    clocks = raw.get("supported_clocks_mhz") or []
    if not isinstance(clocks, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in clocks
    ):
        raise FactsError(f"{where}supported_clocks_mhz must be a list of MHz values")
    texts = {k: raw.get(k) or "" for k in ("name", "uuid", "pci_bus_id", "driver", "source")}
    for key, value in texts.items():
        if not isinstance(value, str):
            raise FactsError(f"{where}{key} = {value!r} must be a string")
    return GpuReading(
        index=index,
        persistence=persistence,
        power_limit_w=_number(raw, "power_limit_w", where, float),
        power_enforced_w=_number(raw, "power_enforced_w", where, float),
        power_default_w=_number(raw, "power_default_w", where, float),
        power_min_w=_number(raw, "power_min_w", where, float),
        power_max_w=_number(raw, "power_max_w", where, float),
        clock_max_mhz=_number(raw, "clock_max_mhz", where, int),
        supported_clocks_mhz=tuple(sorted(set(clocks), reverse=True)),
        **texts,
    )


def readings_from_json(text: str, source: str) -> tuple[GpuReading, ...]:
    """Readings from ``gpu status --json`` output; FactsError (one line) when malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FactsError(
            f"{source}: not valid JSON (line {exc.lineno}: {exc.msg}); "
            "write it with `ollama-ops gpu status --json`"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        raise FactsError(
            f'{source}: expected {{"gpus": [...]}} as `ollama-ops gpu status --json` writes'
        )
    try:
        readings = tuple(_reading(raw, i) for i, raw in enumerate(data["gpus"]))
    except FactsError as exc:
        raise FactsError(f"{source}: {exc}") from exc
    indexes = [r.index for r in readings]
    if len(set(indexes)) != len(indexes):
        raise FactsError(f"{source}: two GPUs share an index ({indexes}); each must be unique")
    return readings
