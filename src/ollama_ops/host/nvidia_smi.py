"""Parsers for ``nvidia-smi`` output, and the commands that change GPU settings. Pure parsing.

Two read formats, both tested against published captures of real GPUs
(tests/fixtures/gpu/README.md):

* ``nvidia-smi -q -x``: everything, including the supported clocks. The
  power block is ``<power_readings>`` (power_limit, enforced_power_limit) up
  to driver 530 and ``<gpu_power_readings>`` (current_power_limit,
  requested_power_limit) from 535 on; both are read.
* ``nvidia-smi --query-gpu=... --format=csv``: one row per GPU under a
  header; columns are found by name (the unit in brackets is dropped), so
  any field list that includes ours parses, and values may carry units
  ("250.00 W") or not (``nounits``).

GPUs appear in nvidia-smi's own order, which is its index (PCI bus order).
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from ollama_ops.errors import CommandError
from ollama_ops.gpu.model import GpuReading
from ollama_ops.host.nvml import normalize_pci_bus_id

# The fields `gpu` asks for in CSV form (read-back after apply, and the fallback reader).
QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "driver_version",
    "persistence_mode",
    "power.limit",
    "enforced.power.limit",
    "power.default_limit",
    "power.min_limit",
    "power.max_limit",
    "clocks.max.graphics",
)
QUERY_ARGV = ("--query-gpu=" + ",".join(QUERY_FIELDS), "--format=csv")
XML_ARGV = ("-q", "-x")

_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(W|MHz|MiB|%)?\s*$")


def _value(text: str | None) -> str | None:
    """A cell or element text; None for N/A, [Not Supported], deprecation notices, empty."""
    if text is None:
        return None
    text = text.strip()
    if not text or text.startswith("[") or text.upper() in {"N/A", "NOT SUPPORTED", "UNKNOWN"}:
        return None
    return text


def _float(text: str | None) -> float | None:
    value = _value(text)
    match = _NUMBER.match(value) if value else None
    return float(match.group(1)) if match else None


def _int(text: str | None) -> int | None:
    number = _float(text)
    return int(number) if number is not None else None


def _enabled(text: str | None) -> bool | None:
    value = _value(text)
    if value is None:
        return None
    lowered = value.lower()
    if lowered in {"enabled", "on", "1", "yes"}:
        return True
    if lowered in {"disabled", "off", "0", "no"}:
        return False
    return None


def _bus_id(text: str | None) -> str:
    value = _value(text)
    return normalize_pci_bus_id(value) if value else ""


# ---------------------------------------------------------------- nvidia-smi -q -x


def _first(gpu: ET.Element, *paths: str) -> str | None:
    """The first of ``paths`` that has a value (drivers renamed the power elements)."""
    for path in paths:
        value = _value(gpu.findtext(path))
        if value is not None:
            return value
    return None


def _supported_clocks(gpu: ET.Element) -> tuple[int, ...]:
    clocks: set[int] = set()
    for mem in gpu.findall("supported_clocks/supported_mem_clock"):
        for graphics in mem.findall("supported_graphics_clock"):
            value = _int(graphics.text)
            if value:
                clocks.add(value)
    return tuple(sorted(clocks, reverse=True))


def _xml_gpu(gpu: ET.Element, index: int, driver: str) -> GpuReading:
    power = ("gpu_power_readings", "power_readings")
    return GpuReading(
        index=index,
        name=_value(gpu.findtext("product_name")) or "",
        uuid=_value(gpu.findtext("uuid")) or "",
        pci_bus_id=_bus_id(gpu.findtext("pci/pci_bus_id") or gpu.get("id")),
        persistence=_enabled(gpu.findtext("persistence_mode")),
        power_limit_w=_float(
            _first(
                gpu, *(f"{p}/{k}" for p in power for k in ("requested_power_limit", "power_limit"))
            )
        ),
        power_enforced_w=_float(
            _first(
                gpu,
                *(
                    f"{p}/{k}"
                    for p in power
                    for k in ("current_power_limit", "enforced_power_limit")
                ),
            )
        ),
        power_default_w=_float(_first(gpu, *(f"{p}/default_power_limit" for p in power))),
        power_min_w=_float(_first(gpu, *(f"{p}/min_power_limit" for p in power))),
        power_max_w=_float(_first(gpu, *(f"{p}/max_power_limit" for p in power))),
        clock_max_mhz=_int(gpu.findtext("max_clocks/graphics_clock")),
        supported_clocks_mhz=_supported_clocks(gpu),
        driver=driver,
        source="nvidia-smi -q -x",
    )


def parse_query_xml(text: str) -> tuple[GpuReading, ...]:
    """Every GPU in ``nvidia-smi -q -x`` output; CommandError when it is not that XML."""
    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError as exc:
        raise CommandError(
            f"nvidia-smi -q -x printed something that is not XML ({exc}); "
            "check the driver with `nvidia-smi`"
        ) from exc
    if root.tag != "nvidia_smi_log":
        raise CommandError(f"nvidia-smi -q -x: unexpected root <{root.tag}>; is this nvidia-smi?")
    driver = _value(root.findtext("driver_version")) or ""
    return tuple(_xml_gpu(gpu, i, driver) for i, gpu in enumerate(root.findall("gpu")))


# ---------------------------------------------------------------- --query-gpu CSV


def _header_name(cell: str) -> str:
    """``power.limit [W]`` -> ``power.limit``."""
    return cell.split(" [", 1)[0].strip()


def _csv_gpu(row: Mapping[str, str], position: int) -> GpuReading:
    index = _int(row.get("index"))
    return GpuReading(
        index=position if index is None else index,
        name=_value(row.get("name")) or "",
        uuid=_value(row.get("uuid")) or "",
        pci_bus_id=_bus_id(row.get("pci.bus_id")),
        persistence=_enabled(row.get("persistence_mode")),
        power_limit_w=_float(row.get("power.limit")),
        power_enforced_w=_float(row.get("enforced.power.limit")),
        power_default_w=_float(row.get("power.default_limit")),
        power_min_w=_float(row.get("power.min_limit")),
        power_max_w=_float(row.get("power.max_limit")),
        clock_max_mhz=_int(row.get("clocks.max.graphics") or row.get("clocks.max.gr")),
        driver=_value(row.get("driver_version")) or "",
        source="nvidia-smi --query-gpu",
    )


def parse_query_csv(text: str) -> tuple[GpuReading, ...]:
    """Every GPU in ``nvidia-smi --query-gpu=... --format=csv`` output (with its header).

    Columns are matched by name, so extra fields are ignored and missing ones
    read as None. A row whose cell count differs from the header (a name with
    a comma would do that) raises CommandError rather than shifting values.
    """
    try:
        rows = list(csv.reader(io.StringIO(text.strip(), newline=""), skipinitialspace=True))
    except csv.Error as exc:
        raise CommandError(f"nvidia-smi --query-gpu printed unreadable CSV ({exc})") from exc
    if not rows:
        return ()
    header = [_header_name(cell) for cell in rows[0]]
    if "name" not in header and "uuid" not in header:
        raise CommandError(
            "nvidia-smi --query-gpu printed no header row; run it with --format=csv (not noheader)"
        )
    gpus = []
    for position, cells in enumerate(rows[1:]):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise CommandError(
                f"nvidia-smi --query-gpu: row {position + 1} has {len(cells)} cells for "
                f"{len(header)} columns; report the nvidia-smi version"
            )
        gpus.append(_csv_gpu(dict(zip(header, cells, strict=True)), position))
    return tuple(gpus)


# ---------------------------------------------------------------- setting values


def persistence_argv(selector: str, on: bool) -> list[str]:
    return [f"--id={selector}", f"--persistence-mode={1 if on else 0}"]


def power_limit_argv(selector: str, watts: float) -> list[str]:
    return [f"--id={selector}", f"--power-limit={format_watts(watts)}"]


def lock_clocks_argv(selector: str, mhz: int) -> list[str]:
    return [f"--id={selector}", f"--lock-gpu-clocks={mhz},{mhz}"]


def reset_clocks_argv(selector: str) -> list[str]:
    return [f"--id={selector}", "--reset-gpu-clocks"]


def format_watts(watts: float) -> str:
    """300.0 -> "300", 262.5 -> "262.5" (nvidia-smi takes fractional watts)."""
    return f"{watts:.2f}".rstrip("0").rstrip(".")
