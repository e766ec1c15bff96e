"""ollama-ops' own state under ``<root>/var/lib/ollama-ops`` (0700), reached without symlinks.

Layout::

    lock                          flock(2): one apply or rollback at a time per root
    owned.json                    the files ollama-ops wrote (a sorted JSON list)
    journal.json                  the apply or rollback in progress (apply.journal)
    generations/N/manifest.json   the before-image of apply N, restored by rollback

Every directory from --root down to the state directory is opened as a
descriptor with ``O_NOFOLLOW`` (on the live root ``/``, ``var`` and ``lib``
may be symlinks: nothing leads outside ``/``), and everything inside it is
opened relative to those descriptors, files as regular files only. A
symlink anywhere in the state directory is refused with a StateError, never
followed, so a tampered tree cannot make ollama-ops read, write or delete
anything outside it. Manifests and the journal are validated whole
(:mod:`apply.records`) before they are used.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from ollama_ops.apply.fileio import Dir, open_dir, tmp_name
from ollama_ops.apply.records import (
    Journal,
    Manifest,
    dump_journal,
    dump_manifest,
    is_ownable,
    load_journal,
    load_manifest,
)
from ollama_ops.errors import BusyError, StateError

STATE_DIR = "/var/lib/ollama-ops"
LOCK, OWNED, JOURNAL, GENERATIONS, MANIFEST = (
    "lock",
    "owned.json",
    "journal.json",
    "generations",
    "manifest.json",
)
STATE_MODE = 0o700
log = logging.getLogger(__name__)
_NUMBER = re.compile(r"[1-9][0-9]{0,8}")


def open_state(root: Path, *, create: bool) -> Dir | None:
    """The state directory as a descriptor; None when it does not exist and is not created."""
    live = root.resolve() == Path("/")
    current = open_dir(root)
    parts = STATE_DIR.strip("/").split("/")
    for index, name in enumerate(parts):
        last = index == len(parts) - 1
        with current:
            if live and not last:  # the live root: /var or /var/lib may be symlinks
                sub: Dir | None = None
                if create or (current.path / name).is_dir():
                    os.makedirs(current.path / name, mode=0o755, exist_ok=True)
                    sub = open_dir(current.path / name)
            else:
                sub = current.child(name, create=create, mode=STATE_MODE if last else 0o755)
        if sub is None:
            return None
        current = sub
    return current


class State:
    """The open state directory of one root; made by :func:`locked` or :func:`peek`."""

    def __init__(self, root: Path, directory: Dir) -> None:
        self.root = root
        self.dir = directory

    def where(self, *names: str) -> str:
        return str(Path(STATE_DIR, *names))

    # -- owned.json ------------------------------------------------------------------------

    def owned(self) -> tuple[str, ...] | None:
        """The owned list; None when owned.json does not exist.

        Only paths ollama-ops can have written count, so a tampered list
        cannot make it read or delete other files.
        """
        image = self.dir.read(OWNED)
        if image is None:
            return None
        try:
            data = json.loads(image.data)
        except (ValueError, RecursionError):
            return ()
        if not isinstance(data, list):
            return ()
        return tuple(sorted({p for p in data if is_ownable(p)}))

    def write_owned(self, owned: tuple[str, ...] | None) -> None:
        self.dir.unlink(tmp_name(OWNED))
        if owned is None:
            self.dir.unlink(OWNED)
            return
        current = self.dir.read(OWNED)
        data = json.dumps(sorted(owned)).encode()
        if current is None or current.data != data or current.mode != 0o600:
            self.dir.write(OWNED, data, mode=0o600)

    # -- journal.json ----------------------------------------------------------------------

    def journal(self) -> Journal | None:
        image = self.dir.read(JOURNAL)
        if image is None:
            return None
        return load_journal(image.data, str(self.root / STATE_DIR.lstrip("/") / JOURNAL))

    def write_journal(self, journal: Journal) -> None:
        self.dir.write(JOURNAL, dump_journal(journal), mode=0o600)

    def remove_journal(self) -> None:
        """The commit. Once the unlink is done it stands, even if syncing the directory
        fails: a power cut could bring the journal back, and undoing it again is harmless."""
        self.dir.unlink(tmp_name(JOURNAL))
        try:
            self.dir.unlink(JOURNAL)
        except OSError as exc:
            if self.dir.kind(JOURNAL) is not None:
                raise
            log.warning("removed %s but could not sync its directory (%s)", JOURNAL, exc.strerror)

    # -- generations -----------------------------------------------------------------------

    def _generations_dir(self, create: bool = False) -> Dir | None:
        return self.dir.child(GENERATIONS, create=create, mode=STATE_MODE)

    def _numbered(self) -> dict[int, str | None]:
        """Every numbered entry under generations/ and its kind; a symlink is refused."""
        gens = self._generations_dir()
        if gens is None:
            return {}
        with gens:
            found: dict[int, str | None] = {}
            for name in gens.entries():
                if not _NUMBER.fullmatch(name):
                    continue
                kind = gens.kind(name)
                if kind == "symlink":
                    raise StateError(
                        f"refusing {self.where(GENERATIONS, name)} under {self.root}: "
                        "a symlink in the state directory; remove it"
                    )
                found[int(name)] = kind
            return found

    def _generation(self, number: int) -> Dir | None:
        gens = self._generations_dir()
        if gens is None:
            return None
        with gens:
            return gens.child(str(number))

    def has_manifest(self, number: int) -> bool:
        directory = self._generation(number)
        if directory is None:
            return False
        with directory:
            kind = directory.kind(MANIFEST)
        if kind not in (None, "file"):
            raise StateError(
                f"refusing {self.where(GENERATIONS, str(number), MANIFEST)} under {self.root}: "
                "not a regular file; remove that generation directory"
            )
        return kind == "file"

    def generations(self) -> list[int]:
        """The generations that hold a manifest, oldest first."""
        return sorted(
            n for n, kind in self._numbered().items() if kind == "dir" and self.has_manifest(n)
        )

    def next_generation(self) -> int:
        """One above any numbered entry, complete or not: a leftover never collides."""
        return max(self._numbered(), default=0) + 1

    def manifest(self, number: int) -> Manifest:
        directory = self._generation(number)
        image = None
        if directory is not None:
            with directory:
                image = directory.read(MANIFEST)
        where = str(self.root / STATE_DIR.lstrip("/") / GENERATIONS / str(number) / MANIFEST)
        if image is None:
            raise StateError(f"{where} is missing; remove that generation directory")
        return load_manifest(image.data, where)

    def write_manifest(self, number: int, manifest: Manifest) -> None:
        gens = self._generations_dir(create=True)
        assert gens is not None
        with gens:
            directory = gens.child(str(number), create=True, mode=STATE_MODE)
        assert directory is not None
        with directory:
            directory.write(MANIFEST, dump_manifest(manifest), mode=0o600)

    def remove_generation(self, number: int) -> None:
        gens = self._generations_dir()
        if gens is None:
            return
        with gens:
            directory = gens.child(str(number))
            if directory is None:
                return
            with directory:
                directory.unlink(tmp_name(MANIFEST))
                directory.unlink(MANIFEST)
            gens.rmdir(str(number))

    def clean_leftovers(self) -> None:
        """Remove what a crash outside any journal can leave: temp files, empty generations."""
        for name in (OWNED, JOURNAL):
            self.dir.unlink(tmp_name(name))
        for number, kind in self._numbered().items():
            if kind == "dir" and not self.has_manifest(number):
                gens = self._generations_dir()
                assert gens is not None
                with gens:
                    directory = gens.child(str(number))
                    assert directory is not None
                    with directory:
                        directory.unlink(tmp_name(MANIFEST))
                    gens.rmdir(str(number))  # left alone if it holds something else


@contextlib.contextmanager
def locked(root: Path, *, create: bool = True) -> Iterator[State | None]:
    """The state directory with its lock held; None when it does not exist (and not created)."""
    directory = open_state(root, create=create)
    if directory is None:
        yield None
        return
    with directory:
        if create:
            directory.chmod(STATE_MODE)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(LOCK, flags, 0o600, dir_fd=directory.fd)
        except OSError as exc:
            raise StateError(
                f"cannot open the lock {directory.show(LOCK)} ({exc.strerror}); "
                "it must be a regular file: remove whatever is there, or run as root"
            ) from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StateError(f"refusing the lock {directory.show(LOCK)}: not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise BusyError(
                    f"another ollama-ops apply or rollback holds {directory.show(LOCK)}; "
                    "wait for it to finish"
                ) from exc
            state = State(root, directory)
            if create:
                gens = state._generations_dir(create=True)
                if gens is not None:
                    gens.close()
            yield state
        finally:
            os.close(fd)


@contextlib.contextmanager
def peek(root: Path) -> Iterator[State | None]:
    """The state directory for reading only, without the lock; None when there is none."""
    directory = open_state(root, create=False)
    if directory is None:
        yield None
        return
    with directory:
        yield State(root, directory)
