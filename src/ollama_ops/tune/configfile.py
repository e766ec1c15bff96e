"""Write the winner into the deployment config: its ``[environment]`` keys, the rest intact.

The edit goes through tomlkit, which keeps comments, order, spacing and the
form the file used (a ``[environment]`` table, an inline table or dotted
keys). The new text is read back through the config parser before it is
written, and written atomically (a temporary file renamed over the old one,
its mode and owner kept), so the file is never half-written or invalid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ollama_ops.apply.fileio import open_dir
from ollama_ops.errors import ConfigError
from ollama_ops.model import config as config_mod

from .params import param_for


def with_environment(text: str, env: Mapping[str, str], src: str) -> str:
    """``text`` with ``env`` set in its [environment] table (pure); checked by the config parser."""
    import tomlkit  # only when a winner is kept
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigError(f"{src}: not valid TOML ({' '.join(str(exc).split())})") from exc
    table = doc.get("environment")
    if table is None:
        table = tomlkit.table()
        doc["environment"] = table
    for name, value in env.items():
        table[name] = int(value) if param_for(name).numeric else value
    new = tomlkit.dumps(doc)
    config_mod.loads(new, src)  # never write a file the next plan would refuse
    return new


def write(path: Path, text: str) -> None:
    """Replace ``path`` atomically (its directory made 0755 when missing), mode and owner kept."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open_dir(path.parent) as directory:
        old = directory.read(path.name)
        mode = old.mode if old is not None else 0o644
        owner = old.owner if old is not None else None
        try:
            directory.write(path.name, text.encode("utf-8"), mode=mode, owner=owner)
        except OSError as exc:
            raise ConfigError(
                f"cannot write {path} ({exc.strerror or exc}); the service keeps its original "
                "configuration"
            ) from exc


def read_text(path: Path) -> str:
    """The config's text; "" when the file does not exist yet."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path} ({exc}); check its permissions") from exc


def exists(path: Path) -> bool:
    return os.path.lexists(path)
