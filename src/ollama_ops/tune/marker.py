"""A tune in progress, on disk: so that a tune killed half-way is undone by the next run.

``tune.json`` in ollama-ops' state directory (next to apply's generations)
says which generation was the newest before the tune began (``base``). Every
setting a tune applies is a generation above it, made by apply (whose
journal makes each one atomic). Restoring the original configuration is
rolling back every generation above ``base``, newest first, restarting the
service once, at the end.

While a tune runs it holds ``tune.lock`` (flock(2), released by the kernel
when the process dies, however it dies). The next ``tune``, and every
``apply`` (through :func:`recover`), finds a marker whose lock is free and
restores the original configuration first; while the lock is held they
refuse with BusyError instead.

Keeping the winner: the marker's phase becomes ``keeping``; the tune's
generations are rolled back without a restart, the winner is applied as one
generation (its before-image is the original), the marker records that
generation and the digest the config file will have, the config file is
written, the marker removed. A tune killed anywhere in there is recovered
to the original configuration, or, once the config file holds the winner,
to the winner.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ollama_ops.apply import store, transaction
from ollama_ops.apply.fileio import Dir, lock_exclusive
from ollama_ops.errors import ApplyError, StateError
from ollama_ops.runtime import Runtime

MARKER = "tune.json"
LOCK = "tune.lock"
SWEEPING, KEEPING = "sweeping", "keeping"
UNCHANGED = "the service runs its original configuration"


@dataclass(frozen=True)
class Marker:
    base: int  # the newest generation before the tune; the tune's are above it
    unit: str
    url: str  # the API to wait for after restoring
    started_at: str
    pid: int
    phase: str = SWEEPING
    winner_generation: int | None = None
    config_path: str | None = None  # the config file the winner goes to
    config_sha256: str | None = None  # its digest once the winner is written


def _load(data: bytes, where: str) -> Marker:
    try:
        raw = json.loads(data)
        marker = Marker(**raw)
    except (ValueError, TypeError, RecursionError) as exc:
        raise StateError(
            f"{where} is not a tune marker ({type(exc).__name__}); "
            "check the service's configuration, then remove the file"
        ) from exc
    ok = (
        isinstance(marker.base, int)
        and isinstance(marker.unit, str)
        and isinstance(marker.url, str)
        and marker.phase in (SWEEPING, KEEPING)
        and (marker.winner_generation is None or isinstance(marker.winner_generation, int))
    )
    if not ok:
        raise StateError(
            f"{where} holds unexpected values; check the service's configuration, "
            "then remove the file"
        )
    return marker


def _where(root: Path, name: str) -> str:
    return str(root / store.STATE_DIR.lstrip("/") / name)


def _state_dir(root: Path, *, create: bool) -> Dir | None:
    try:
        return store.open_state(root, create=create)
    except OSError as exc:
        raise StateError(
            f"cannot open {_where(root, '')} ({exc.strerror or exc}); tune applies: run it as root"
        ) from exc


def read(root: Path) -> Marker | None:
    directory = _state_dir(root, create=False)
    if directory is None:
        return None
    with directory:
        image = directory.read(MARKER)
    return None if image is None else _load(image.data, _where(root, MARKER))


def write(root: Path, marker: Marker) -> None:
    directory = _state_dir(root, create=True)
    assert directory is not None
    with directory:
        directory.write(MARKER, json.dumps(asdict(marker), indent=1).encode(), mode=0o600)


def remove(root: Path) -> None:
    directory = _state_dir(root, create=False)
    if directory is not None:
        with directory:
            directory.unlink(MARKER)


def update(root: Path, marker: Marker, **changes: object) -> Marker:
    new = replace(marker, **changes)  # type: ignore[arg-type]
    write(root, new)
    return new


@contextlib.contextmanager
def tune_lock(root: Path) -> Iterator[None]:
    """Hold ``tune.lock`` for the duration; BusyError when another tune holds it."""
    directory = _state_dir(root, create=True)
    assert directory is not None
    with directory:
        fd = lock_exclusive(
            directory,
            LOCK,
            f"a tune is running (it holds {_where(root, LOCK)}); wait for it to finish, "
            "or stop it with Ctrl-C: it restores the original configuration",
        )
    try:
        yield
    finally:
        os.close(fd)


def generations(root: Path) -> list[int]:
    with store.peek(root) as state:
        return [] if state is None else state.generations()


def newest_generation(root: Path) -> int:
    return max(generations(root), default=0)


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def wait_up(rt: Runtime, url: str, unit: str, timeout: float) -> None:
    """Until ``url`` answers; ApplyError when it does not within ``timeout`` seconds."""
    deadline = rt.clock() + timeout
    while not rt.ollama.is_up(url, timeout=2.0):
        if rt.clock() >= deadline:
            raise ApplyError(
                f"the files of the original configuration are back but {url} did not answer "
                f"within {timeout:g}s; see `journalctl -u {unit}`"
            )
        rt.sleep(0.5)


def roll_back_above(rt: Runtime, base: int, unit: str, *, restart: bool) -> list[int]:
    """Roll back every generation above ``base``, newest first; the service restarted once,
    after the last (when ``restart``). An apply cut short is undone first. The numbers undone."""
    transaction.recover(rt)
    ours = sorted((g for g in generations(rt.root) if g > base), reverse=True)
    for n, number in enumerate(ours):
        last = n == len(ours) - 1
        got = transaction.rollback(rt, unit, restart=restart and last)
        if got != number:
            raise StateError(
                f"rolling back generation {number} rolled back {got} instead; check "
                f"`ollama-ops plan` and roll back by hand with `ollama-ops rollback`"
            )
    return ours


def restart(rt: Runtime, unit: str) -> None:
    systemctl = rt.systemctl()
    systemctl.daemon_reload()
    systemctl.reset_failed(unit)
    systemctl.restart(unit)


def restore(rt: Runtime, marker: Marker, *, timeout: float, force_restart: bool = False) -> str:
    """The original configuration back: the files, the service restarted, the API answering."""
    undone = roll_back_above(rt, marker.base, marker.unit, restart=True)
    if not undone and force_restart:
        restart(rt, marker.unit)
    if undone or force_restart:
        wait_up(rt, marker.url, marker.unit, timeout)
    if not undone:
        return UNCHANGED
    numbers = ", ".join(str(n) for n in sorted(undone))
    return f"restored the original configuration (rolled back generation(s) {numbers})"


def recover(rt: Runtime, *, timeout: float = 60.0) -> str | None:
    """Finish a tune that was interrupted or killed; what was done, or None when none was.

    BusyError while a tune runs. Called by every ``apply`` first (``tune`` calls
    :func:`recover_locked` under its own lock).
    """
    if read(rt.root) is None:
        return None
    with tune_lock(rt.root):
        return recover_locked(rt, timeout=timeout)


def recover_locked(rt: Runtime, *, timeout: float) -> str | None:
    """:func:`recover` for a caller that holds ``tune.lock``."""
    marker = read(rt.root)
    if marker is None:
        return None
    kept = (
        marker.phase == KEEPING
        and marker.winner_generation is not None
        and marker.config_path is not None
        and file_sha256(Path(marker.config_path)) == marker.config_sha256
    )
    if kept:
        assert marker.winner_generation is not None
        roll_back_above(rt, marker.winner_generation, marker.unit, restart=True)
        note = (
            f"a tune (pid {marker.pid}) was stopped after writing its winner to "
            f"{marker.config_path}: kept generation {marker.winner_generation}"
        )
    else:
        done = restore(rt, marker, timeout=timeout, force_restart=marker.phase == KEEPING)
        note = f"a tune (pid {marker.pid}, started {marker.started_at}) was cut short: {done}"
    remove(rt.root)
    return note
