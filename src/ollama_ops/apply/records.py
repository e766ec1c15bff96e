"""The records kept in ollama-ops' state directory and their validation (pure).

A generation manifest (``generations/N/manifest.json``) is the before-image of
one apply: for each file it touched, the bytes, mode and owner it had (or
``null``: absent), the owned list as it was, and the directories the apply
created. The journal (``journal.json``) names the apply or rollback in
progress with the same kind of before-image.

Both live in a directory that may not be trusted (``--root`` on an image
somebody else made, or a tampered host), so a record is validated whole
before anything is touched: every path must be one ollama-ops itself can
write (under :data:`OWNABLE_PREFIXES`, normalised, printable, no ``..``),
every file body valid base64, every mode an integer within 0o7777 and not
world-writable, every owner two integers, the enabled unit one this
generation wrote itself. A record that fails is one :class:`StateError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ollama_ops.apply.fileio import FILE_MODE, MAX_READ, FileImage
from ollama_ops.errors import StateError

# The only directories ollama-ops writes files into (render's output must stay inside them).
OWNABLE_PREFIXES = ("/etc/systemd/system/", "/etc/modules-load.d/", "/etc/nginx/")
# Directories an apply into a bare tree may create on the way to the prefixes above.
_PREFIX_DIRS = frozenset(
    {"/etc", "/etc/systemd", "/etc/systemd/system", "/etc/modules-load.d", "/etc/nginx"}
)
FORMAT = 2
MAX_FILES = 256
MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to chown
_UNIT = re.compile(r"[A-Za-z0-9:_.@\\-]{1,240}\.service")
_WRITABLE_BY_OTHERS = 0o002


class Op(str, Enum):
    APPLY = "apply"
    ROLLBACK = "rollback"


class Phase(str, Enum):
    WRITING = "writing"  # files are being written; systemd has not been told
    ACTIVATING = "activating"  # systemd may run the new files: undoing restarts the unit


@dataclass(frozen=True)
class Snapshot:
    """Files, the owned list and directories as they were before a change."""

    files: Mapping[str, FileImage | None]  # None: the file did not exist
    owned: tuple[str, ...] | None  # None: no owned.json
    dirs: tuple[str, ...] = ()  # directories that did not exist, outermost first


@dataclass(frozen=True)
class Manifest:
    """Generation N: what rollback restores."""

    created: str
    enabled_unit: str | None  # the unit this generation wrote and enabled, if any
    before: Snapshot


@dataclass(frozen=True)
class Journal:
    """An apply or rollback in progress; recovery undoes it to ``before``."""

    op: Op
    generation: int
    phase: Phase
    unit: str | None  # the unit to restart when undoing on the live system
    before: Snapshot
    manifest: Manifest  # apply: the generation it creates; rollback: the one it removes


def is_ownable(path: object) -> bool:
    """A file path ollama-ops may write: normalised, printable, under an ownable prefix."""
    if not isinstance(path, str) or len(path) > 4096 or not path.isprintable():
        return False
    if posixpath.normpath(path) != path or {".", ".."} & set(path.split("/")):
        return False
    return any(path.startswith(p) and len(path) > len(p) for p in OWNABLE_PREFIXES)


def is_ownable_dir(path: object) -> bool:
    return path in _PREFIX_DIRS or is_ownable(path)


def valid_unit(name: object) -> bool:
    return isinstance(name, str) and _UNIT.fullmatch(name) is not None


def valid_mode(mode: object) -> bool:
    return type(mode) is int and 0 <= mode <= 0o7777 and not mode & _WRITABLE_BY_OTHERS


# --- encoding ------------------------------------------------------------------------------


def _snapshot_json(s: Snapshot) -> dict[str, Any]:
    present = {p: i for p, i in s.files.items() if i is not None}
    return {
        "files": {
            p: None if i is None else base64.b64encode(i.data).decode() for p, i in s.files.items()
        },
        "modes": {p: i.mode for p, i in present.items()},
        "owners": {p: list(i.owner) for p, i in present.items() if i.owner is not None},
        "previous_owned": None if s.owned is None else list(s.owned),
        "dirs": list(s.dirs),
    }


def _manifest_json(m: Manifest) -> dict[str, Any]:
    return {"format": FORMAT, "created": m.created, "enabled_unit": m.enabled_unit} | (
        _snapshot_json(m.before)
    )


def dump_manifest(m: Manifest) -> bytes:
    return json.dumps(_manifest_json(m), indent=1, sort_keys=True).encode()


def dump_journal(j: Journal) -> bytes:
    record = {
        "format": FORMAT,
        "op": j.op.value,
        "generation": j.generation,
        "phase": j.phase.value,
        "unit": j.unit,
        "before": _snapshot_json(j.before),
        "manifest": _manifest_json(j.manifest),
    }
    return json.dumps(record, indent=1, sort_keys=True).encode()


# --- decoding: validate everything, then build --------------------------------------------


class _Bad(Exception):
    """One problem in a record; the caller adds where it is and what to do."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Bad(f"key {key[:60]!r} appears twice")
        out[key] = value
    return out


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Bad(f"not valid JSON ({str(exc)[:80]})") from exc
    if not isinstance(data, dict):
        raise _Bad("not a JSON object")
    return data


