"""`gpu apply` and `gpu rollback`: files through the foundation's transaction, values verified.

apply: the oneshot unit is written through ``apply.transaction`` (atomic,
a generation, the lock), every other file ollama-ops owns is planned as it
is so nothing else changes; on the live host the unit is enabled and run,
every value is read back and compared with the plan. Before anything is
written, the GPUs' current values are recorded next to the generation; a
failed run or a mismatch puts those values back, restores the files and
reports one line.

rollback: only when the newest generation is a GPU apply; restores its
files, then the recorded values, and reads them back.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ollama_ops.apply import journal, store, transaction
from ollama_ops.apply.fileio import read_bytes
from ollama_ops.errors import ApplyError, OpsError, RollbackError
from ollama_ops.gpu import verify
from ollama_ops.gpu.model import GpuPlan, GpuReading
from ollama_ops.gpu.render import GPU_UNIT, PATHS, UNIT_PATH
from ollama_ops.host.gpu import GpuBackend, SmiBackend
from ollama_ops.model.deployment import Deployment
from ollama_ops.runtime import Runtime

GPU_STATE = "gpu"  # inside ollama-ops' state directory, /var/lib/ollama-ops
LOCKS = "locked-clocks.json"  # clocks ollama-ops locked, per GPU index


@dataclass(frozen=True)
class GpuOutcome:
    changed: tuple[str, ...]  # paths written
    generation: int | None
    checks: tuple[verify.Check, ...]
    message: str


def _stub() -> Deployment:
    """The transaction's view of a GPU apply: no service to restart, no write paths."""
    return Deployment(
        unit_name=GPU_UNIT,
        systemd_version=0,  # not read by the transaction
        settings=(),
        write_base_unit=False,
        base_unit=(),
        modules_load=(),
        bind_host="127.0.0.1",
        bind_port=0,
    )


def others_as_installed(root: Path) -> dict[str, str]:
    """Every file ollama-ops owns that is not a GPU file, unchanged (so the diff leaves it)."""
    kept: dict[str, str] = {}
    for path in sorted(journal.owned_files(root) - set(PATHS)):
        data = read_bytes(root, path)
        if data is not None:
            kept[path] = data.decode("utf-8", errors="replace")
    return kept


# ---------------------------------------------------------------- state records


def _read_json(root: Path, name: str) -> Any:
    """A JSON file of the GPU state (/var/lib/ollama-ops/gpu/NAME); None when absent or junk."""
    with store.peek(root) as state:
        sub = state.dir.child(GPU_STATE) if state is not None else None
        if sub is None:
            return None
        with sub:
            image = sub.read(name)
    if image is None:
        return None
    try:
        return json.loads(image.data)
    except ValueError:
        return None


def _write_json(root: Path, name: str, data: object) -> None:
    with store.locked(root) as state:
        assert state is not None
        sub = state.dir.child(GPU_STATE, create=True, mode=0o700)
        assert sub is not None
        with sub:
            sub.write(name, json.dumps(data, indent=1).encode(), mode=0o600)


def locked_clocks(root: Path) -> dict[int, int]:
    data = _read_json(root, LOCKS)
    if not isinstance(data, dict):
        return {}
    return {int(k): int(v) for k, v in data.items() if str(k).isdigit() and isinstance(v, int)}


def _record_path(number: int) -> str:
    return f"generation-{number}.json"


def _previous(readings: tuple[GpuReading, ...], locks: Mapping[int, int]) -> dict[str, Any]:
    return {
        "gpus": [
            {
                "index": r.index,
                "selector": r.selector,
                "name": r.name,
                "persistence": r.persistence,
                "power_limit_w": r.power_limit_w,
                "power_settable": r.power_settable,
            }
            for r in readings
        ],
        "locked_clocks": {str(k): v for k, v in locks.items()},
    }


# ---------------------------------------------------------------- restoring values


def _restore_values(
    backend: GpuBackend, record: Mapping[str, Any], now_locked: Mapping[int, int]
) -> list[str]:
    """Put the recorded values back; the problems met (best effort, every GPU is tried)."""
    problems: list[str] = []
    then_locked = {int(k): int(v) for k, v in (record.get("locked_clocks") or {}).items()}
    current = {r.index: r for r in backend.read()}
    for raw in record.get("gpus") or []:
        gpu = current.get(int(raw["index"]))
        if gpu is None:
            problems.append(f"GPU {raw['index']} is gone; nothing restored on it")
            continue
        try:
            # Set even when a reading says it is already so: readings can be stale.
            if raw.get("persistence") is not None:
                backend.set_persistence(gpu, bool(raw["persistence"]))
            watts = raw.get("power_limit_w")
            if watts is not None and raw.get("power_settable"):
                backend.set_power_limit(gpu, float(watts))
            if gpu.index in then_locked:
                backend.lock_clocks(gpu, then_locked[gpu.index])
            elif gpu.index in now_locked:
                backend.reset_clocks(gpu)
        except OpsError as exc:
            problems.append(str(exc))
    return problems


def _read_back(backend: GpuBackend) -> tuple[GpuReading, ...]:
    """A fresh reading; nvidia-smi's quick CSV form is enough (no clocks to compare)."""
    if isinstance(backend, SmiBackend):
        return backend.read_csv()
    return backend.read()


