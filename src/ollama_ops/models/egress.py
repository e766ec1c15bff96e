"""The service's IP filter, opened at runtime only while a pull runs, and closed again for sure.

``IPAddressDeny=any`` (the plan's default) keeps a compromised or misdirected
server from reaching anything but its clients, and also keeps ``ollama pull``
from reaching a registry. :func:`opened` lifts it for one unit while its body
runs, without a restart:

1. take ``/run/ollama-ops/egress/UNIT.lock`` (flock: one opener per unit;
   released by the kernel if the process dies);
2. close what a killed earlier run left open (its marker says so);
3. read ``systemctl show -p IPAddressDeny``; empty means egress is already
   open (``service.egress = "open"`` or the operator's doing): nothing to do;
4. write the marker ``/run/ollama-ops/egress/UNIT.json`` (what the filter
   was, and the runtime control drop-in as it was) BEFORE opening;
5. ``systemctl set-property --runtime UNIT IPAddressDeny=`` (reset: open) and
   check that ``show`` says so;
6. afterwards, on success, error, Ctrl-C or SIGTERM/SIGHUP:
   ``set-property --runtime UNIT IPAddressDeny=any`` (closed at once), put
   ``/run/systemd/system.control/UNIT.d/50-IPAddressDeny.conf`` back as it was
   (removed, normally), ``daemon-reload`` so the persistent drop-in decides
   again, check that ``show`` gives the value of step 3, then remove the marker.

The IP filter applies to both directions: while it is open, clients from
anywhere reach a non-loopback bind address too. Callers refuse that unless
told otherwise (see :func:`bind_of`). Everything lives in /run, as systemd's
runtime control drop-ins do: a reboot clears both.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ollama_ops.errors import BusyError, CommandError, OpsError
from ollama_ops.host.systemd import SystemManager
from ollama_ops.runtime import Runtime

CONTROL_DIR = "run/systemd/system.control"
CONTROL_NAME = "50-IPAddressDeny.conf"
MARKER_DIR = "run/ollama-ops/egress"
PROP = "IPAddressDeny"
OPEN = f"{PROP}="
CLOSE = f"{PROP}=any"
_ANY = frozenset({"0.0.0.0/0", "::/0"})
_MAX_MARKER = 64 * 1024

# (event, text) for the caller's output: "recovered", "already-open", "open", "closed".
Report = Callable[[str, str], None]


def is_open(shown: str) -> bool:
    """``systemctl show -p IPAddressDeny`` prints nothing after it: every address passes."""
    return not shown.split()


def is_closed(shown: str) -> bool:
    """Every address denied (``any``, shown as ``::/0 0.0.0.0/0``)."""
    words = set(shown.split())
    return "any" in words or words >= _ANY


def same_filter(a: str, b: str) -> bool:
    return set(a.split()) == set(b.split())


@dataclass(frozen=True)
class Marker:
    """What a running pull opened: enough for a later run to close it again."""

    unit: str
    before: str  # `systemctl show -p IPAddressDeny` before opening
    control: str | None  # the runtime control drop-in's text before opening (None: absent)
    pid: int
    opened_at: float  # wall clock

    def dumps(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True) + "\n"

    @staticmethod
    def loads(text: str, unit: str) -> Marker | None:
        """The marker, or None when it is unreadable (then close to ``any`` without a check)."""
        try:
            data = json.loads(text)
            marker = Marker(
                unit=str(data["unit"]),
                before=str(data["before"]),
                control=None if data["control"] is None else str(data["control"]),
                pid=int(data["pid"]),
                opened_at=float(data["opened_at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return marker if marker.unit == unit else None


@dataclass(frozen=True)
class Window:
    """What :func:`opened` did: whether it opened egress, and the filter before."""

    opened: bool
    before: str


@dataclass(frozen=True)
class Paths:
    control: Path
    marker: Path
    lock: Path

    @staticmethod
    def of(root: Path, unit: str) -> Paths:
        marker_dir = root / MARKER_DIR
        return Paths(
            control=root / CONTROL_DIR / f"{unit}.d" / CONTROL_NAME,
            marker=marker_dir / f"{unit}.json",
            lock=marker_dir / f"{unit}.lock",
        )


# ---------------------------------------------------------------- small file helpers


def _read_small(path: Path) -> str | None:
    """A regular file's text (no symlinks), None when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CommandError(f"cannot read {path} ({exc.strerror}); remove it by hand") from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise CommandError(f"{path} is not a regular file; remove it by hand")
        return f.read(_MAX_MARKER).decode("utf-8", "replace")


