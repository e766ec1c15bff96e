"""The wheels each target Python needs, fetched on the controller with pip.

``pip download --python-version X`` picks wheels for X but evaluates the
dependencies' markers against the Python running pip (a 3.11 controller
leaves out ``async-timeout; python_version < "3.11"`` that a 3.10 target
needs). :func:`closure` therefore walks the downloaded wheels' metadata with
the target's markers, and :func:`resolve` downloads what is still missing
until the set is closed. The result per Python: the wheels, pip's own wheel
(the target runs pip from it) and nothing else.
"""

from __future__ import annotations

import email.parser
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)

from ollama_ops.errors import CommandError, OpsError
from ollama_ops.host import proc
from ollama_ops.render.ansible.targets import Target

MAX_ROUNDS = 8

# pip download ARGS DEST: raises CommandError on failure.
Downloader = Callable[[Sequence[str], Path], None]


def _applies(marker: Marker | None, env: dict[str, str], extras: Sequence[str]) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate({**env, "extra": extra}) for extra in ("", *extras))


def requirements_for(lines: Sequence[str], target: Target) -> list[Requirement]:
    """The Requires-Dist lines that apply on ``target`` (extras' requirements left out)."""
    env = target.environment()
    kept = []
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise OpsError(f"the ollama-ops wheel requires {line!r}, which does not parse") from exc
        if _applies(req.marker, env, ()):
            req.marker = None
            kept.append(req)
    return kept


def _wheel_requires(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.parser.Parser().parsestr(zf.read(meta).decode("utf-8", "replace"))
    return [Requirement(r) for r in message.get_all("Requires-Dist") or []]


def _index(directory: Path) -> dict[NormalizedName, Path]:
    found: dict[NormalizedName, Path] = {}
    for wheel in sorted(directory.glob("*.whl")):
        try:
            found[parse_wheel_filename(wheel.name)[0]] = wheel
        except InvalidWheelFilename:
            continue
    return found


def closure(
    directory: Path, top: Sequence[Requirement], target: Target
) -> tuple[list[Path], list[Requirement]]:
    """The wheels in ``directory`` that ``top`` needs on ``target``, and what is missing."""
    return closure_for(directory, top, target.environment())


def closure_for(
    directory: Path, top: Sequence[Requirement], env: dict[str, str]
) -> tuple[list[Path], list[Requirement]]:
    """:func:`closure` for a marker environment (the systemd test tier's containers use it).

    pip evaluates dependency markers against the running interpreter, not the
    target's, so this walk uses the target's markers instead.
    """
    index = _index(directory)
    needed: dict[NormalizedName, Path] = {}
    missing: list[Requirement] = []
    todo: list[tuple[Requirement, tuple[str, ...]]] = [(r, tuple(r.extras)) for r in top]
    seen: set[tuple[NormalizedName, tuple[str, ...]]] = set()
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        wheel = index.get(name)
        if wheel is None:
            bare = Requirement(str(req))
            bare.marker = None
            missing.append(bare)
            continue
        needed[name] = wheel
        for dep in _wheel_requires(wheel):
            if _applies(dep.marker, env, extras):
                todo.append((dep, tuple(sorted(dep.extras))))
    return sorted(needed.values()), missing


def pip_downloader(options: Sequence[str] = ()) -> Downloader:
    """``python -m pip download`` with the operator's extra options (--find-links...)."""

    def download(args: Sequence[str], dest: Path) -> None:
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        proc.run([*argv, *options, "--dest", str(dest), *args], timeout=900)

    return download


def resolve(
    requirements: Sequence[Requirement], target: Target, dest: Path, download: Downloader
) -> list[Path]:
    """Download into ``dest`` the closed set of wheels ``requirements`` need on ``target``.

    ``dest`` ends up holding exactly those wheels plus pip's; returns them.
    """
    wanted = [str(r) for r in requirements]
    with tempfile.TemporaryDirectory(prefix="ollama-ops-wheels-") as tmp:
        for attempt in range(MAX_ROUNDS):
            batch = Path(tmp) / str(attempt)
            batch.mkdir()
            try:
                download([*target.pip_args(), *wanted], batch)
            except CommandError as exc:
                raise OpsError(
                    f"no wheels for Python {target.python} on {target.arch}: {exc}; "
                    "check the network or pass --find-links DIR with the wheels"
                ) from exc
            files, missing = closure(batch, requirements, target)
            if not missing:
                break
            wanted += [str(m) for m in missing]
        else:
            raise OpsError(
                f"the dependencies of ollama-ops do not close for Python {target.python} "
                f"after {MAX_ROUNDS} rounds of pip download; pass --find-links DIR"
            )
        pip_dir = Path(tmp) / "pip"
        pip_dir.mkdir()
        try:
            download(["--no-deps", *target.pip_args(), "pip"], pip_dir)
        except CommandError as exc:
            raise OpsError(f"cannot download pip's wheel for the targets: {exc}") from exc
        dest.mkdir(parents=True, exist_ok=True)
        kept = []
        for wheel in [*files, *sorted(pip_dir.glob("pip-*.whl"))]:
            shutil.copy2(wheel, dest / wheel.name)
            kept.append(dest / wheel.name)
    return kept
