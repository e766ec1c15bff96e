"""What installing a plan would change: reading what is installed, then a pure diff.

pip-tools' split: :func:`read_installed` is the only part that touches the
disk; :func:`diff` compares two mappings and an owned set, and
:func:`unified` renders the result. Instances, the Ansible export and the
property tests diff without a filesystem.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ollama_ops.apply.fileio import read_bytes


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


def read_installed(root: Path, paths: Iterable[str]) -> dict[str, bytes | None]:
    """The current bytes of each path under root (None: absent)."""
    return {path: read_bytes(root, path) for path in sorted(set(paths))}


def diff(
    installed: Mapping[str, bytes | None], planned: Mapping[str, str], owned: Iterable[str]
) -> list[Change]:
    """Pure: the changes that turn ``installed`` into ``planned``.

    A planned file whose bytes differ is written; a file ollama-ops wrote
    earlier (``owned``) that is no longer planned and still exists is removed.
    ``installed`` must hold every planned and owned path.
    """
    out: list[Change] = []
    for path in sorted(planned):
        new = planned[path].encode()
        old = installed[path]
        if old != new:
            out.append(Change(path, old, new))
    for path in sorted(set(owned) - set(planned)):
        old = installed[path]
        if old is not None:
            out.append(Change(path, old, None))
    return out


def unified(changes: Iterable[Change]) -> str:
    """The changes as one unified diff, a/ for the installed and b/ for the planned side."""
    chunks: list[str] = []
    for change in changes:
        old = (change.old or b"").decode(errors="replace").splitlines(keepends=True)
        new = (change.new or b"").decode(errors="replace").splitlines(keepends=True)
        before = "/dev/null" if change.old is None else f"a{change.path}"
        after = "/dev/null" if change.new is None else f"b{change.path}"
        chunks.append("".join(difflib.unified_diff(old, new, before, after)))
    return "".join(chunks)
