"""Plan -> files on disk -> a running service, or the previous files back.

The flow follows pip-tools: read what is installed, a pure diff, then side
effects. Each apply keeps the before-image of every file it touches as a
generation (``apply.store``); ``rollback`` restores the newest one. On the
live system the service is reloaded, restarted and verified
(``apply.activate``), and a failure restores the previous files. Everything
outside the process is reached through the injected :class:`Runtime`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ollama_ops.apply import store
from ollama_ops.apply.activate import activate
from ollama_ops.apply.diff import Change, diff, read_installed
from ollama_ops.apply.fileio import check_root, host_path
from ollama_ops.errors import (
    ApplyError,
    BusyError,
    CommandError,
    OpsError,
    StateError,
)
from ollama_ops.host.systemd import SystemManager
from ollama_ops.logs.plan import journald_units
from ollama_ops.model.deployment import Deployment
from ollama_ops.runtime import Runtime
from ollama_ops.unitfile import effective


@dataclass(frozen=True)
class Outcome:
    changes: tuple[Change, ...]
    generation: int | None
    restarted: bool
    message: str


def pending_changes(root: Path, files: Mapping[str, str]) -> list[Change]:
    """What installing ``files`` would change under root, stale owned files included."""
    owned = store.owned_files(root)
    return diff(read_installed(root, set(files) | owned), files, owned)


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
    if path is not None and path in store.owned_files(root):
        return None
    return path


def preflight(deployment: Deployment, root: Path) -> None:
    """Refuse, before writing anything, a plan whose write paths do not exist.

    systemd fails such a unit with status 226/NAMESPACE; saying so up front
    beats a restart and an automatic rollback.
    """
    for setting in deployment.active():
        path = setting.value or ""
        # "-/x" may be missing; a plain path must exist.
        if (
            setting.key == "ReadWritePaths"
            and path.startswith("/")
            and not host_path(root, path).is_dir()
        ):
            raise OpsError(
                f"ReadWritePaths={setting.value} ({setting.reason}) does not exist under "
                f"{root}; create it, owned by the service user, before applying"
            )


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One apply or rollback at a time per root."""
    state = host_path(root, store.STATE_DIR)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BusyError(
                f"another ollama-ops apply or rollback holds {state / 'lock'}; wait for it to finish"
            ) from exc
        yield
    finally:
        os.close(fd)


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
    preflight(deployment, root)
    systemctl = rt.systemctl() if rt.live else None  # before anything is written
    pending = pending_changes(root, files)
    if not pending:
        return Outcome(
            (), None, False, "nothing to change: the installed files already match the plan"
        )
    if not os.access(root, os.W_OK):
        raise StateError(f"--root {str(root)!r} is not writable; run as root")
    with _locked(root):
        if pending_changes(root, files) != pending:
            raise BusyError("the installed files changed while planning; run apply again")
        return _apply_locked(
            rt,
            deployment,
            pending,
            set(files),
            restart=restart,
            timeout=timeout,
            systemctl=systemctl,
        )


def _apply_locked(
    rt: Runtime,
    deployment: Deployment,
    pending: list[Change],
    owned: set[str],
    *,
    restart: bool,
    timeout: float,
    systemctl: SystemManager | None,
) -> Outcome:
    root = rt.root
    enable = deployment.write_base_unit and any(
        c.path == deployment.unit_path and c.old is None for c in pending
    )
    number = store.save_generation(
        root,
        pending,
        deployment.unit_name if enable and systemctl is not None and restart else None,
    )
    try:
        store.install(root, pending, owned)
    except OSError as exc:
        store.restore(root, number)
        raise ApplyError(
            f"writing {exc.filename or 'a file'} failed ({exc.strerror}); nothing was changed"
        ) from exc
    if systemctl is None or not restart:
        if systemctl is not None:
            systemctl.daemon_reload()
        return Outcome(
            tuple(pending), number, False, f"wrote {len(pending)} file(s) as generation {number}"
        )
    try:
        for journald in journald_units({c.path for c in pending}):  # it reads config at start
            systemctl.restart(journald)
        problem = activate(rt, systemctl, deployment, enable=enable, timeout=timeout)
    except OpsError as exc:  # systemctl itself failed or timed out: still roll back
        problem = str(exc)
    if problem is None:
        return Outcome(
            tuple(pending),
            number,
            True,
            f"applied generation {number}; {deployment.unit_name} is up",
        )
    tail: list[str] = []
    with contextlib.suppress(OpsError):
        tail = systemctl.journal_tail(deployment.unit_name, 3)
    _rollback_live(root, number, systemctl, deployment.unit_name)
    detail = f" (journal: {' | '.join(tail)})" if tail else ""
    raise ApplyError(f"{problem}{detail}; the previous configuration was restored")


def _rollback_live(root: Path, number: int, systemctl: SystemManager, unit: str) -> None:
    manifest = store.manifest(root, number)
    created = manifest.get("enabled_unit")
    if isinstance(created, str):
        # This generation wrote the whole unit: stop and disable it while its file still exists.
        systemctl.stop(created)
        systemctl.disable(created)
    store.restore(root, number)
    systemctl.daemon_reload()
    for journald in journald_units(set(manifest["files"])):
        with contextlib.suppress(CommandError):
            systemctl.restart(journald)
    systemctl.reset_failed(unit)
    if created != unit:
        # The old configuration may not start either; its files are back regardless.
        with contextlib.suppress(CommandError):
            systemctl.restart(unit)


def rollback(rt: Runtime, unit: str, *, restart: bool = True) -> int | None:
    """Restore the newest generation's before-image; its number, or None when there is none."""
    root = rt.root
    check_root(root)
    systemctl = rt.systemctl() if rt.live and restart else None
    with _locked(root):
        numbers = store.generations(root)
        if not numbers:
            return None
        if systemctl is not None:
            _rollback_live(root, numbers[-1], systemctl, unit)
        else:
            store.restore(root, numbers[-1])
    return numbers[-1]