# ---------------------------------------------------------------- apply


def apply(
    rt: Runtime,
    backend: GpuBackend | None,
    readings: tuple[GpuReading, ...],
    gpu_plan: GpuPlan,
    files: Mapping[str, str],
) -> GpuOutcome:
    """Write the GPU files; on the live host run them and verify every value (see module doc)."""
    root = rt.root
    planned = {**others_as_installed(root), **files}
    before_locks = locked_clocks(root)
    # Recorded before anything changes, so a failure (or `gpu rollback`) can put them back.
    record = _previous(readings, before_locks)
    outcome = transaction.apply(rt, _stub(), planned, restart=False)
    changed = tuple(c.path for c in outcome.changes)
    if outcome.generation is not None:
        _write_json(root, _record_path(outcome.generation), record)
    if not rt.live or backend is None:
        return GpuOutcome(changed, outcome.generation, (), outcome.message)
    created = any(c.path == UNIT_PATH and c.old is None for c in outcome.changes)
    systemctl = rt.systemctl()
    checks: list[verify.Check] = []
    wanted = {t.index: t.lock_clock_mhz for t in gpu_plan.targets if t.lock_clock_mhz}
    try:
        if files:
            systemctl.enable(GPU_UNIT)
            systemctl.restart(GPU_UNIT)  # a oneshot: runs every nvidia-smi line now
        for gpu in readings:
            if gpu.index in before_locks and gpu.index not in wanted:
                backend.reset_clocks(gpu)
        checks = verify.check(gpu_plan.targets, _read_back(backend))
        wrong = verify.mismatches(checks)
        problem = "; ".join(c.line() for c in wrong) if wrong else None
    except OpsError as exc:
        problem = str(exc)
    if problem is None:
        _write_json(root, LOCKS, {str(k): v for k, v in wanted.items()})
        return GpuOutcome(changed, outcome.generation, tuple(checks), outcome.message)
    undo = _restore_values(backend, record, {**before_locks, **wanted})
    if outcome.generation is not None:
        if created:
            with contextlib.suppress(OpsError):
                systemctl.disable(GPU_UNIT)
        transaction.rollback(rt, GPU_UNIT, restart=False)
        with contextlib.suppress(OpsError):
            systemctl.daemon_reload()
    left = f" (could not restore: {undo[0]})" if undo else ""
    raise ApplyError(f"{problem}; the previous GPU values and files were restored{left}")


# ---------------------------------------------------------------- rollback


def newest_gpu_generation(root: Path) -> tuple[int, dict[str, object]] | None:
    """The newest generation and its before-images, if it is a GPU apply; None when none."""
    with store.peek(root) as state:
        numbers = state.generations() if state is not None else []
        if state is None or not numbers:
            return None
        number = numbers[-1]
        files: dict[str, object] = dict(state.manifest(number).before.files)
    others = sorted(set(files) - set(PATHS))
    if others:
        raise OpsError(
            f"the newest generation ({number}) is not a GPU apply (it wrote {others[0]}); "
            "undo it with `ollama-ops rollback` first"
        )
    return number, files


def rollback(rt: Runtime, backend: GpuBackend | None) -> tuple[int | None, tuple[str, ...]]:
    """Restore the newest GPU generation's files and recorded values; (number, lines shown)."""
    root = rt.root
    newest = newest_gpu_generation(root)
    if newest is None:
        return None, ()
    number, files = newest
    created = UNIT_PATH in files and files[UNIT_PATH] is None
    record = _read_json(root, _record_path(number))
    systemctl = rt.systemctl() if rt.live else None
    if systemctl is not None and created:
        systemctl.disable(GPU_UNIT)
    transaction.rollback(rt, GPU_UNIT, restart=False)
    if systemctl is not None:
        systemctl.daemon_reload()
    lines: list[str] = []
    if systemctl is None:
        return number, ("files restored under --root; GPU values change only on the live host",)
    if backend is None:
        return number, ("files restored; no NVIDIA GPU answered, so no values were restored",)
    if not isinstance(record, dict):
        raise RollbackError(
            f"generation {number}'s files are back, but its GPU values record is missing; "
            "run `ollama-ops gpu apply` or set the values by hand"
        )
    problems = _restore_values(backend, record, locked_clocks(root))
    now = {r.index: r for r in _read_back(backend)}
    for raw in record.get("gpus") or []:
        gpu = now.get(int(raw["index"]))
        if gpu is None:
            continue
        if raw.get("persistence") is not None and gpu.persistence != raw["persistence"]:
            problems.append(f"GPU {gpu.index} persistence mode still reads {gpu.persistence}")
        watts = raw.get("power_limit_w")
        if watts is not None and raw.get("power_settable"):
            got = gpu.power_limit_w
            if got is None or abs(got - float(watts)) > verify.TOLERANCE_W:
                problems.append(f"GPU {gpu.index} power limit reads {got} W, not {watts} W")
            else:
                lines.append(f"GPU {gpu.index} power limit {got:g} W restored")
    then_locked = {int(k): int(v) for k, v in (record.get("locked_clocks") or {}).items()}
    _write_json(root, LOCKS, {str(k): v for k, v in then_locked.items()})
    if problems:
        raise RollbackError(f"generation {number}'s files are back, but {problems[0]}")
    return number, tuple(lines)
