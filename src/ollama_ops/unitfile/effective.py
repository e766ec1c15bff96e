"""The effective unit: how systemd assembles a system unit under a root.

``load_effective`` reproduces systemd's search path, masking, templates and
drop-in order for a unit under a root directory. Aliases (other names of the
unit made by symlinks) are not followed. Reads files only, never writes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ollama_ops.errors import ConfigError, UnitSyntaxError
from ollama_ops.unitfile import inroot
from ollama_ops.unitfile.syntax import Assignment, UnitFile, UnitReadError, parse

# Dependencies cannot be reset by an empty assignment: systemd ignores it.
_NO_RESET = frozenset(
    {
        ("Unit", k)
        for k in (
            "After",
            "Before",
            "Wants",
            "Requires",
            "Requisite",
            "BindsTo",
            "BindTo",
            "PartOf",
            "Upholds",
            "Conflicts",
            "OnFailure",
            "OnSuccess",
            "PropagatesReloadTo",
            "ReloadPropagatedFrom",
            "PropagatesStopTo",
            "StopPropagatedFrom",
            "JoinsNamespaceOf",
        )
    }
)


@dataclass(frozen=True)
class EffectiveUnit:
    """A unit as systemd assembles it: the fragment, then its drop-ins."""

    name: str
    fragment: str | None  # path inside the root, e.g. /etc/systemd/system/ollama.service
    dropins: tuple[str, ...]  # drop-in paths (inside the root) in application order
    assignments: tuple[Assignment, ...]  # fragment then drop-ins, in application order
    masked: bool

    def values(self, section: str, key: str) -> list[Assignment]:
        """List semantics: every assignment in order, an empty one resetting the list.

        The resetting assignment itself is not returned. For dependency keys
        in [Unit] (After=, Wants=, ...) systemd ignores an empty assignment,
        and so does this.
        """
        out: list[Assignment] = []
        resettable = (section, key) not in _NO_RESET
        for a in self.assignments:
            if a.section != section or a.key != key:
                continue
            if a.value == "":
                if resettable:
                    out.clear()
                continue
            out.append(a)
        return out

    def last(self, section: str, key: str) -> Assignment | None:
        """Single-value semantics: the last assignment wins; None if it is empty or absent."""
        found: Assignment | None = None
        for a in self.assignments:
            if a.section == section and a.key == key:
                found = a
        if found is None or found.value == "":
            return None
        return found


_SEARCH_DIRS = (
    "etc/systemd/system.control",
    "run/systemd/system.control",
    "run/systemd/transient",
    "run/systemd/generator.early",
    "etc/systemd/system",
    "etc/systemd/system.attached",
    "run/systemd/system",
    "run/systemd/system.attached",
    "run/systemd/generator",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
    "run/systemd/generator.late",
)


def _inside(root: Path, path: str) -> Path:
    return inroot.resolve(root, path)


def unit_search_path(root: Path) -> list[Path]:
    """systemd's system unit search path under ``root``, highest priority first.

    Directories that resolve (within the root) to one listed earlier are left
    out, e.g. lib/systemd/system when /lib links to usr/lib.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for rel in _SEARCH_DIRS:
        resolved = _inside(root, "/" + rel)
        if resolved in seen:
            continue
        seen.add(resolved)
        out.append(root / rel)
    return out


def _as_inside(root: Path, host: Path) -> str:
    return "/" + host.relative_to(root).as_posix()


def _is_mask(root: Path, inside: str) -> bool:
    """A symlink to /dev/null or an empty file masks (systemd's null_or_empty)."""
    host = _inside(root, inside)
    if host == root / "dev" / "null":
        return True
    try:
        return host.is_file() and host.stat().st_size == 0
    except OSError as exc:
        raise UnitReadError(f"cannot read {inside} (under {root}): {exc.strerror}") from None


def _is_unit_file(root: Path, inside: str) -> bool:
    """A regular file (through symlinks, within root) or a mask."""
    host = _inside(root, inside)
    return host == root / "dev" / "null" or host.is_file()


def _read(root: Path, inside: str) -> UnitFile:
    try:
        data = inroot.read_bytes(root, inside)
    except inroot.RootFileError as exc:
        raise UnitReadError(f"{exc}; check it exists and is a readable file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnitSyntaxError(
            f"{inside}: not valid UTF-8 at byte {exc.start}; re-save the file as UTF-8"
        ) from None
    return parse(text, inside)


