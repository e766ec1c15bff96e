"""The benchmark's typed errors (one-line messages; the exit code comes from errors.EXIT_CODES)."""

from __future__ import annotations

from ollama_ops.errors import CommandError, OpsError


class BenchError(OpsError):
    """A benchmark option, prompt file, SLO or saved result is wrong (bad input)."""


class TargetError(CommandError):
    """The server cannot be reached, lacks the model, or refused every request."""
