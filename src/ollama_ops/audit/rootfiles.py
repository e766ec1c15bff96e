"""The edge that reads the files under a root which change what the unit means.

EnvironmentFile= contents (globs expanded, parsed with systemd's own
env-file grammar), the kernel modules loaded at boot (modules-load.d,
/etc/modules and softdeps of nvidia, first file of a name wins as in
modules-load.d(5)), the homes in /etc/passwd and the members of /etc/group:
read once into ``RootFiles`` so that the rules stay pure. Every file is read
through ``unitfile.inroot``: symlinks and ``..`` stay inside the root, only
regular files are read (a FIFO does not block), at most 1 MiB. Unreadable
files are recorded, never raised.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ollama_ops.audit.context import SERVICE, EnvFile, RootFiles
from ollama_ops.unitfile import effective as effective_mod
from ollama_ops.unitfile import envfile, inroot
from ollama_ops.unitfile.syntax import UnitReadError

_MODULES_LOAD_DIRS = (
    "etc/modules-load.d",
    "run/modules-load.d",
    "usr/local/lib/modules-load.d",
    "usr/lib/modules-load.d",
    "lib/modules-load.d",
)
_MODPROBE_DIRS = ("etc/modprobe.d", "run/modprobe.d", "usr/lib/modprobe.d", "lib/modprobe.d")


def read_root_files(root: Path, effective: effective_mod.EffectiveUnit) -> RootFiles:
    """Read the files under ``root`` that ``check`` needs for this unit."""
    return RootFiles(
        env_files=tuple(_read_env_files(root, effective)),
        boot_modules=_boot_modules(root),
        homes=_homes(root),
        groups=_groups(root),
    )


def _parse_env_file(text: str) -> list[tuple[int, str, str]]:
    """KEY=VALUE assignments as systemd reads them (``unitfile.envfile``)."""
    return envfile.parse(text)


def _env_file(root: Path, spec: str, path: str) -> EnvFile:
    """One environment file, read inside the root: regular files only, size-capped."""
    try:
        text = inroot.read_text(root, path)
    except inroot.RootFileError as exc:
        if exc.missing:
            return EnvFile(spec, path, missing=True)
        return EnvFile(spec, path, error=str(exc).rpartition(": ")[2])
    except UnitReadError as exc:  # a symlink loop
        return EnvFile(spec, path, error=str(exc))
    try:
        return EnvFile(spec, path, tuple(envfile.parse(text)))
    except envfile.EnvFileError as exc:
        return EnvFile(spec, path, error=str(exc))


def _read_env_files(root: Path, effective: effective_mod.EffectiveUnit) -> list[EnvFile]:
    out: list[EnvFile] = []
    for a in effective.values(SERVICE, "EnvironmentFile"):
        spec = a.value
        inside = spec.lstrip("-")
        if not inside.startswith("/"):
            continue
        if any(c in inside for c in "*?["):
            paths = inroot.glob(root, inside)
            if not paths:
                out.append(EnvFile(spec, inside, missing=True))
        else:
            paths = [inside]
        out.extend(_env_file(root, spec, path) for path in paths)
    return out


def _lines(root: Path, path: str) -> list[str]:
    """The lines of a config file that are neither blank nor # or ; comments; [] if unreadable."""
    try:
        text = inroot.read_text(root, path)
    except UnitReadError:
        return []
    return [
        line.strip() for line in text.splitlines() if line.strip() and line.strip()[0] not in "#;"
    ]


def _conf_files(root: Path, dirs: Iterable[str]) -> list[str]:
    chosen: dict[str, str] = {}
    for rel in dirs:
        for name in inroot.listdir(root, "/" + rel):
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = f"/{rel}/{name}"
    return [chosen[n] for n in sorted(chosen)]


def _norm_module(name: str) -> str:
    return name.strip().replace("-", "_")


def _boot_modules(root: Path) -> frozenset[str]:
    mods: set[str] = set()
    for path in [*_conf_files(root, _MODULES_LOAD_DIRS), "/etc/modules"]:
        mods.update(_norm_module(line.split()[0]) for line in _lines(root, path))
    # nvidia itself is loaded by udev for the PCI device; a softdep pulls uvm in with it.
    for path in _conf_files(root, _MODPROBE_DIRS):
        for line in _lines(root, path):
            words = line.split()
            if len(words) >= 3 and words[0] == "softdep" and _norm_module(words[1]) == "nvidia":
                post = words[words.index("post:") + 1 :] if "post:" in words else []
                mods.update(_norm_module(w) for w in post if not w.endswith(":"))
    return frozenset(mods)


def _records(root: Path, path: str, fields: int) -> Iterable[list[str]]:
    """The colon-separated records of a passwd(5)-style file with at least ``fields`` fields."""
    for line in _lines(root, path):
        record = line.split(":")
        if len(record) >= fields:
            yield record


def _homes(root: Path) -> dict[str, str]:
    homes: dict[str, str] = {}
    for record in _records(root, "/etc/passwd", 6):
        homes.setdefault(record[0], record[5])
    return homes


def _groups(root: Path) -> dict[str, frozenset[str]] | None:
    try:
        inroot.read_bytes(root, "/etc/group")
    except UnitReadError:
        return None
    return {
        record[0]: frozenset(m for m in record[3].split(",") if m)
        for record in _records(root, "/etc/group", 4)
    }
