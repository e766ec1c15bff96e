"""Paths that stand as one word in a unit file, and the directories that must stay read-only.

``is_plain_path`` is the one test of a path ollama-ops writes into a
directive; ``normalize`` spells a path the way systemd's path_simplify() does
(no ``.`` components, no trailing slash), so that ``/etc/.``, ``/./usr`` and
``/usr/local/.`` are seen for what they are before ``writable_problem``
decides whether a service may write there. Pure.
"""

from __future__ import annotations

import re

PATH_MAX = 4096  # bytes, the terminating NUL included (linux/limits.h)
NAME_MAX = 255  # bytes of one path component

_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._/@+-]*")

# Making one of these writable would undo ProtectSystem=strict for the whole OS
# or for everything other services keep there.
SYSTEM_DIRS = frozenset(
    {"/", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/proc", "/sys", "/dev"}
    | {"/run", "/var", "/var/lib", "/usr/local", "/usr/lib", "/usr/share", "/home", "/root"}
    | {"/srv", "/opt", "/tmp", "/var/tmp", "/var/cache", "/var/log", "/usr/local/share", "/mnt"}
)
# Nothing below these may be writable either: configuration (a unit file in
# /etc/systemd is root), programs and libraries (a runner library is code that
# Ollama loads), the kernel's interfaces and systemd's own state.
SYSTEM_TREES = (
    "/etc",
    "/boot",
    "/proc",
    "/sys",
    "/dev",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/include",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/local/lib",
    "/run/systemd",
    "/var/lib/systemd",
)


def is_plain_path(text: str) -> bool:
    """An absolute path that stands as one word in any directive: no spaces,
    quotes, '%' specifiers, control characters, '..' or '//', and within
    PATH_MAX and NAME_MAX."""
    return (
        _PLAIN_PATH.fullmatch(text) is not None
        and "/../" not in f"{text}/"
        and "//" not in text
        and len(text.encode()) < PATH_MAX
        and all(len(part) <= NAME_MAX for part in text.split("/"))
    )


def normalize(path: str) -> str:
    """``path`` without ``.`` components, repeated or trailing slashes: /etc/./x/ -> /etc/x."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)


def writable_problem(path: str) -> str | None:
    """Why the service must not write to ``path`` (normalized first), or None."""
    norm = normalize(path)
    if norm in SYSTEM_DIRS:
        return f"{norm} is a system directory"
    for tree in SYSTEM_TREES:
        if norm.startswith(tree + "/"):
            return f"{norm} is inside {tree}, which must stay read-only"
    return None
