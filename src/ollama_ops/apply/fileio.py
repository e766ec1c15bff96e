"""Files under --root: confinement to the root, atomic writes, removals.

Every path ollama-ops writes or reads back for itself goes through
:func:`host_path`, which refuses anything that would lead outside the root.
Writes are atomic (temp file in the same directory, fsync, rename, fsync of
the directory), so a crash leaves either the old or the new file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ollama_ops.errors import OpsError, StateError

FILE_MODE = 0o644


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


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes; None when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(
            f"cannot read {str(path)!r} ({exc.strerror}); check permissions or --root"
        ) from exc


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mkdirs(directory: Path) -> None:
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    mkdirs(path.parent)
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
    fsync_dir(path.parent)


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
