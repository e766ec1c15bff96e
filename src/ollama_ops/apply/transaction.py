"""Plan -> files on disk -> a running service, or the previous files back.

The flow follows pip-tools: read what is installed, a pure diff, then side
effects. Each apply keeps the before-image of every file it touches as a
generation (``apply.store``); ``rollback`` restores the newest one. On the
live system systemd must answer before anything is written; the service is
then reloaded, restarted and verified (``apply.activate``), and a failure
restores the previous files. Everything outside the process is reached
through the injected :class:`Runtime`.

Crash safety (``apply.journal``): the lock is taken before the state is
read; any unfinished journal is undone first; then the whole before-image
is journalled before the first file changes, and the journal is removed
(the commit) only when the files are written — on the live system, only
when the service is verified. A crash, a full disk or Ctrl-C at any point
leaves either the old state (undone now or by the next run) or the new one.

Errors: no systemd -> CommandError (nothing written); a failed and restored
apply -> ApplyError, a failed and restored rollback -> RollbackError; a
restore that failed too, a tampered state directory -> StateError; another
apply or rollback running -> BusyError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from ollama_ops.apply import instances, journal, store
from ollama_ops.apply.activate import activate
from ollama_ops.apply.diff import Change, diff
from ollama_ops.apply.fileio import check_root, open_parent
from ollama_ops.apply.records import (
    OWNABLE_PREFIXES,
    Journal,
    Manifest,
    Op,
    Phase,
    is_ownable,
)
from ollama_ops.errors import (
    ApplyError,
    BusyError,
    CommandError,
    OpsError,
    PlanError,
    RollbackError,
    StateError,
)
from ollama_ops.host.systemd import SystemManager
from ollama_ops.model.deployment import Deployment
from ollama_ops.plan.preflight import preflight  # plan, apply and audit share it
from ollama_ops.runtime import Runtime
from ollama_ops.unitfile import effective

log = logging.getLogger(__name__)
RESTORED = "the previous configuration was restored"


@dataclass(frozen=True)
class Outcome:
    changes: tuple[Change, ...]
    generation: int | None
    restarted: bool
    message: str


def _diff(root: Path, files: Mapping[str, str], view: journal.View) -> list[Change]:
    return diff(view.installed(root, set(files) | view.owned), files, view.owned)


def pending_changes(root: Path, files: Mapping[str, str]) -> list[Change]:
    """What installing ``files`` would change under root, stale owned files included.

    Writes nothing: after a crash, the diff is against the files as the
    next apply's recovery will leave them.
    """
    view = journal.view(root)
    if view.journal is not None:
        log.warning(
            "found %s; the next apply or rollback undoes it; this diff is against the files "
            "as they were before it",
            journal.describe(view.journal),
        )
    return _diff(root, files, view)


def packaged_unit(root: Path, unit_name: str, reported: str | None) -> str | None:
    """The unit file somebody else installed for ``unit_name``, if any.

    The tree under root is searched as systemd would (a vendor unit in
    /usr/lib counts too); if it has none, ``reported`` (from the facts of the
    target machine) stands. A unit that ollama-ops itself wrote earlier does
    not count: it is ours to keep writing, not a packaged unit to leave alone.
    """
    try:
        found = effective.load_effective(root, unit_name).fragment
    except OpsError:
        found = None
    path = found or reported
    if path is not None and path in journal.owned_files(root):
        return None
    return path


def _only_ownable(files: Mapping[str, str]) -> None:
    """Every file apply writes must be one a manifest may name, or rollback could not undo it."""
    for path in files:
        if not is_ownable(path):
            raise PlanError(
                f"refusing to write {path!r}: ollama-ops only owns files under "
                f"{', '.join(OWNABLE_PREFIXES)}; add its directory to records.OWNABLE_PREFIXES"
            )


def _systemd_answers(systemctl: SystemManager) -> None:
    """Before anything is written: a live apply or rollback needs a running systemd."""
    try:
        systemctl.manager_version()
    except CommandError as exc:
        raise CommandError(
            f"systemd does not answer ({exc}); nothing was written; run this on a host booted "
            "with systemd, or use --root DIR to only write the files"
        ) from exc


def _timestamp(rt: Runtime) -> str:
    return datetime.fromtimestamp(rt.wall_clock(), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"writing {exc.filename or 'a file'} failed ({exc.strerror or exc})"
    return str(exc)


def _undo(
    rt: Runtime,
    state: store.State,
    record: Journal,
    systemctl: SystemManager | None,
    *,
    problem: str,
    error: type[OpsError],
) -> NoReturn:
    """Undo ``record`` and raise ``error``; StateError when even the undo failed."""
    try:
        notes = journal.undo(rt.root, state, record, systemctl, run=rt.run)
    except (OSError, OpsError) as exc:
        raise StateError(
            f"{problem}, and restoring the previous files failed too ({_why(exc)}); "
            f"the journal is kept: fix that, then run `ollama-ops rollback --root {rt.root}` "
            "to finish restoring them"
        ) from exc
    detail = "".join(f"; {note}" for note in notes)
    raise error(f"{problem}; {RESTORED}{detail}")


@contextlib.contextmanager
def _undone_on_interrupt(
    rt: Runtime, state: store.State, record: Journal, systemctl: SystemManager | None
) -> Iterator[None]:
    try:
        yield
    except (OSError, OpsError):
        raise
    except BaseException:  # Ctrl-C, a bug: put the old files back, then let it through
        with contextlib.suppress(Exception):
            journal.undo(rt.root, state, record, systemctl, run=rt.run)
        raise


def _begin(state: store.State, record: Journal, error: type[OpsError]) -> None:
    try:
        state.write_journal(record)
    except OSError as exc:
        with contextlib.suppress(OSError):
            state.remove_journal()
        raise error(f"{_why(exc)}; no file was changed") from exc


def _install(rt: Runtime, changes: list[Change]) -> None:
    for change in changes:
        directory = open_parent(rt.root, change.path, create=change.new is not None)
        if directory is None:
            continue
        with directory:
            name = os.path.basename(change.path)
            if change.new is None:
                directory.unlink(name)
            else:
                directory.write(name, change.new)


def apply(
    rt: Runtime,
    deployment: Deployment,
    files: Mapping[str, str],
    *,
    restart: bool = True,
    timeout: float = 60.0,
) -> Outcome:
    """Install ``files`` under rt.root; on the live system also reload, restart and verify.

    If the service does not come up, the previous files are restored, systemd
    is reloaded and the service restarted with them, and ApplyError says why.
    """
    root = rt.root
    check_root(root)
    _only_ownable(files)
    preflight(deployment, root)
    instances.preflight(deployment, root)  # nginx -t on the front door, if there is one
    systemctl = rt.systemctl() if rt.live else None
    if systemctl is not None:
        _systemd_answers(systemctl)
    view = journal.view(root)
    seen = _diff(root, files, view)
    if not seen and view.journal is None:
        return Outcome(
            (), None, False, "nothing to change: the installed files already match the plan"
        )
    if not os.access(root, os.W_OK):
        raise StateError(f"--root {str(root)!r} is not writable; run as root")
    with store.locked(root) as state:
        assert state is not None
        undone = journal.recover(root, state, systemctl)
        owned = state.owned()
        pending = _diff(root, files, journal.View(None, frozenset(owned or ())))
        if pending != seen:
            raise BusyError("the installed files changed while planning; run apply again")
        if not pending:
            assert undone is not None
            return Outcome(
                (), None, False, f"undid {journal.describe(undone)}; nothing else to change"
            )
        return _apply_locked(
            rt,
            state,
            deployment,
            pending=pending,
            owned=owned,
            planned=set(files),
            restart=restart,
            timeout=timeout,
            systemctl=systemctl,
        )


def _apply_locked(
    rt: Runtime,
    state: store.State,
    deployment: Deployment,
    *,
    pending: list[Change],
    owned: tuple[str, ...] | None,
    planned: set[str],
    restart: bool,
    timeout: float,
    systemctl: SystemManager | None,
) -> Outcome:
    root = rt.root
    enable = deployment.write_base_unit and any(
        c.path == deployment.unit_path and c.old is None for c in pending
    )
    number = state.next_generation()
    before = journal.capture(
        root, [c.path for c in pending], owned, [c.path for c in pending if c.new is not None]
    )
    enabled = deployment.unit_name if enable and systemctl is not None and restart else None
    manifest = Manifest(_timestamp(rt), enabled, before)
    record = Journal(Op.APPLY, number, Phase.WRITING, deployment.unit_name, before, manifest)
    _begin(state, record, ApplyError)
    with _undone_on_interrupt(rt, state, record, systemctl):
        try:
            state.write_manifest(number, manifest)
            _install(rt, pending)
            state.write_owned(tuple(sorted(planned)))
            if systemctl is not None:
                record = dataclasses.replace(record, phase=Phase.ACTIVATING)
                state.write_journal(record)
        except (OSError, OpsError) as exc:
            _undo(rt, state, record, systemctl, problem=_why(exc), error=ApplyError)
        done = f"wrote {len(pending)} file(s) as generation {number}"
        if systemctl is None:
            _commit(rt, state, record, systemctl)
            return Outcome(tuple(pending), number, False, done)
        if not restart:
            try:
                systemctl.daemon_reload()
            except CommandError as exc:
                _undo(rt, state, record, systemctl, problem=str(exc), error=ApplyError)
            _commit(rt, state, record, systemctl)
            return Outcome(tuple(pending), number, False, f"{done}; systemd reloaded them")
        try:
            problem = activate(
                rt, systemctl, deployment, enable=enable, timeout=timeout, changes=pending
            )
        except OpsError as exc:  # systemctl itself failed or timed out: still roll back
            problem = str(exc)
        if problem is not None:
            tail: list[str] = []
            with contextlib.suppress(OpsError):
                tail = systemctl.journal_tail(deployment.unit_name, 3)
            detail = f" (journal: {' | '.join(tail)})" if tail else ""
            _undo(rt, state, record, systemctl, problem=f"{problem}{detail}", error=ApplyError)
        _commit(rt, state, record, systemctl)
    return Outcome(
        tuple(pending), number, True, f"applied generation {number}; {deployment.unit_name} is up"
    )


def _commit(
    rt: Runtime, state: store.State, record: Journal, systemctl: SystemManager | None
) -> None:
    """Removing the journal is the commit; if even that fails, the old state comes back."""
    try:
        state.remove_journal()
    except OSError as exc:
        error = ApplyError if record.op is Op.APPLY else RollbackError
        _undo(
            rt,
            state,
            record,
            systemctl,
            problem=f"removing the journal failed ({exc.strerror})",
            error=error,
        )


def rollback(rt: Runtime, unit: str, *, restart: bool = True) -> int | None:
    """Restore the newest generation's before-image; its number, or None when there is none.

    An apply interrupted by a crash is undone first, and is then the change
    this rollback took back: its number is returned and nothing else is rolled back.
    """
    root = rt.root
    check_root(root)
    systemctl = rt.systemctl() if rt.live and restart else None
    if systemctl is not None:
        _systemd_answers(systemctl)
    with store.locked(root, create=False) as state:
        if state is None:
            return None
        undone = journal.recover(root, state, systemctl)
        if undone is not None and undone.op is Op.APPLY:
            return undone.generation
        numbers = state.generations()
        if not numbers:
            return None
        _rollback_locked(rt, state, numbers[-1], unit, systemctl)
        return numbers[-1]


def _rollback_locked(
    rt: Runtime, state: store.State, number: int, unit: str, systemctl: SystemManager | None
) -> None:
    root = rt.root
    manifest = state.manifest(number)  # validated whole before anything is touched
    journal.check(root, manifest.before)
    images = manifest.before.files
    before = journal.capture(root, images, state.owned(), [p for p, i in images.items() if i])
    phase = Phase.WRITING if systemctl is None else Phase.ACTIVATING
    record = Journal(Op.ROLLBACK, number, phase, unit, before, manifest)
    _begin(state, record, RollbackError)
    created = manifest.enabled_unit
    with _undone_on_interrupt(rt, state, record, systemctl):
        try:
            if systemctl is not None and created:
                # This generation wrote the whole unit: stop and disable it while its file exists.
                systemctl.stop(created)
                systemctl.disable(created)
            journal.restore(root, state, manifest.before)
            state.remove_generation(number)
            if systemctl is not None:
                systemctl.daemon_reload()
                systemctl.reset_failed(unit)
                if created != unit:
                    # The old configuration may not start either; its files are back regardless.
                    with contextlib.suppress(CommandError):
                        systemctl.restart(unit)
                instances.after_restore(root, systemctl, images, rt.run)  # instances, nginx
        except (OSError, OpsError) as exc:
            _undo(rt, state, record, systemctl, problem=_why(exc), error=RollbackError)
        _commit(rt, state, record, systemctl)


def recover(rt: Runtime) -> Journal | None:
    """Undo an interrupted apply or rollback under rt.root (what every apply and rollback does
    first); the journal that was undone, or None when there was none."""
    check_root(rt.root)
    systemctl = rt.systemctl() if rt.live else None
    with store.locked(rt.root, create=False) as state:
        return None if state is None else journal.recover(rt.root, state, systemctl)
