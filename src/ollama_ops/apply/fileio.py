"""Files under --root: confinement, no symlinks followed, atomic writes, one fault seam.

Every path ollama-ops writes or reads back for itself goes through
:func:`host_path`, which refuses anything that would lead outside the root.
The operations themselves work on directory file descriptors and open the
last component with ``O_NOFOLLOW``: a symlink where a file of ours should be
is refused, never followed. Writes are atomic: a temporary file with a fixed
name (``.NAME.ollama-ops.tmp``, so that recovery after a crash can find and
remove it) in the same directory, written, chmod/chown-ed, fsynced, renamed
over the target, then the directory fsynced. New directories are fsynced in
their parent.

Every mutation (mkdir, create, write, chmod, chown, fsync, rename, unlink,
rmdir, fsync-dir) first calls the hook installed with :func:`faults`, if any. Tests use
it to kill the process or raise ENOSPC at the Nth step; production code
never installs one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ollama_ops.errors import OpsError, StateError

FILE_MODE = 0o644
DIR_MODE = 0o755
TMP_SUFFIX = ".ollama-ops.tmp"
MAX_READ = 16 * 1024 * 1024  # no file of ours comes near this; a bigger one is not ours

FaultHook = Callable[[str, str], None]
_fault_hook: ContextVar[FaultHook | None] = ContextVar("ollama_ops_fault_hook", default=None)


@contextlib.contextmanager
def faults(hook: FaultHook) -> Iterator[None]:
    """Call ``hook(operation, path)`` before every filesystem mutation made in this context."""
    token = _fault_hook.set(hook)
    try:
        yield
    finally:
        _fault_hook.reset(token)


def _step(operation: str, path: object) -> None:
    hook = _fault_hook.get()
    if hook is not None:
        hook(operation, str(path))


def tmp_name(name: str) -> str:
    return f".{name}{TMP_SUFFIX}"


@dataclass(frozen=True)
class FileImage:
    """A regular file as ollama-ops saves and restores it."""

    data: bytes
    mode: int  # permission bits only (stat.S_IMODE)
    owner: tuple[int, int] | None  # (uid, gid); None: not recorded, left as written


def is_root_user() -> bool:
    return os.geteuid() == 0


def host_path(root: Path, path: str) -> Path:
    """``path`` under root, refusing anything that would lead outside it.

    A tree given with --root (a container image, a mounted disk) may hold
    absolute symlinks such as etc/systemd/system -> /etc/systemd/system;
    following one would write to this host instead.
    """
    if not path.startswith("/") or "/../" in path + "/" or "\0" in path:
        raise OpsError(f"refusing path {path!r}: not absolute or contains '..'")
    target = root / path.lstrip("/")
    base = root.resolve()
    if base != Path("/"):
        if not target.parent.resolve().is_relative_to(base):
            raise StateError(
                f"refusing {path}: a symlink under {target.parent} leads outside --root {root}; "
                "replace it with a directory or point --root at the real tree"
            )
        if target.is_symlink():
            raise StateError(
                f"refusing {path}: it is a symlink inside --root {root}; replace it with a file"
            )
    return target


def check_root(root: Path) -> None:
    if not root.is_dir():
        raise OpsError(f"--root {str(root)!r} is not a directory; pass an existing directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise StateError(f"--root {str(root)!r} cannot be read; run as root or fix its permissions")


class Dir:
    """An open directory: every operation is relative to its descriptor."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path  # for messages only; never used to reach the directory

    def __enter__(self) -> Dir:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def show(self, name: str) -> str:
        return str(self.path / name)

    def kind(self, name: str) -> str | None:
        """'file', 'dir', 'symlink' or 'other' without following a symlink; None: absent."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot stat {self.show(name)} ({exc.strerror})") from exc
        if stat.S_ISLNK(st.st_mode):
            return "symlink"
        if stat.S_ISDIR(st.st_mode):
            return "dir"
        return "file" if stat.S_ISREG(st.st_mode) else "other"

    def entries(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def child(self, name: str, *, create: bool = False, mode: int = DIR_MODE) -> Dir | None:
        """The subdirectory ``name`` (None when absent and not created); never a symlink."""
        created = False
        if create and self.kind(name) is None:
            _step("mkdir", self.show(name))
            with contextlib.suppress(FileExistsError):  # made meanwhile: open it as it is
                os.mkdir(name, mode, dir_fd=self.fd)
                created = True
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _refused(self.show(name), exc, "a directory") from exc
        sub = Dir(fd, self.path / name)
        if created:
            sub.chmod(mode)  # whatever the umask
            self.fsync()  # the new entry is durable in its parent
        return sub

    def chmod(self, mode: int) -> None:
        if stat.S_IMODE(os.fstat(self.fd).st_mode) != mode:
            _step("chmod", self.path)
            os.fchmod(self.fd, mode)

    def fsync(self) -> None:
        _step("fsync-dir", self.path)
        os.fsync(self.fd)

    def read(self, name: str, limit: int = MAX_READ) -> FileImage | None:
        """The regular file ``name``: bytes, mode and owner; None when absent."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _refused(self.show(name), exc, "a regular file") from exc
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StateError(
                    f"refusing {self.show(name)}: not a regular file; replace it with a file"
                )
            try:
                data = handle.read(limit + 1)
            except OSError as exc:
                raise StateError(
                    f"cannot read {self.show(name)} ({exc.strerror}); check permissions or --root"
                ) from exc
        if len(data) > limit:
            raise StateError(f"refusing {self.show(name)}: larger than {limit} bytes")
        return FileImage(data, stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid))

    def write(
        self,
        name: str,
        data: bytes,
        mode: int = FILE_MODE,
        owner: tuple[int, int] | None = None,
    ) -> None:
        """Replace ``name`` atomically; the owner is set only when running as root."""
        if self.kind(name) in ("dir", "other"):
            raise StateError(f"refusing to replace {self.show(name)}: not a regular file")
        tmp = tmp_name(name)
        self.unlink(tmp, sync=False)
        _step("create", self.show(tmp))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                _step("write", self.show(tmp))
                handle.write(data)
                handle.flush()
                _step("chmod", self.show(tmp))
                os.fchmod(fd, mode)
                if owner is not None and is_root_user():
                    _step("chown", self.show(tmp))
                    os.fchown(fd, *owner)
                _step("fsync", self.show(tmp))
                os.fsync(fd)
            _step("rename", self.show(name))
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            if isinstance(exc, OSError) and not str(exc.filename or "").startswith("/"):
                exc.filename = self.show(name)  # name the file in the one-line error
            raise
        self.fsync()

    def unlink(self, name: str, *, sync: bool = True) -> bool:
        """Remove the file (or symlink) ``name``; False when it was absent."""
        if self.kind(name) is None:
            return False
        _step("unlink", self.show(name))
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        except IsADirectoryError as exc:
            raise StateError(f"refusing to remove {self.show(name)}: a directory") from exc
        if sync:
            self.fsync()
        return True

    def rmdir(self, name: str) -> bool:
        """Remove the empty directory ``name``; False when absent or not empty."""
        if self.kind(name) != "dir":
            return False
        _step("rmdir", self.show(name))
        try:
            os.rmdir(name, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                return False
            raise
        self.fsync()
        return True


def _refused(shown: str, exc: OSError, expected: str) -> StateError:
    if exc.errno == errno.ELOOP:
        return StateError(f"refusing {shown}: it is a symlink; replace it with {expected}")
    if exc.errno == errno.ENOTDIR:
        return StateError(f"refusing {shown}: not {expected}; move it away")
    return StateError(f"cannot open {shown} ({exc.strerror}); check permissions or --root")


def open_dir(path: Path) -> Dir:
    """A directory named by the operator (--root itself) or already checked by host_path."""
    try:
        return Dir(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), path)
    except OSError as exc:
        raise _refused(str(path), exc, "a directory") from exc


