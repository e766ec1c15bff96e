"""Ollama's journal as evidence: read the last minutes once, or follow it.

Entries are read as JSON so each carries journald's ``__MONOTONIC_TIMESTAMP``
(CLOCK_MONOTONIC, the clock ``time.monotonic()`` reads): evidence ages stay
right when the wall clock jumps. The follower is the one long-running child
process of the supervisor (``journalctl -f``); it cannot go through the
run-to-completion wrapper in ``host.proc``, so it is spawned here, with the
same fixed locale and no shell.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ollama_ops.errors import CommandError
from ollama_ops.health.logscan import Event, Tracker, classify
from ollama_ops.health.model import Progress
from ollama_ops.runtime import Runtime

log = logging.getLogger(__name__)

_UNREADABLE = ("insufficient permissions", "No journal files", "Failed to", "Permission denied")


def boot_id(root: Path = Path("/")) -> str | None:
    try:
        return (root / "proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        return None


def parse_entry(line: str, boot: str | None) -> tuple[float, str] | None:
    """(monotonic seconds, message) of one `journalctl -o json` line; None if not usable."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if boot and data.get("_BOOT_ID") not in (None, boot):
        return None  # another boot's monotonic clock
    message = data.get("MESSAGE")
    if isinstance(message, list):  # journald sends non-UTF-8 text as a byte array
        message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(
            "utf-8", errors="replace"
        )
    try:
        mono = int(str(data.get("__MONOTONIC_TIMESTAMP"))) / 1e6
    except ValueError:
        return None
    return (mono, message) if isinstance(message, str) else None


def events_from(
    lines: Iterable[str], boot: str | None, ignore: frozenset[str] = frozenset()
) -> list[Event]:
    found = []
    for line in lines:
        entry = parse_entry(line, boot)
        if entry is None:
            continue
        kind = classify(entry[1], ignore)
        if kind is not None:
            found.append(Event(entry[0], kind[0], kind[1]))
    return found


def _unreadable_reason(stderr: str) -> str | None:
    for line in stderr.splitlines():
        if any(marker in line for marker in _UNREADABLE):
            return line.strip()[:160]
    return None


def namespace_args(rt: Runtime, unit: str) -> list[str]:
    """``--namespace=+NAME`` when the unit logs to its own journal (LogNamespace=, [logs])."""
    from ollama_ops.logs.journal import namespace_of

    namespace = namespace_of(rt, unit)
    return [f"--namespace=+{namespace}"] if namespace else []


def recent(
    rt: Runtime,
    unit: str,
    seconds: float,
    window: float,
    ignore: frozenset[str] = frozenset(),
    *,
    namespace: list[str] | None = None,
) -> Progress:
    """The evidence of the last ``seconds`` of ``unit``'s journal, counted over ``window``.

    Access lines of clients in ``ignore`` (the checker's own address) are left out.
    """
    argv = ["journalctl", "-u", unit, f"--since=-{max(1, int(seconds))}s"]
    argv += ["-o", "json", "--no-pager", "-q"]
    argv += namespace_args(rt, unit) if namespace is None else namespace
    try:
        done = rt.run(argv, check=False, timeout=20)
    except CommandError as exc:
        return Progress(readable=False, detail=f"journal unreadable: {exc}")
    why = _unreadable_reason(done.stderr)
    if done.returncode != 0 or why:
        reason = why or (done.stderr.strip().splitlines() or ["no output"])[-1][:160]
        return Progress(readable=False, detail=f"journal unreadable: {reason}")
    tracker = Tracker(keep=window + 1)
    events = events_from(done.stdout.splitlines(), boot_id(rt.root), ignore)
    for ev in sorted(events, key=lambda e: e.at):
        tracker.add(ev)
    return tracker.progress(rt.clock(), window)


class JournalFollower:
    """`journalctl -f` of one unit in a thread, folded into a Tracker as lines arrive."""

    def __init__(
        self,
        unit: str,
        *,
        history: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        argv: list[str] | None = None,
        retry_after: float = 5.0,
        ignore_clients: frozenset[str] = frozenset(),
        silent_after: float = 10.0,
        namespace: Sequence[str] = (),
    ) -> None:
        self.unit = unit
        self.ignore = ignore_clients
        self.clock = clock
        self.argv = argv or [
            *("journalctl", "-u", unit, "-f", f"--since=-{int(history)}s"),
            *("-o", "json", "--no-pager", "-q", *namespace),
        ]
        self.retry_after = retry_after
        self.tracker = Tracker()
        self.readable = False
        self.detail = "journal not read yet"
        # The supervisor's own answered probes put access lines in the journal: when none
        # arrives this long after one was expected, the follower is not reading (filtered,
        # stuck). A silent, hung server is not that: nothing is expected of it.
        self.silent_after = silent_after
        self._expected: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._boot = boot_id()

    def start(self) -> JournalFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        self._thread.join(5)

    def progress(self, now: float, window: float) -> Progress:
        with self._lock:
            if not self.readable:
                return Progress(readable=False, detail=self.detail)
            waited = None if self._expected is None else self.clock() - self._expected
            if waited is not None and waited > self.silent_after:
                return Progress(
                    readable=False,
                    detail=f"journal unreadable: no entry of {self.unit} for {waited:.0f}s "
                    "after Ollama answered the checker's own requests",
                )
            return self.tracker.progress(now, window)

    def expect(self, at: float) -> None:
        """Ollama answered a request at ``at``: an access line should follow."""
        with self._lock:
            if self._expected is None:
                self._expected = at

    def feed(self, line: str) -> None:
        """One line of journalctl's output (an entry, or journalctl's own complaint)."""
        entry = parse_entry(line, self._boot)
        if entry is None:
            why = _unreadable_reason(line)
            if why:
                with self._lock:
                    self.readable, self.detail = False, f"journal unreadable: {why}"
            return
        kind = classify(entry[1], self.ignore)
        with self._lock:
            self.readable = True
            if self._expected is not None and self.clock() >= self._expected:
                self._expected = None
            if kind is not None:
                self.tracker.add(Event(entry[0], kind[0], kind[1]))

    def _run(self) -> None:
        while not self._stop.is_set():
            env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "SYSTEMD_PAGER": ""}
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    env=env,
                )
            except OSError as exc:
                with self._lock:
                    self.readable, self.detail = False, f"journal unreadable: {exc.strerror}"
                self._stop.wait(self.retry_after)
                continue
            with self._lock:
                # Readable until journalctl complains, or says nothing when it should.
                self.readable, self.detail = True, ""
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                self.feed(line)
            code = self._proc.wait()
            if self._stop.is_set():
                return
            with self._lock:
                self.readable, self.detail = False, f"journal unreadable: journalctl exited {code}"
            log.warning("journalctl -f exited %s; retrying in %gs", code, self.retry_after)
            self._stop.wait(self.retry_after)


class RecentJournal:
    """Evidence read afresh at each question (`watch --once`: no follower to keep)."""

    def __init__(
        self, rt: Runtime, unit: str, history: float = 300.0, ignore: frozenset[str] = frozenset()
    ) -> None:
        self.rt = rt
        self.unit = unit
        self.history = history
        self.ignore = ignore
        self.namespace = namespace_args(rt, unit)

    def expect(self, at: float) -> None:
        del at  # each question reads the journal afresh: nothing to watch for

    def progress(self, now: float, window: float) -> Progress:
        del now  # recent() measures ages against the runtime's clock
        return recent(
            self.rt,
            self.unit,
            max(self.history, window),
            window,
            self.ignore,
            namespace=self.namespace,
        )
