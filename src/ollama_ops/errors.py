"""Typed exceptions of the library and the one table of exit codes.

The library raises these; only ``cli.main`` turns them into exit codes, through
:func:`exit_status`. Every message is one line that names the offending value
and says how to fix it. Anything that is not an :class:`OpsError` is a bug of
ours and exits with :attr:`ExitStatus.INTERNAL` (httpie's ``ExitStatus`` and
its single mapper are the model).
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Every exit code ollama-ops uses, with the meaning ``--help`` prints."""

    OK = 0
    CHANGES_PENDING = 1  # --dry-run found changes (like `diff`)
    BAD_INPUT = 2  # config, facts, arguments, a plan that cannot work
    COMMAND_FAILED = 3  # an external command failed or is missing; nothing was changed
    APPLY_FAILED = 4  # apply or rollback failed; the previous files are back
    BUSY = 5  # another apply or rollback holds the lock, or the files changed meanwhile
    STATE = 6  # the state directory or --root cannot be used (not writable, tampered)
    AUDIT_WARNING = 10
    AUDIT_ERROR = 11
    AUDIT_CRITICAL = 12
    INTERNAL = 70  # a bug: rerun with --debug and report it (EX_SOFTWARE)
    INTERRUPTED = 130  # Ctrl-C


# `health` follows the monitoring-plugin convention instead, so that Nagios,
# Icinga and Checkmk run it unchanged; it is the one command with its own codes.
class HealthStatus(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


EXIT_MEANINGS: dict[ExitStatus, str] = {
    ExitStatus.OK: "success (also: nothing to change, nothing to roll back)",
    ExitStatus.CHANGES_PENDING: "--dry-run: changes are pending; bench compare: a regression",
    ExitStatus.BAD_INPUT: "bad input: config, facts, arguments or a plan that cannot work",
    ExitStatus.COMMAND_FAILED: "an external command failed or is missing; nothing was changed",
    ExitStatus.APPLY_FAILED: "apply or rollback failed; the previous files were restored",
    ExitStatus.BUSY: "another apply or rollback is running, or files changed meanwhile",
    ExitStatus.STATE: "--root or the state directory cannot be used as it is",
    ExitStatus.AUDIT_WARNING: "audit: the worst finding is a warning",
    ExitStatus.AUDIT_ERROR: "audit: the worst finding is an error",
    ExitStatus.AUDIT_CRITICAL: "audit: the worst finding is critical",
    ExitStatus.INTERNAL: "internal error (a bug): rerun with --debug for the traceback",
    ExitStatus.INTERRUPTED: "interrupted (Ctrl-C)",
}


class OpsError(Exception):
    """Base class: a problem the user can fix, reported as one line."""


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


class ApplyError(OpsError):
    """Writing or activating the configuration failed; the old one was restored."""


class RollbackError(OpsError):
    """Restoring a generation failed."""


class BusyError(OpsError):
    """Another apply or rollback holds the lock, or the files changed while planning."""


class StateError(OpsError):
    """--root or ollama-ops' own state directory cannot be used as it is."""


# The one mapping from exception class to exit code; the most specific class wins.
EXIT_CODES: dict[type[OpsError], ExitStatus] = {
    OpsError: ExitStatus.BAD_INPUT,
    CommandError: ExitStatus.COMMAND_FAILED,
    ApplyError: ExitStatus.APPLY_FAILED,
    RollbackError: ExitStatus.APPLY_FAILED,
    BusyError: ExitStatus.BUSY,
    StateError: ExitStatus.STATE,
}


def exit_status(exc: BaseException) -> ExitStatus:
    """The exit code for ``exc``: its class's row in EXIT_CODES, else INTERNAL."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return ExitStatus.INTERNAL


def exit_codes_help() -> str:
    """The exit-code table as `--help` prints it."""
    rows = [f"  {int(code):>3}  {EXIT_MEANINGS[code]}" for code in ExitStatus]
    return "exit codes:\n" + "\n".join(rows)
