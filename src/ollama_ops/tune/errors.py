"""The tuner's typed errors (one-line messages; exit codes come from errors.EXIT_CODES)."""

from __future__ import annotations

from ollama_ops.errors import OpsError


class TuneError(OpsError):
    """A tune option is wrong (bad input): an unknown parameter, a value out of range."""
