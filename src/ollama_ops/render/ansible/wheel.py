"""The ollama-ops wheel the role installs: the running package, packed as a wheel.

The files are the ones this controller runs (``ollama_ops/`` without byte code)
and the metadata is the installed distribution's, so what the targets get is
what the controller planned with. The zip is deterministic (sorted entries, a
fixed timestamp): exporting the same code twice gives the same bytes, and the
role's copy task then reports ``ok``. :func:`wheel_bytes` is pure.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import ollama_ops
from ollama_ops.errors import OpsError

DIST = "ollama-ops"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


@dataclass(frozen=True)
class Wheel:
    filename: str
    data: bytes


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def wheel_bytes(
    version: str, files: Mapping[str, bytes], metadata: str, entry_points: str | None
) -> Wheel:
    """A pure-Python wheel (py3-none-any) of ``files`` (paths inside the wheel)."""
    info = f"ollama_ops-{version}.dist-info"
    wheel_meta = "Wheel-Version: 1.0\nGenerator: ollama-ops export\nRoot-Is-Purelib: true\n"
    entries = dict(files)
    entries[f"{info}/METADATA"] = metadata.encode()
    entries[f"{info}/WHEEL"] = (wheel_meta + "Tag: py3-none-any\n").encode()
    if entry_points:
        entries[f"{info}/entry_points.txt"] = entry_points.encode()
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in sorted(entries.items())]
    entries[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(entries):
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, entries[name])
    return Wheel(f"ollama_ops-{version}-py3-none-any.whl", buf.getvalue())


def package_files(package_dir: Path) -> dict[str, bytes]:
    """Every file of the package, keyed by its path in the wheel, byte code left out."""
    found: dict[str, bytes] = {}
    for path in sorted(package_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            found[f"ollama_ops/{path.relative_to(package_dir).as_posix()}"] = path.read_bytes()
    return found


def installed_wheel() -> Wheel:
    """The wheel of the ollama-ops this process runs."""
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise OpsError(
            "ollama-ops is imported but not installed, so its metadata is missing; "
            "pip install it (or pass --wheel FILE)"
        ) from exc
    # A dist-info has METADATA; the egg-info that `pip install -e` leaves in src/ has PKG-INFO.
    metadata = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    if not metadata:
        raise OpsError("the installed ollama-ops has no METADATA; reinstall it or pass --wheel")
    files = package_files(Path(ollama_ops.__file__).parent)
    return wheel_bytes(dist.version, files, metadata, dist.read_text("entry_points.txt"))


def read_wheel(path: Path) -> Wheel:
    """An operator's own ollama-ops wheel (--wheel FILE)."""
    if not path.name.startswith("ollama_ops-") or path.suffix != ".whl":
        raise OpsError(f"--wheel {str(path)!r} is not an ollama_ops-VERSION-*.whl file")
    try:
        return Wheel(path.name, path.read_bytes())
    except OSError as exc:
        raise OpsError(f"--wheel {str(path)!r} cannot be read ({exc.strerror})") from exc


def wheel_version(wheel: Wheel) -> str:
    return wheel.filename.split("-")[1]


def wheel_requirements(wheel: Wheel) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    try:
        with zipfile.ZipFile(io.BytesIO(wheel.data)) as zf:
            name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            text = zf.read(name).decode("utf-8", "replace")
    except (zipfile.BadZipFile, StopIteration) as exc:
        raise OpsError(f"{wheel.filename} is not a wheel with METADATA; build it again") from exc
    return [
        line.split(":", 1)[1].strip()
        for line in text.split("\n\n", 1)[0].splitlines()
        if line.startswith("Requires-Dist:")
    ]
