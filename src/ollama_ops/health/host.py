"""The unit as systemd sees it, its cgroup's memory, and the clock: read through the Runtime.

Parsing is pure (``unit_state``, ``memory_state``); reading goes through
``rt.systemctl()`` and files under ``rt.root``. A missing systemd (no bus, no
systemctl) or cgroup v1 gives a state with ``available=False`` and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ollama_ops.errors import OpsError
from ollama_ops.health.model import MemoryState, UnitState
from ollama_ops.runtime import Runtime

UNIT_PROPS = (
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "NRestarts",
    "MainPID",
    "ActiveEnterTimestampMonotonic",
    "ControlGroup",
)


def _int(text: str | None) -> int:
    try:
        return int(text or "0")
    except ValueError:
        return 0


def unit_state(props: Mapping[str, str], now: float, restarts_before: int | None) -> UnitState:
    """`systemctl show` properties -> UnitState (``now`` on CLOCK_MONOTONIC, as systemd's)."""
    if props.get("LoadState") == "not-found":
        return UnitState(available=False, detail="the unit is not installed (LoadState=not-found)")
    entered = _int(props.get("ActiveEnterTimestampMonotonic"))
    restarts = _int(props.get("NRestarts"))
    return UnitState(
        available=True,
        active_state=props.get("ActiveState", ""),
        sub_state=props.get("SubState", ""),
        result=props.get("Result", ""),
        n_restarts=restarts,
        main_pid=_int(props.get("MainPID")),
        active_for_s=max(0.0, now - entered / 1e6) if entered else None,
        control_group=props.get("ControlGroup", ""),
        restarts_recent=max(0, restarts - restarts_before) if restarts_before is not None else 0,
    )


def read_unit(rt: Runtime, unit: str, restarts_before: int | None = None) -> UnitState:
    try:
        props = rt.systemctl().show(unit, UNIT_PROPS)
    except OpsError as exc:  # no systemctl, no bus, a timeout
        why = str(exc).rpartition(": ")[2] if " exited " in str(exc) else str(exc)
        return UnitState(available=False, detail=f"systemd not reachable ({why})")
    if not props.get("ActiveState"):
        return UnitState(available=False, detail=f"systemctl show {unit} said nothing")
    return unit_state(props, rt.clock(), restarts_before)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def parse_events(text: str) -> dict[str, int]:
    """memory.events ("oom 0\\noom_kill 1\\n...") -> {key: count}."""
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            found[key] = int(value)
    return found


_V1_NO_LIMIT = 1 << 62  # memory.limit_in_bytes of an unlimited v1 group (page-rounded max)


def read_memory(rt: Runtime, control_group: str, oom_before: int | None = None) -> MemoryState:
    """The unit's cgroup memory: v2 files, else the v1 memory controller (hybrid hosts)."""
    if not control_group:
        return MemoryState(available=False, detail="no cgroup (the unit is not running)")
    group = control_group.lstrip("/")
    v2 = rt.root / "sys/fs/cgroup" / group
    v1 = rt.root / "sys/fs/cgroup/memory" / group
    current = _read(v2 / "memory.current")
    if current is not None:
        limit = _read(v2 / "memory.max")
        peak = _read(v2 / "memory.peak")  # Linux 5.19+
        events = parse_events(_read(v2 / "memory.events") or "")
    else:
        current = _read(v1 / "memory.usage_in_bytes")
        if current is None:
            return MemoryState(
                available=False,
                detail=f"no {v2}/memory.current nor v1 memory.usage_in_bytes (no memory controller)",
            )
        limit = _read(v1 / "memory.limit_in_bytes")
        limit = None if limit is None or _int(limit) >= _V1_NO_LIMIT else limit
        peak = _read(v1 / "memory.max_usage_in_bytes")
        events = parse_events(_read(v1 / "memory.oom_control") or "")
    oom = events.get("oom_kill", 0)
    return MemoryState(
        available=True,
        current=_int(current),
        peak=_int(peak) if peak else None,
        limit=_int(limit) if limit and limit != "max" else None,
        oom_kills=oom,
        oom_kills_recent=max(0, oom - oom_before) if oom_before is not None else 0,
    )
