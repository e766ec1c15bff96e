"""Reading files of a tree mounted at a root, without ever leaving the root.

``resolve`` follows symlinks the way systemd does with ``--root``: an
absolute link target starts again at the root and ``..`` never climbs above
it. ``read_bytes`` opens the result without following a last-moment symlink
and without blocking (a FIFO named as a config file must not hang the
caller), then refuses anything but a regular file and anything over a size
cap. ``glob`` expands a pattern component by component inside the root.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path, PurePosixPath

from ollama_ops.unitfile.syntax import UnitReadError

MAX_LINKS = 40
MAX_READ = 1 << 20  # 1 MiB: far more than any unit, env file, passwd or modules list


class RootFileError(UnitReadError):
    """A file under the root that cannot be read as a regular file; ``missing`` if absent."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def resolve(root: Path, path: str) -> Path:
    """The host path of ``path`` (absolute, as seen inside root), symlinks resolved within root.

    Absolute link targets are taken relative to the root, as systemd does
    with --root; ``..`` never climbs above it. Missing components are kept
    as they are.
    """
    parts = list(PurePosixPath("/" + path.lstrip("/")).parts[1:])
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        current = root.joinpath(*resolved, part)
        if current.is_symlink():
            links += 1
            if links > MAX_LINKS:
                raise UnitReadError(f"{path}: too many levels of symbolic links under {root}")
            target = os.readlink(current)
            if target.startswith("/"):
                resolved = []
            parts = list(PurePosixPath(target).parts) + parts
            if parts and parts[0] == "/":
                parts.pop(0)
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def read_bytes(root: Path, path: str, limit: int = MAX_READ) -> bytes:
    """The bytes of the regular file ``path`` inside root; RootFileError otherwise.

    Opened with O_NOFOLLOW | O_NONBLOCK and checked with fstat, so a symlink
    swapped in after ``resolve``, a FIFO, a device or a socket is refused
    instead of followed or waited on; more than ``limit`` bytes is refused.
    """
    host = resolve(root, path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(host, flags)
    except FileNotFoundError:
        raise RootFileError(
            f"cannot read {path} under {root}: it does not exist", missing=True
        ) from None
    except OSError as exc:
        raise RootFileError(f"cannot read {path} under {root}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RootFileError(f"cannot read {path} under {root}: not a regular file")
        if info.st_size > limit:
            raise RootFileError(f"cannot read {path} under {root}: over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise RootFileError(f"cannot read {path} under {root}: over {limit} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise RootFileError(f"cannot read {path} under {root}: {exc.strerror}") from None
    finally:
        os.close(fd)


def read_text(root: Path, path: str, limit: int = MAX_READ) -> str:
    """``read_bytes`` as text; bytes that are not UTF-8 become surrogate escapes."""
    return read_bytes(root, path, limit).decode("utf-8", "surrogateescape")


def listdir(root: Path, path: str) -> list[str]:
    """The sorted names in directory ``path`` inside root; [] if it is not one."""
    try:
        return sorted(os.listdir(resolve(root, path)))
    except (OSError, UnitReadError):
        return []


def glob(root: Path, pattern: str) -> list[str]:
    """Paths inside root (absolute, as seen inside) matching ``pattern``, sorted.

    Wildcards (``*?[``) match within one component and, as in glob(3), not a
    leading dot unless the pattern has one.
    """
    found = ["/"]
    for part in PurePosixPath("/" + pattern.lstrip("/")).parts[1:]:
        if part in ("", "."):
            continue
        step: list[str] = []
        for base in found:
            if part == "..":
                step.append(str(PurePosixPath(base).parent))
            elif any(c in part for c in "*?["):
                for name in listdir(root, base):
                    if (part.startswith(".") or not name.startswith(".")) and fnmatch.fnmatchcase(
                        name, part
                    ):
                        step.append(str(PurePosixPath(base) / name))
            else:
                step.append(str(PurePosixPath(base) / part))
        found = step
    return sorted(p for p in found if resolve(root, p).exists())
