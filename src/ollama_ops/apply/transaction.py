"""Plan -> files on disk -> a running service, or the previous files back.

The flow follows pip-tools: a pure ``changes()``/``diff()`` first, then side
effects. Each apply keeps the before-image of every file it touches as a
numbered generation under ``<root>/var/lib/ollama-ops``; ``rollback``
restores the newest one byte for byte. Writes are atomic (temp file in the
same directory, fsync, rename, fsync of the directory), so a crash leaves
either the old or the new file, never half of one.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import fcntl
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ollama_ops.errors import ApplyError, CommandError, FactsError, OpsError, RollbackError
from ollama_ops.host import ollama_api as api
from ollama_ops.host.systemd import Systemctl, SystemManager, require
from ollama_ops.model.facts import parse_cpu_list
from ollama_ops.plan.compose import Deployment
from ollama_ops.unitfile import effective as effective_mod

STATE_DIR = "/var/lib/ollama-ops"
OWNABLE_PREFIXES = ("/etc/systemd/system/", "/etc/modules-load.d/")
FILE_MODE = 0o644


@dataclass(frozen=True)
class Change:
    path: str  # absolute path as seen from inside root
    old: bytes | None  # None: absent
    new: bytes | None  # None: to be removed (a file ollama-ops wrote earlier, no longer planned)

    @property
    def kind(self) -> str:
        if self.old is None:
            return "new"
        return "removed" if self.new is None else "changed"


@dataclass(frozen=True)
class Outcome:
    changes: tuple[Change, ...]
    generation: int | None
    restarted: bool
    message: str


def host_path(root: Path, path: str) -> Path:
    """``path`` under root, refusing anything that would lead outside it.

    A tree given with --root (a container image, a mounted disk) may hold
    absolute symlinks such as etc/systemd/system -> /etc/systemd/system;
    following one would write to this host instead.
    """
    if not path.startswith("/") or "/../" in path + "/":
        raise OpsError(f"refusing path {path!r}: not absolute or contains '..'")
    target = root / path.lstrip("/")
    base = root.resolve()
    if base != Path("/"):
        if not target.parent.resolve().is_relative_to(base):
            raise OpsError(
                f"refusing {path}: a symlink under {target.parent} leads outside --root {root}; "
                "replace it with a directory or point --root at the real tree"
            )
        if target.is_symlink():
            raise OpsError(
                f"refusing {path}: it is a symlink inside --root {root}; replace it with a file"
            )
    return target


def check_root(root: Path) -> None:
    if not root.is_dir():
        raise OpsError(f"--root {str(root)!r} is not a directory; pass an existing directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise OpsError(f"--root {str(root)!r} cannot be read; run as root or fix its permissions")


def is_live(root: Path) -> bool:
    return root.resolve() == Path("/")


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OpsError(
            f"cannot read {str(path)!r} ({exc.strerror}); check permissions or --root"
        ) from exc


def _owned_path(root: Path) -> Path:
    return host_path(root, f"{STATE_DIR}/owned.json")


def owned_files(root: Path) -> set[str]:
    raw = _read(_owned_path(root))
    if raw is None:
        return set()
    try:
        data = json.loads(raw)
    except ValueError:
        return set()
    if not isinstance(data, list):
        return set()
    # The list lives inside a tree that may not be trusted (--root): only paths
    # ollama-ops can have written count, so it cannot be made to read or delete others.
    return {p for p in data if isinstance(p, str) and p.startswith(OWNABLE_PREFIXES)}


def packaged_unit(root: Path, unit_name: str, reported: str | None) -> str | None:
    """The unit file somebody else installed for ``unit_name``, if any.

    The tree under root is searched as systemd would (a vendor unit in
    /usr/lib counts too); if it has none, ``reported`` (from the facts of the
    target machine) stands. A unit that ollama-ops itself wrote earlier does
    not count: it is ours to keep writing, not a packaged unit to leave alone.
    """
    try:
        found = effective_mod.load_effective(root, unit_name).fragment
    except OpsError:
        found = None
    path = found or reported
    if path is not None and path in owned_files(root):
        return None
    return path


def changes(root: Path, files: Mapping[str, str]) -> list[Change]:
    """What installing ``files`` would change under root, stale owned files included."""
    out: list[Change] = []
    for path in sorted(files):
        new = files[path].encode()
        old = _read(host_path(root, path))
        if old != new:
            out.append(Change(path, old, new))
    for path in sorted(owned_files(root) - set(files)):
        old = _read(host_path(root, path))
        if old is not None:
            out.append(Change(path, old, None))
    return out


def diff(changes_: list[Change]) -> str:
    chunks: list[str] = []
    for change in changes_:
        old = (change.old or b"").decode(errors="replace").splitlines(keepends=True)
        new = (change.new or b"").decode(errors="replace").splitlines(keepends=True)
        before = "/dev/null" if change.old is None else f"a{change.path}"
        after = "/dev/null" if change.new is None else f"b{change.path}"
        chunks.append("".join(difflib.unified_diff(old, new, before, after)))
    return "".join(chunks)


# ------------------------------------------------------------------ writing


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdirs(directory: Path) -> None:
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    _mkdirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


def _generations_dir(root: Path) -> Path:
    return host_path(root, f"{STATE_DIR}/generations")


def generations(root: Path) -> list[int]:
    directory = _generations_dir(root)
    if not directory.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in directory.iterdir()
        if p.name.isdigit() and (p / "manifest.json").is_file()
    )


def _save_generation(root: Path, changes_: list[Change], enabled_unit: str | None) -> int:
    existing = generations(root)
    number = (existing[-1] + 1) if existing else 1
    state = host_path(root, STATE_DIR)
    _mkdirs(state.parent)
    state.mkdir(mode=0o700, exist_ok=True)
    os.chmod(state, 0o700)
    gen_dir = _generations_dir(root) / str(number)
    gen_dir.mkdir(mode=0o700, parents=True)
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "previous_owned": sorted(owned_files(root)),
        "enabled_unit": enabled_unit,
        "files": {
            c.path: None if c.old is None else base64.b64encode(c.old).decode("ascii")
            for c in changes_
        },
        "modes": {
            c.path: stat.S_IMODE(host_path(root, c.path).stat().st_mode)
            for c in changes_
            if c.old is not None
        },
    }
    atomic_write(gen_dir / "manifest.json", json.dumps(manifest, indent=1).encode(), mode=0o600)
    return number


def _install(root: Path, changes_: list[Change], owned: set[str]) -> None:
    for change in changes_:
        target = host_path(root, change.path)
        if change.new is None:
            _remove(target)
        else:
            atomic_write(target, change.new)
    atomic_write(_owned_path(root), json.dumps(sorted(owned)).encode(), mode=0o600)


def _manifest(root: Path, number: int) -> dict[str, Any]:
    gen_dir = _generations_dir(root) / str(number)
    try:
        data = json.loads((gen_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise RollbackError(
            f"generation {number} under {gen_dir} is unreadable ({exc}); restore by hand"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise RollbackError(f"generation {number} under {gen_dir} is malformed; restore by hand")
    return data


def _restore(root: Path, number: int) -> None:
    gen_dir = _generations_dir(root) / str(number)
    manifest = _manifest(root, number)
    modes = manifest.get("modes") or {}
    for path, encoded in manifest["files"].items():
        target = host_path(root, path)
        if encoded is None:
            _remove(target)
        else:
            atomic_write(target, base64.b64decode(encoded), mode=int(modes.get(path, FILE_MODE)))
    atomic_write(
        _owned_path(root), json.dumps(manifest.get("previous_owned", [])).encode(), mode=0o600
    )
    for leftover in gen_dir.iterdir():
        leftover.unlink()
    gen_dir.rmdir()


# ------------------------------------------------------------- activation

WAIT_PROPS = ("ActiveState", "SubState", "Result", "NRestarts", "ExecMainStatus")


def expected_properties(deployment: Deployment) -> dict[str, str]:
    """The `systemctl show` values that prove systemd read the planned limits."""
    expected: dict[str, str] = {}
    for key in ("MemoryMax", "MemoryHigh"):
        value = deployment.value(key)
        if value is not None:
            expected[key] = str(int(value[:-1]) * 1024**2) if value.endswith("M") else value
    for key in (
        "CPUWeight",
        "AllowedCPUs",
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
    ):
        value = deployment.value(key)
        if value is not None:
            expected[key] = value
    return expected


def _wait_healthy(
    systemctl: SystemManager,
    deployment: Deployment,
    timeout: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> str | None:
    """None when the unit is running and the API answers; otherwise why not."""
    unit = deployment.unit_name
    first = systemctl.show(unit, WAIT_PROPS)
    restarts = first.get("NRestarts", "0")
    deadline = clock() + timeout
    while True:
        props = systemctl.show(unit, WAIT_PROPS)
        state, sub = props.get("ActiveState", ""), props.get("SubState", "")
        if state == "failed" or sub == "auto-restart" or props.get("NRestarts", "0") != restarts:
            return f"{unit} failed to stay up ({state}/{sub}, result {props.get('Result', '?')}, exit status {props.get('ExecMainStatus', '?')})"
        if state == "active" and api.is_up(deployment.api_url, timeout=2.0):
            return None
        if clock() >= deadline:
            return f"{unit} is {state}/{sub} but {deployment.api_url} did not answer within {timeout:g}s"
        sleep(0.5)


def _same(key: str, shown: str | None, planned: str) -> bool:
    if shown is None:
        return False
    if key == "AllowedCPUs":
        # systemctl show prints CPU sets as space-separated ranges ("0-31 64-95").
        try:
            return parse_cpu_list(shown.replace(" ", ",")) == parse_cpu_list(planned)
        except FactsError:
            return False
    return shown == planned


def _ours(root: Path, deployment: Deployment, keys: list[str]) -> list[str]:
    """The keys whose effective value is the one in our drop-in.

    A later drop-in (the operator's override.conf) wins over ours by design;
    its values are not a failed apply.
    """
    try:
        effective = effective_mod.load_effective(root, deployment.unit_name)
    except OpsError:
        return keys
    kept = []
    for key in keys:
        last = effective.last("Service", key)
        if last is None or last.path == deployment.dropin_path:
            kept.append(key)
    return kept


def _check_properties(systemctl: SystemManager, deployment: Deployment, root: Path) -> str | None:
    planned = expected_properties(deployment)
    expected = {k: planned[k] for k in _ours(root, deployment, list(planned))}
    if not expected:
        return None
    actual = systemctl.show(deployment.unit_name, list(expected))
    wrong = [
        f"{k}={actual.get(k)!r} (planned {v!r})"
        for k, v in expected.items()
        if not _same(k, actual.get(k), v)
    ]
    return "systemd reports " + ", ".join(wrong) if wrong else None


def _activate(
    systemctl: SystemManager,
    deployment: Deployment,
    root: Path,
    *,
    enable: bool,
    timeout: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> str | None:
    systemctl.daemon_reload()
    if enable:
        systemctl.enable(deployment.unit_name)
    systemctl.reset_failed(deployment.unit_name)
    try:
        systemctl.restart(deployment.unit_name)
    except CommandError as exc:
        return str(exc)
    problem = _check_properties(systemctl, deployment, root)
    if problem:
        return problem
    return _wait_healthy(systemctl, deployment, timeout, clock, sleep)


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
    state = host_path(root, STATE_DIR)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OpsError(
                f"another ollama-ops apply or rollback holds {state / 'lock'}; wait for it to finish"
            ) from exc
        yield
    finally:
        os.close(fd)


def apply(
    deployment: Deployment,
    files: Mapping[str, str],
    root: Path,
    *,
    restart: bool = True,
    timeout: float = 60.0,
    systemctl: SystemManager | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Install ``files`` under root; on the live system also reload, restart and verify.

    If the service does not come up, the previous files are restored, systemd
    is reloaded and the service restarted with them, and ApplyError says why.
    """
    check_root(root)
    preflight(deployment, root)
    if systemctl is None and is_live(root):
        require("systemctl")  # before anything is written
        systemctl = Systemctl()
    pending = changes(root, files)
    if not pending:
        return Outcome(
            (), None, False, "nothing to change: the installed files already match the plan"
        )
    if not os.access(root, os.W_OK):
        raise OpsError(f"--root {str(root)!r} is not writable; run as root")
    with _locked(root):
        if changes(root, files) != pending:
            raise OpsError("the installed files changed while planning; run apply again")
        return _apply_locked(
            deployment,
            root,
            pending,
            set(files),
            restart=restart,
            timeout=timeout,
            systemctl=systemctl,
            clock=clock,
            sleep=sleep,
        )


def _apply_locked(
    deployment: Deployment,
    root: Path,
    pending: list[Change],
    owned: set[str],
    *,
    restart: bool,
    timeout: float,
    systemctl: SystemManager | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Outcome:
    enable = deployment.write_base_unit and any(
        c.path == deployment.unit_path and c.old is None for c in pending
    )
    number = _save_generation(
        root,
        pending,
        deployment.unit_name if enable and systemctl is not None and restart else None,
    )
    try:
        _install(root, pending, owned)
    except OSError as exc:
        _restore(root, number)
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
        problem = _activate(
            systemctl, deployment, root, enable=enable, timeout=timeout, clock=clock, sleep=sleep
        )
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
    created = _manifest(root, number).get("enabled_unit")
    if isinstance(created, str):
        # This generation wrote the whole unit: stop and disable it while its file still exists.
        systemctl.stop(created)
        systemctl.disable(created)
    _restore(root, number)
    systemctl.daemon_reload()
    systemctl.reset_failed(unit)
    if created != unit:
        # The old configuration may not start either; its files are back regardless.
        with contextlib.suppress(CommandError):
            systemctl.restart(unit)


def rollback(
    root: Path, unit: str, *, restart: bool = True, systemctl: SystemManager | None = None
) -> int:
    """Restore the newest generation's before-image; returns its number."""
    check_root(root)
    numbers = generations(root)
    if not numbers:
        raise RollbackError(
            f"no previous generation under {host_path(root, STATE_DIR)}; nothing to roll back"
        )
    if systemctl is None and is_live(root) and restart:
        require("systemctl")
        systemctl = Systemctl()
    with _locked(root):
        if systemctl is not None and restart:
            _rollback_live(root, numbers[-1], systemctl, unit)
        else:
            _restore(root, numbers[-1])
    return numbers[-1]
