"""A unit's memory cgroup under a root: usage now, the peak since its start, limits, OOM events.

cgroup v2 (``/sys/fs/cgroup/<ControlGroup>/``): ``memory.current``,
``memory.peak`` (kernel 5.19+), ``memory.high``, ``memory.max``,
``memory.events``. cgroup v1 (``/sys/fs/cgroup/memory/<ControlGroup>/``,
also systemd's hybrid layout): ``memory.usage_in_bytes``,
``memory.max_usage_in_bytes``, ``memory.limit_in_bytes``, ``memory.failcnt``
and ``oom_kill`` from ``memory.oom_control``. The cgroup is created when the
unit starts, so the peak covers the current run only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ollama_ops.errors import OpsError

V1_UNLIMITED = 9223372036854771712  # PAGE_COUNTER_MAX on 4 KiB pages


@dataclass(frozen=True)
class CgroupMemory:
    version: int  # 1 or 2
    path: str  # the directory as the host names it
    current: int
    peak: int | None  # None: this kernel does not record it (v2 before 5.19)
    high: int | None  # None: no limit
    max: int | None
    oom_kills: int
    limit_hits: int  # v2 events "max", v1 failcnt
    events: dict[str, int] = field(default_factory=dict)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _number(text: str | None) -> int | None:
    if text is None or text == "max":
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _pairs(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _v2(root: Path, group: str) -> CgroupMemory | None:
    directory = root / "sys/fs/cgroup" / group.lstrip("/")
    current = _number(_read(directory / "memory.current"))
    if current is None:
        return None
    events = _pairs(_read(directory / "memory.events"))
    return CgroupMemory(
        version=2,
        path="/" + str(directory.relative_to(root)),
        current=current,
        peak=_number(_read(directory / "memory.peak")),
        high=_number(_read(directory / "memory.high")),
        max=_number(_read(directory / "memory.max")),
        oom_kills=events.get("oom_kill", 0),
        limit_hits=events.get("max", 0),
        events=events,
    )


def _v1(root: Path, group: str) -> CgroupMemory | None:
    directory = root / "sys/fs/cgroup/memory" / group.lstrip("/")
    current = _number(_read(directory / "memory.usage_in_bytes"))
    if current is None:
        return None
    limit = _number(_read(directory / "memory.limit_in_bytes"))
    soft = _number(_read(directory / "memory.soft_limit_in_bytes"))
    control = _pairs(_read(directory / "memory.oom_control"))
    failcnt = _number(_read(directory / "memory.failcnt")) or 0
    return CgroupMemory(
        version=1,
        path="/" + str(directory.relative_to(root)),
        current=current,
        peak=_number(_read(directory / "memory.max_usage_in_bytes")),
        high=None if soft is None or soft >= V1_UNLIMITED else soft,
        max=None if limit is None or limit >= V1_UNLIMITED else limit,
        oom_kills=control.get("oom_kill", 0),
        limit_hits=failcnt,
        events={"failcnt": failcnt, **control},
    )


def read(root: Path, group: str, unit: str) -> CgroupMemory:
    """The memory cgroup ``group`` (systemd's ControlGroup=) under ``root``; OpsError if none."""
    if not group:
        raise OpsError(
            f"{unit} has no cgroup (it is not running); start it and let it serve real "
            "traffic before measuring"
        )
    found = _v2(root, group) or _v1(root, group)
    if found is None:
        raise OpsError(
            f"no memory accounting for {unit}: neither {root}/sys/fs/cgroup{group}/memory.current "
            f"(v2) nor /sys/fs/cgroup/memory{group}/memory.usage_in_bytes (v1) exists; this "
            "kernel or container does not give the unit a memory cgroup"
        )
    return found
