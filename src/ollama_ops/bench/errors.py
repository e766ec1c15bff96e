"""The benchmark's typed errors (OpsError subclasses, one-line messages)."""

from __future__ import annotations

from ollama_ops.errors import OpsError


class BenchError(OpsError):
    """A benchmark option, prompt file, SLO or saved result is wrong (exit 2)."""


class TargetError(OpsError):
    """The server cannot be reached, lacks the model, or refused every request (exit 3)."""

    exit_code = 3


class Interrupted(OpsError):
    """Ctrl-C before anything was measured (exit 130, like a shell)."""

    exit_code = 130
