"""Write the export directory: the role, its wheels, an example playbook and inventory.

Everything is built in a sibling directory first and moved into place with
renames, so an interrupted export leaves no half-written role. A new DIR
gets everything; an earlier export (``--force``) gets its role replaced and
keeps the operator's playbook and inventory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ollama_ops.errors import OpsError
from ollama_ops.render.ansible import role, targets, wheel, wheelhouse

ROLE_DIR = f"roles/{role.ROLE}"


@dataclass(frozen=True)
class Request:
    directory: Path
    pythons: tuple[str, ...] = targets.DEFAULT_PYTHONS
    arch: str = "x86_64"
    wheel_file: Path | None = None
    force: bool = False
    health_command: bool = False  # `ollama-ops health --deep` exists: gate on it by default


@dataclass(frozen=True)
class Result:
    directory: Path
    version: str
    release: str
    pythons: tuple[str, ...]
    wheels: int
    size: int
    written: tuple[str, ...]
    kept: tuple[str, ...]
    health_gate: str


def _check_target(directory: Path, force: bool) -> bool:
    """Whether ``directory`` holds something already (refused without --force)."""
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise OpsError(f"{str(directory)!r} exists and is not a directory; name a new directory")
    busy = directory.is_dir() and any(directory.iterdir())
    if busy and not force:
        raise OpsError(
            f"{str(directory)!r} is not empty; pass --force to replace its role "
            "(its playbook.yml and inventory.yml are kept) or name a new directory"
        )
    return busy


def release_id(version: str, wheels: dict[str, list[Path]]) -> str:
    """VERSION-HASH over every carried wheel: a new build means a new release directory."""
    digest = hashlib.sha256()
    for python in sorted(wheels):
        for path in sorted(wheels[python], key=lambda p: p.name):
            digest.update(f"{python}/{path.name}:".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"{version}-{digest.hexdigest()[:12]}"


def write_archive(path: Path, wheels: Sequence[Path]) -> None:
    """An uncompressed, deterministic tar of ``wheels`` (flat; wheels are zips already)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for wheel_path in sorted(wheels, key=lambda p: p.name):
            info = tarfile.TarInfo(wheel_path.name)
            info.size = wheel_path.stat().st_size
            info.mode = 0o644
            with wheel_path.open("rb") as fh:
                tar.addfile(info, fh)


def _stage(
    stage: Path, request: Request, download: wheelhouse.Downloader
) -> tuple[role.Carried, int]:
    own = wheel.read_wheel(request.wheel_file) if request.wheel_file else wheel.installed_wheel()
    version = wheel.wheel_version(own)
    requires = wheel.wheel_requirements(own)
    found: dict[str, list[Path]] = {}
    with tempfile.TemporaryDirectory(prefix="ollama-ops-export-") as tmp:
        for python in request.pythons:
            target = targets.Target(python, request.arch)
            dest = Path(tmp) / f"py{python}"
            reqs = wheelhouse.requirements_for(requires, target)
            deps = wheelhouse.resolve(reqs, target, dest, download)
            (dest / own.filename).write_bytes(own.data)
            found[python] = [*deps, dest / own.filename]
        carried = role.Carried(
            version,
            release_id(version, found),
            {py: tuple(sorted(p.name for p in paths)) for py, paths in found.items()},
        )
        for python, paths in found.items():
            write_archive(stage / role.archive_path(python), paths)
        size = sum(p.stat().st_size for paths in found.values() for p in paths)
    for rel, text in role.text_files(carried, request.health_command).items():
        path = stage / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return carried, size


def _files_under(base: Path) -> list[str]:
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())


def _move_into_place(stage: Path, directory: Path, existing: bool) -> tuple[list[str], list[str]]:
    if not existing:
        if directory.exists():
            directory.rmdir()  # an empty directory
        stage.rename(directory)
        return _files_under(directory), []
    written, kept = _files_under(stage / ROLE_DIR), []
    written = [f"{ROLE_DIR}/{name}" for name in written]
    old = directory / ROLE_DIR
    aside = stage / ".previous-role"
    (directory / "roles").mkdir(exist_ok=True)
    if old.exists():
        old.rename(aside)
    (stage / ROLE_DIR).rename(old)
    shutil.rmtree(aside, ignore_errors=True)
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        rel = path.relative_to(stage).as_posix()
        target = directory / rel
        if target.exists():
            kept.append(rel)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
        written.append(rel)
    shutil.rmtree(stage, ignore_errors=True)
    return sorted(written), kept


def export(request: Request, download: wheelhouse.Downloader) -> Result:
    directory = request.directory
    existing = _check_target(directory, request.force)
    parent = directory.resolve().parent
    if not parent.is_dir():
        raise OpsError(f"{str(parent)!r} does not exist; create it or name another DIR")
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{directory.name}.export-", dir=parent))
    except OSError as exc:
        raise OpsError(f"cannot write in {str(parent)!r} ({exc.strerror})") from exc
    try:
        stage.chmod(0o755)
        carried, size = _stage(stage, request, download)
        written, kept = _move_into_place(stage, directory, existing)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return Result(
        directory=directory,
        version=carried.version,
        release=carried.release,
        pythons=tuple(sorted(carried.wheels)),
        wheels=sum(len(files) for files in carried.wheels.values()),
        size=size,
        written=tuple(written),
        kept=tuple(kept),
        health_gate="command" if request.health_command else "api",
    )


def pip_options(find_links: Sequence[str], no_index: bool) -> list[str]:
    options = [f"--find-links={os.path.abspath(link)}" for link in find_links]
    return [*options, "--no-index"] if no_index else options
