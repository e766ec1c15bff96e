"""Typed exceptions of the library.

The library raises these; only the CLI turns them into exit codes. Every
message is one line that names the offending value and says how to fix it.
"""

from __future__ import annotations


class OpsError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code: int = 2


class ConfigError(OpsError):
    """The deployment config file (TOML) or a command-line value is wrong."""


class FactsError(OpsError):
    """A facts JSON file is malformed or holds impossible values."""


class UnitSyntaxError(OpsError):
    """A unit file cannot be parsed."""


class UnsafeValueError(OpsError):
    """A value would escape its line or its directive in a unit file."""


class PlanError(OpsError):
    """The inputs cannot produce a consistent deployment."""


class CommandError(OpsError):
    """An external command failed or is missing."""

    exit_code = 3


class ApplyError(OpsError):
    """Writing or activating the configuration failed; the old one was restored."""

    exit_code = 4


class RollbackError(OpsError):
    """There is no previous generation to restore, or restoring it failed."""

    exit_code = 4