_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.[a-z]+")


def _split_name(unit_name: str) -> tuple[str, str, str | None]:
    """(prefix, type, instance) of a unit name; instance None if not instantiated."""
    if not _UNIT_NAME.fullmatch(unit_name) or unit_name.startswith("."):
        raise ConfigError(
            f"{unit_name!r} is not a valid unit name; expected e.g. ollama.service "
            "or ollama@gpu0.service"
        )
    stem, _, kind = unit_name.rpartition(".")
    prefix, at, instance = stem.partition("@")
    return prefix, kind, (instance if at else None)


def _dash_prefixes(prefix: str) -> list[str]:
    """foo-bar-baz -> [foo-bar-, foo-]: systemd's unit_file_find_dirs() recursion."""
    out: list[str] = []
    current = prefix
    while True:
        chopped = False
        while True:
            dash = current.rfind("-")
            if dash <= 0:
                return out
            if dash + 1 < len(current) or chopped:
                current = current[: dash + 1]
                break
            current = current[:dash]  # a trailing dash: chop it off, once
            chopped = True
        out.append(current)


def _dropin_names(unit_name: str) -> list[str]:
    """Names whose ``.d`` directories hold drop-ins for ``unit_name``, in systemd's order.

    The unit itself, its template, then the dash-prefix names
    (foo-bar-baz.service -> foo-bar-.service, foo-.service); the type-level
    ``service.d`` directories are added by the caller after all search dirs.
    """
    prefix, kind, instance = _split_name(unit_name)
    names = [unit_name]
    if instance is not None:
        names.append(f"{prefix}@.{kind}")
    names.extend(f"{p}.{kind}" for p in _dash_prefixes(prefix))
    return names


def _conf_files(root: Path, directory: Path) -> list[str]:
    host = _inside(root, _as_inside(root, directory))
    if not host.is_dir():
        return []
    try:
        entries = sorted(os.listdir(host))
    except OSError as exc:
        raise UnitReadError(f"cannot list {_as_inside(root, directory)}: {exc.strerror}") from None
    return [e for e in entries if e.endswith(".conf") and not e.startswith(".")]


def load_effective(root: Path, unit_name: str) -> EffectiveUnit:
    """Assemble ``unit_name`` from its fragment and drop-ins under ``root``.

    The fragment is the first file of that name in the search path (for an
    instance, else its template); a symlink to /dev/null or an empty file
    masks the unit. Drop-ins are ``*.conf`` in ``<name>.d/`` for the unit,
    its template and its dash prefixes in every search directory, then in
    ``<type>.d/``; a file name seen in a higher-priority directory hides
    the same name further down, and the survivors apply sorted by name.
    Masking drop-ins (empty, or linked to /dev/null) hide and add nothing.
    """
    prefix, kind, instance = _split_name(unit_name)
    search = unit_search_path(root)

    fragment: str | None = None
    candidates = [unit_name] if instance is None else [unit_name, f"{prefix}@.{kind}"]
    for name in candidates:
        for directory in search:
            inside = _as_inside(root, directory / name)
            if _is_unit_file(root, inside):
                fragment = inside
                break
        if fragment is not None:
            break

    if fragment is not None and _is_mask(root, fragment):
        return EffectiveUnit(unit_name, fragment, (), (), masked=True)

    dirs: list[Path] = []
    names = _dropin_names(unit_name)
    for directory in search:
        dirs.extend(directory / f"{name}.d" for name in names)
    dirs.extend(directory / f"{kind}.d" for directory in search)

    chosen: dict[str, str] = {}
    for directory in dirs:
        for entry in _conf_files(root, directory):
            inside = _as_inside(root, directory / entry)
            if entry not in chosen and _is_unit_file(root, inside):
                chosen[entry] = inside

    dropins: list[str] = []
    assignments: list[Assignment] = []
    if fragment is not None:
        assignments.extend(_read(root, fragment).assignments)
    for entry in sorted(chosen):
        inside = chosen[entry]
        if _is_mask(root, inside):
            continue
        dropins.append(inside)
        assignments.extend(_read(root, inside).assignments)
    return EffectiveUnit(unit_name, fragment, tuple(dropins), tuple(assignments), masked=False)