def missing_dirs(root: Path, path: str) -> list[str]:
    """The ancestors of ``path`` (inside root) that do not exist yet, outermost first."""
    missing: list[str] = []
    parent = os.path.dirname(path)
    while parent != "/" and not os.path.lexists(root / parent.lstrip("/")):
        missing.append(parent)
        parent = os.path.dirname(parent)
    return missing[::-1]


def open_parent(root: Path, path: str, *, create: bool = False) -> Dir | None:
    """The directory holding ``path`` (checked by host_path); None when it does not exist.

    With ``create``, missing directories are made one by one (mode 0755),
    each fsynced in its parent.
    """
    parent = host_path(root, path).parent
    if not create:
        return open_dir(parent) if parent.is_dir() else None
    for missing in missing_dirs(root, path):
        host = host_path(root, missing)
        with open_dir(host.parent) as above:
            sub = above.child(host.name, create=True)
            if sub is not None:
                sub.close()
    return open_dir(parent)


def read_image(root: Path, path: str) -> FileImage | None:
    """The file at ``path`` under root; None when it (or its directory) does not exist."""
    directory = open_parent(root, path)
    if directory is None:
        return None
    with directory:
        return directory.read(host_path(root, path).name)


def read_bytes(root: Path, path: str) -> bytes | None:
    image = read_image(root, path)
    return None if image is None else image.data
