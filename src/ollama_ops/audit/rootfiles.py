"""The edge that reads the files under a root which change what the unit means.

EnvironmentFile= contents (globs expanded, parsed as systemd reads them), the
kernel modules loaded at boot (modules-load.d, /etc/modules and softdeps of
nvidia, first file of a name wins as in modules-load.d(5)), the homes in
/etc/passwd and the members of /etc/group: read once into ``RootFiles`` so
that the rules stay pure. Unreadable files are recorded, never raised.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ollama_ops.audit.context import SERVICE, EnvFile, RootFiles
from ollama_ops.unitfile import effective as effective_mod

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


def _host(root: Path, inside: str) -> Path:
    return root / inside.lstrip("/")


def _parse_env_file(text: str) -> list[tuple[int, str, str]]:
    """KEY=VALUE lines as systemd reads them (comments, quotes, 'export' not allowed)."""
    out: list[tuple[int, str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            inner = value[1:-1]
            if value[0] == '"':
                inner = re.sub(r'\\(["\\`$])', r"\1", inner)
            value = inner
        out.append((number, name, value))
    return out


def _read_env_files(root: Path, effective: effective_mod.EffectiveUnit) -> list[EnvFile]:
    out: list[EnvFile] = []
    for a in effective.values(SERVICE, "EnvironmentFile"):
        spec = a.value
        inside = spec.lstrip("-")
        if not inside.startswith("/"):
            continue
        if any(c in inside for c in "*?["):
            matches = sorted(glob.glob(str(_host(root, inside))))
            paths = ["/" + str(Path(m).relative_to(root)) for m in matches]
            if not paths:
                out.append(EnvFile(spec, inside, missing=True))
        else:
            paths = [inside]
        for path in paths:
            host = _host(root, path)
            try:
                text = host.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                out.append(EnvFile(spec, path, missing=True))
                continue
            except OSError as exc:
                out.append(EnvFile(spec, path, error=exc.strerror or str(exc)))
                continue
            out.append(EnvFile(spec, path, tuple(_parse_env_file(text))))
    return out


def _lines(path: Path) -> list[str]:
    """The lines of a config file that are neither blank nor # or ; comments; [] if unreadable."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [
        line.strip() for line in text.splitlines() if line.strip() and line.strip()[0] not in "#;"
    ]


def _conf_files(root: Path, dirs: Iterable[str]) -> list[Path]:
    chosen: dict[str, Path] = {}
    for rel in dirs:
        directory = root / rel
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = directory / name
    return [chosen[n] for n in sorted(chosen)]


def _norm_module(name: str) -> str:
    return name.strip().replace("-", "_")


def _boot_modules(root: Path) -> frozenset[str]:
    mods: set[str] = set()
    for path in [*_conf_files(root, _MODULES_LOAD_DIRS), root / "etc" / "modules"]:
        mods.update(_norm_module(line.split()[0]) for line in _lines(path))
    # nvidia itself is loaded by udev for the PCI device; a softdep pulls uvm in with it.
    for path in _conf_files(root, _MODPROBE_DIRS):
        for line in _lines(path):
            words = line.split()
            if len(words) >= 3 and words[0] == "softdep" and _norm_module(words[1]) == "nvidia":
                post = words[words.index("post:") + 1 :] if "post:" in words else []
                mods.update(_norm_module(w) for w in post if not w.endswith(":"))
    return frozenset(mods)


def _records(path: Path, fields: int) -> Iterable[list[str]]:
    """The colon-separated records of a passwd(5)-style file with at least ``fields`` fields."""
    for line in _lines(path):
        record = line.split(":")
        if len(record) >= fields:
            yield record


def _homes(root: Path) -> dict[str, str]:
    homes: dict[str, str] = {}
    for record in _records(root / "etc" / "passwd", 6):
        homes.setdefault(record[0], record[5])
    return homes


def _groups(root: Path) -> dict[str, frozenset[str]] | None:
    path = root / "etc" / "group"
    if not path.is_file():
        return None
    return {
        record[0]: frozenset(m for m in record[3].split(",") if m) for record in _records(path, 4)
    }