def _write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if mode == 0o600 else 0o755)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def _locked(path: Path, unit: str) -> Iterator[None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CommandError(
            f"cannot open {path} ({exc.strerror}); run as root (pull changes {unit}'s properties)"
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise BusyError(
                    f"another ollama-ops pull or apply is pulling for {unit} (it holds {path}); "
                    "wait for it to finish"
                ) from exc
            raise
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- signals


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def interrupts_on_signals(
    signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP),
) -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt (as SIGINT does), so ``finally`` runs."""
    if not _main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, interrupt) for s in signums}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_deferred(
    signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
) -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while egress closes; one that came raises KeyboardInterrupt after."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    old = {s: signal.signal(s, remember) for s in signums}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if caught:
        raise KeyboardInterrupt(signal.Signals(caught[0]).name)


# ---------------------------------------------------------------- open and close


def shown(systemctl: SystemManager, unit: str) -> str:
    return systemctl.show(unit, [PROP]).get(PROP, "").strip()


def bind_of(systemctl: SystemManager, unit: str) -> str | None:
    """OLLAMA_HOST from the unit's Environment= (None when unset: Ollama's 127.0.0.1:11434)."""
    text = systemctl.show(unit, ["Environment"]).get("Environment", "")
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    for word in reversed(words):
        key, sep, value = word.partition("=")
        if sep and key == "OLLAMA_HOST":
            return value
    return None


def _close(systemctl: SystemManager, paths: Paths, unit: str, marker: Marker | None) -> str:
    """Close egress as the marker says; the filter shown afterwards. CommandError if still open."""
    problems: list[str] = []
    try:
        systemctl.set_property_runtime(unit, [CLOSE])
    except OpsError as exc:
        problems.append(str(exc))
    try:
        if marker is not None and marker.control is not None:
            _write_atomic(paths.control, marker.control, 0o644)  # as systemd writes it
        else:
            _unlink(paths.control)
    except OSError as exc:
        problems.append(f"{paths.control}: {exc.strerror}")
    try:
        systemctl.daemon_reload()
    except OpsError as exc:
        problems.append(str(exc))
    after = shown(systemctl, unit)
    expected_ok = same_filter(after, marker.before) if marker is not None else is_closed(after)
    if not expected_ok or is_open(after):
        want = marker.before if marker is not None else "::/0 0.0.0.0/0"
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise CommandError(
            f"egress of {unit} may still be open: IPAddressDeny={after!r}, expected {want!r}"
            f"{detail}; run `ollama-ops pull --close --unit {unit}` as root"
        )
    _unlink(paths.marker)
    return after


def recover(rt: Runtime, systemctl: SystemManager, unit: str, report: Report) -> bool:
    """Close egress a killed earlier run left open (call with the lock held); True if it did."""
    paths = Paths.of(rt.root, unit)
    text = _read_small(paths.marker)
    if text is None:
        return False
    marker = Marker.loads(text, unit)
    after = _close(systemctl, paths, unit, marker)
    who = f"pid {marker.pid}" if marker is not None else "an unreadable marker"
    report(
        "recovered",
        f"closed egress of {unit} left open by an interrupted pull ({who}): {PROP}={after}",
    )
    return True


def close_leftover(rt: Runtime, unit: str, report: Report) -> bool:
    """``pull --close`` and apply: close what a killed pull left open (nothing left: no-op).

    Without a marker nothing is touched, not even the lock file; BusyError when
    a pull is running now (it closes its own window).
    """
    paths = Paths.of(rt.root, unit)
    if not os.path.lexists(paths.marker):
        return False
    systemctl = rt.systemctl()
    with _locked(paths.lock, unit):
        return recover(rt, systemctl, unit, report)


@contextlib.contextmanager
def opened(rt: Runtime, unit: str, report: Report) -> Iterator[Window]:
    """Egress of ``unit`` open while the body runs, closed after it however it ends."""
    systemctl = rt.systemctl()
    paths = Paths.of(rt.root, unit)
    with _locked(paths.lock, unit):
        recover(rt, systemctl, unit, report)
        before = shown(systemctl, unit)
        if is_open(before):
            report(
                "already-open",
                f"egress of {unit} is already open ({PROP} is empty): nothing to open or close",
            )
            yield Window(False, before)
            return
        marker = Marker(unit, before, _read_small(paths.control), os.getpid(), rt.wall_clock())
        _write_atomic(paths.marker, marker.dumps())
        with interrupts_on_signals():
            try:
                systemctl.set_property_runtime(unit, [OPEN])
                now = shown(systemctl, unit)
                if not is_open(now):
                    raise CommandError(
                        f"systemctl set-property --runtime {unit} {OPEN} left {PROP}={now!r}; "
                        "egress did not open"
                    )
                report("open", f"opened egress of {unit} for the pull ({PROP}= at runtime)")
                yield Window(True, before)
            finally:
                with signals_deferred():
                    after = _close(systemctl, paths, unit, marker)
                report("closed", f"closed egress of {unit} again: {PROP}={after}")
