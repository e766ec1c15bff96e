"""Put measured limits into the deployment config, keeping the operator's comments and layout.

``limits.memory_high`` and ``limits.memory_max`` are set (tomlkit edits the
file in place), each with a comment saying which measurement they came from.
The new text is validated as a config before it is written (atomically);
the caller gets the previous bytes back to restore them if the following
apply fails.
"""

from __future__ import annotations

from pathlib import Path

from ollama_ops.apply.fileio import open_dir
from ollama_ops.errors import ConfigError
from ollama_ops.model import config as config_mod

MiB = 1024**2


def mib(num_bytes: int) -> str:
    return f"{num_bytes // MiB}M"


def updated_text(old: str | None, high: int, maximum: int, origin: str, source: str) -> str:
    """The config text with the two limits set; ConfigError if the result is not a valid config."""
    import tomlkit  # only --apply needs it
    from tomlkit.exceptions import TOMLKitError
    from tomlkit.items import Table

    try:
        doc = tomlkit.parse(old) if old else tomlkit.document()
    except TOMLKitError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc}); fix it before --apply") from exc
    limits = doc.get("limits")
    if limits is None:
        limits = tomlkit.table()
        doc.add("limits", limits)
    if not isinstance(limits, Table):
        raise ConfigError(f"{source}: [limits] is not a table; fix it before --apply")
    for key, value in (("memory_high", mib(high)), ("memory_max", mib(maximum))):
        item = tomlkit.item(value)
        item.comment(origin)
        limits[key] = item
    text = tomlkit.dumps(doc)
    config_mod.loads(text, source)  # refuse before writing anything
    return text


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open_dir(path.parent) as directory:  # no symlink is followed
        directory.write(path.name, data, mode=0o644)


def write(path: Path, text: str) -> bytes | None:
    """Write ``text`` atomically; the previous bytes (None: there was no file)."""
    before = _read(path)
    _put(path, text.encode())
    return before


def restore(path: Path, before: bytes | None) -> None:
    if before is None:
        path.unlink(missing_ok=True)
    else:
        _put(path, before)
