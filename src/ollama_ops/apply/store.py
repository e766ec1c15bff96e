"""ollama-ops' own state under ``<root>/var/lib/ollama-ops`` (0700).

``owned.json`` lists the files ollama-ops wrote; each apply keeps the
before-image of every file it touches as a numbered generation
(``generations/N/manifest.json``) that ``rollback`` restores byte for byte.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ollama_ops.apply.diff import Change
from ollama_ops.apply.fileio import FILE_MODE, atomic_write, host_path, mkdirs, read_bytes, remove
from ollama_ops.errors import RollbackError

STATE_DIR = "/var/lib/ollama-ops"
OWNABLE_PREFIXES = (
    "/etc/systemd/system/",
    "/etc/modules-load.d/",
    "/etc/systemd/journald.conf.d/",  # logs.global_limits
    "/etc/systemd/journald@",  # logs.namespace: journald@NAME.conf
)


def owned_path(root: Path) -> Path:
    return host_path(root, f"{STATE_DIR}/owned.json")


def owned_files(root: Path) -> set[str]:
    raw = read_bytes(owned_path(root))
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


def generations_dir(root: Path) -> Path:
    return host_path(root, f"{STATE_DIR}/generations")


def generations(root: Path) -> list[int]:
    directory = generations_dir(root)
    if not directory.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in directory.iterdir()
        if p.name.isdigit() and (p / "manifest.json").is_file()
    )


def save_generation(root: Path, changes_: list[Change], enabled_unit: str | None) -> int:
    existing = generations(root)
    number = (existing[-1] + 1) if existing else 1
    state = host_path(root, STATE_DIR)
    mkdirs(state.parent)
    state.mkdir(mode=0o700, exist_ok=True)
    os.chmod(state, 0o700)
    gen_dir = generations_dir(root) / str(number)
    gen_dir.mkdir(mode=0o700, parents=True)
    record = {
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
    atomic_write(gen_dir / "manifest.json", json.dumps(record, indent=1).encode(), mode=0o600)
    return number


def install(root: Path, changes_: Iterable[Change], owned: Iterable[str]) -> None:
    for change in changes_:
        target = host_path(root, change.path)
        if change.new is None:
            remove(target)
        else:
            atomic_write(target, change.new)
    atomic_write(owned_path(root), json.dumps(sorted(owned)).encode(), mode=0o600)


def manifest(root: Path, number: int) -> dict[str, Any]:
    gen_dir = generations_dir(root) / str(number)
    try:
        data = json.loads((gen_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise RollbackError(
            f"generation {number} under {gen_dir} is unreadable ({exc}); restore by hand"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise RollbackError(f"generation {number} under {gen_dir} is malformed; restore by hand")
    return data


def restore(root: Path, number: int) -> None:
    gen_dir = generations_dir(root) / str(number)
    data = manifest(root, number)
    modes = data.get("modes") or {}
    for path, encoded in data["files"].items():
        target = host_path(root, path)
        if encoded is None:
            remove(target)
        else:
            atomic_write(target, base64.b64decode(encoded), mode=int(modes.get(path, FILE_MODE)))
    atomic_write(owned_path(root), json.dumps(data.get("previous_owned", [])).encode(), mode=0o600)
    for leftover in gen_dir.iterdir():
        leftover.unlink()
    gen_dir.rmdir()
