"""All-or-nothing across a crash: the journal of the change in progress, and its undo.

Before the first file of an apply or a rollback changes, the whole
before-image of everything it will touch (bytes, mode, owner, the owned
list, the directories it will create; for a rollback also the manifest it
will remove) is written atomically to ``journal.json``. Removing the
journal is the commit. Until then, the one rule is: **an unfinished
journal is undone** — every file goes back to its before-image, the
directories the change created are removed, the generation an apply was
creating is removed (the one a rollback was removing is put back), and on
the live system the unit is reloaded and restarted as it was. The new
state was never verified, so the old one is the one to trust.

Every apply and rollback takes the lock and recovers first; ``plan`` and
``apply --dry-run`` write nothing and show the diff against the files as
recovery will leave them (:func:`view`). Restoring is idempotent, so a
crash during recovery is recovered by the next run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ollama_ops.apply import instances, store
from ollama_ops.apply.fileio import (
    FileImage,
    host_path,
    is_root_user,
    missing_dirs,
    open_dir,
    open_parent,
    read_image,
    tmp_name,
)
from ollama_ops.apply.records import Journal, Op, Phase, Snapshot
from ollama_ops.errors import CommandError, StateError
from ollama_ops.host import proc
from ollama_ops.host.systemd import SystemManager
from ollama_ops.runtime import Runner

log = logging.getLogger(__name__)


def capture(
    root: Path, paths: Iterable[str], owned: tuple[str, ...] | None, writing: Iterable[str]
) -> Snapshot:
    """The before-image of ``paths``, and the directories writing ``writing`` will create."""
    files = {path: read_image(root, path) for path in sorted(set(paths))}
    dirs = sorted({d for path in writing for d in missing_dirs(root, path)})
    return Snapshot(files, owned, tuple(dirs))


def check(root: Path, snapshot: Snapshot) -> None:
    """Refuse, before anything is touched, a snapshot that cannot be restored inside root."""
    for path in [*snapshot.files, *snapshot.dirs]:
        host_path(root, path)
    for path in snapshot.files:
        directory = open_parent(root, path)
        if directory is not None:
            with directory:
                kind = directory.kind(os.path.basename(path))
            if kind not in (None, "file"):
                raise StateError(
                    f"refusing to restore {path} under {root}: a {kind} is in its place; move it"
                )


def _same(current: FileImage | None, image: FileImage) -> bool:
    if current is None or current.data != image.data or current.mode != image.mode:
        return False
    return image.owner is None or not is_root_user() or current.owner == image.owner


def restore(root: Path, state: store.State, snapshot: Snapshot) -> None:
    """Put every file, the owned list and the directories back as ``snapshot`` says."""
    check(root, snapshot)
    # Removals first: they free space for the writes.
    for path, image in sorted(snapshot.files.items()):
        directory = open_parent(root, path)
        if directory is not None:
            with directory:
                name = os.path.basename(path)
                directory.unlink(tmp_name(name))
                if image is None:
                    directory.unlink(name)
    for path, image in sorted(snapshot.files.items()):
        if image is None:
            continue
        directory = open_parent(root, path, create=True)
        assert directory is not None
        with directory:
            name = os.path.basename(path)
            if not _same(directory.read(name), image):
                directory.write(name, image.data, image.mode, image.owner)
    state.write_owned(snapshot.owned)
    for path in sorted(snapshot.dirs, reverse=True):  # children before their parents
        host = host_path(root, path)
        if host.parent.is_dir():
            with open_dir(host.parent) as parent:
                parent.rmdir(host.name)  # only when empty: never what somebody else put there


def _systemd(notes: list[str], what: str, call: Callable[..., None], *args: str) -> None:
    try:
        call(*args)
    except CommandError as exc:
        notes.append(f"{what} failed ({exc})")


def undo(
    root: Path,
    state: store.State,
    journal: Journal,
    systemctl: SystemManager | None,
    *,
    run: Runner = proc.run,
) -> list[str]:
    """Restore ``journal``'s before-image and remove the journal; notes on systemd's failures."""
    notes: list[str] = []
    live = systemctl is not None and journal.phase is Phase.ACTIVATING
    created = journal.manifest.enabled_unit
    if live and systemctl is not None and journal.op is Op.APPLY and created:
        # The apply wrote and enabled this unit: stop and disable it while its file exists.
        _systemd(notes, f"stopping {created}", systemctl.stop, created)
        _systemd(notes, f"disabling {created}", systemctl.disable, created)
    restore(root, state, journal.before)
    if journal.op is Op.APPLY:
        state.remove_generation(journal.generation)
    elif not state.has_manifest(journal.generation):
        state.write_manifest(journal.generation, journal.manifest)
    if live and systemctl is not None and journal.unit is not None:
        unit = journal.unit
        _systemd(notes, "systemctl daemon-reload", systemctl.daemon_reload)
        if journal.op is Op.ROLLBACK and created:
            _systemd(notes, f"enabling {created}", systemctl.enable, created)
        _systemd(notes, f"resetting {unit}", systemctl.reset_failed, unit)
        if not (journal.op is Op.APPLY and created == unit):
            _systemd(notes, f"restarting {unit}", systemctl.restart, unit)
        instances.after_restore(root, systemctl, journal.before.files, run)  # instances, nginx
    state.remove_journal()
    return notes


def describe(journal: Journal) -> str:
    what = "apply of generation" if journal.op is Op.APPLY else "rollback of generation"
    return f"an interrupted {what} {journal.generation}"


def recover(root: Path, state: store.State, systemctl: SystemManager | None) -> Journal | None:
    """Undo an unfinished journal, if any, and clear what a crash leaves; the journal undone."""
    journal = state.journal()
    if journal is not None:
        notes = undo(root, state, journal, systemctl)
        skipped = (
            "; systemd was not told (not the live system)"
            if systemctl is None and journal.phase is Phase.ACTIVATING
            else ""
        )
        log.warning(
            "undid %s: the files are as they were before it%s%s",
            describe(journal),
            skipped,
            "".join(f"; {n}" for n in notes),
        )
    state.clean_leftovers()
    return journal


@dataclass(frozen=True)
class View:
    """The files and the owned list as recovery will leave them (read-only)."""

    journal: Journal | None
    owned: frozenset[str]

    def installed(self, root: Path, paths: Iterable[str]) -> dict[str, bytes | None]:
        saved = self.journal.before.files if self.journal is not None else {}
        out: dict[str, bytes | None] = {}
        for path in sorted(set(paths)):
            if path in saved:
                image = saved[path]
                out[path] = None if image is None else image.data
            else:
                image = read_image(root, path)
                out[path] = None if image is None else image.data
        return out


def view(root: Path) -> View:
    """What an apply would start from, without the lock and without writing anything."""
    with store.peek(root) as state:
        if state is None:
            return View(None, frozenset())
        journal = state.journal()
        owned = journal.before.owned if journal is not None else state.owned()
    return View(journal, frozenset(owned or ()))


def owned_files(root: Path) -> set[str]:
    """The files ollama-ops owns under root, as recovery will leave them."""
    return set(view(root).owned)
