"""Which journald instance reads which config file. Pure; used by apply to restart them."""

from __future__ import annotations

from collections.abc import Iterable


def journald_units(paths: Iterable[str]) -> list[str]:
    """The journald instances that must restart to read changed config (they read it at start)."""
    units: list[str] = []
    for path in sorted(paths):
        if path.startswith("/etc/systemd/journald.conf.d/"):
            units.append("systemd-journald.service")
        elif path.startswith("/etc/systemd/journald@") and path.endswith(".conf"):
            name = path.removeprefix("/etc/systemd/journald@").removesuffix(".conf")
            units.append(f"systemd-journald@{name}.service")
    return sorted(set(units))