def _path(path: object, what: str) -> str:
    if not is_ownable(path):
        raise _Bad(
            f"{what} {str(path)[:80]!r} is not a file ollama-ops writes "
            f"(only normalised paths under {', '.join(OWNABLE_PREFIXES)})"
        )
    assert isinstance(path, str)
    return path


def _image(path: str, encoded: object, modes: dict[str, Any], owners: dict[str, Any]) -> FileImage:
    if not isinstance(encoded, str) or len(encoded) > MAX_READ * 4 // 3 + 4:
        raise _Bad(f"the content of {path} is not a base64 string")
    try:
        data = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise _Bad(f"the content of {path} is not valid base64") from exc
    mode = modes.get(path, FILE_MODE)
    if not valid_mode(mode):
        raise _Bad(
            f"the mode of {path} is {str(mode)[:20]!r}: not an integer within 0o7777 "
            "without write permission for others"
        )
    owner = owners.get(path)
    if owner is not None and not (
        isinstance(owner, list)
        and len(owner) == 2
        and all(type(i) is int and 0 <= i <= MAX_ID for i in owner)
    ):
        raise _Bad(f"the owner of {path} is {str(owner)[:40]!r}: not [uid, gid]")
    return FileImage(data, mode, None if owner is None else (owner[0], owner[1]))


def _dict(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise _Bad(f"{key!r} is not an object")
    return value


def _snapshot(data: dict[str, Any]) -> Snapshot:
    files, modes, owners = _dict(data, "files"), _dict(data, "modes"), _dict(data, "owners")
    if "files" not in data or len(files) > MAX_FILES:
        raise _Bad(f"'files' is missing or names more than {MAX_FILES} files")
    images: dict[str, FileImage | None] = {}
    for path, encoded in files.items():
        _path(path, "file")
        images[path] = None if encoded is None else _image(path, encoded, modes, owners)
    for key, table in (("modes", modes), ("owners", owners)):
        for path in table:
            if images.get(path) is None:
                raise _Bad(f"{key!r} names {str(path)[:80]!r}, which has no saved content")
    owned = data.get("previous_owned", [])
    if owned is not None and not (isinstance(owned, list) and len(owned) <= MAX_FILES):
        raise _Bad("'previous_owned' is not a list of paths")
    dirs = data.get("dirs", [])
    if not isinstance(dirs, list) or not all(is_ownable_dir(d) for d in dirs):
        raise _Bad("'dirs' names a directory outside those ollama-ops creates")
    return Snapshot(
        images,
        None if owned is None else tuple(_path(p, "owned file") for p in owned),
        tuple(dirs),
    )


def _manifest(data: dict[str, Any]) -> Manifest:
    if data.get("format", 1) not in (1, FORMAT):
        raise _Bad(f"format {str(data.get('format'))[:10]!r} is not one this version reads")
    created = data.get("created", "")
    if not isinstance(created, str) or len(created) > 64 or not created.isprintable():
        raise _Bad("'created' is not a short printable string")
    before = _snapshot(data)
    unit = data.get("enabled_unit")
    if unit is not None and not (
        valid_unit(unit)
        and f"/etc/systemd/system/{unit}" in before.files
        and before.files[f"/etc/systemd/system/{unit}"] is None
    ):
        raise _Bad(f"'enabled_unit' {str(unit)[:80]!r} is not a unit this generation wrote")
    return Manifest(created, unit, before)


def _journal(data: dict[str, Any]) -> Journal:
    try:
        op, phase = Op(data.get("op")), Phase(data.get("phase"))
    except ValueError as exc:
        raise _Bad("'op' or 'phase' is not one ollama-ops writes") from exc
    number = data.get("generation")
    if type(number) is not int or not 1 <= number <= 10**9:
        raise _Bad("'generation' is not a positive integer")
    unit = data.get("unit")
    if unit is not None and not valid_unit(unit):
        raise _Bad(f"'unit' {str(unit)[:80]!r} is not a service name")
    before, manifest = data.get("before"), data.get("manifest")
    if not isinstance(before, dict) or not isinstance(manifest, dict):
        raise _Bad("'before' or 'manifest' is missing")
    return Journal(op, number, phase, unit, _snapshot(before), _manifest(manifest))


def load_manifest(raw: bytes, where: str) -> Manifest:
    """A generation manifest, validated whole; StateError naming ``where`` otherwise."""
    try:
        return _manifest(_parse(raw))
    except _Bad as exc:
        raise StateError(
            f"{where} is not a manifest ollama-ops wrote: {exc}; nothing was restored; "
            "remove that generation directory, or restore the files by hand"
        ) from None


def load_journal(raw: bytes, where: str) -> Journal:
    """The journal, validated whole; StateError naming ``where`` otherwise."""
    try:
        return _journal(_parse(raw))
    except _Bad as exc:
        raise StateError(
            f"{where} is not a journal ollama-ops wrote: {exc}; nothing was changed; "
            "check the files it names, then remove it to give up the interrupted change"
        ) from None
