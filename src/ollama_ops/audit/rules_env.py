"""Rules on the environment Ollama starts with: files that fail it, variables it misreads.

EnvironmentFile= paths that do not exist (the unit fails to start) or cannot
be read here; Ollama server variables (Environment= or EnvironmentFile=) that
are not whole numbers or Go booleans where Ollama parses them as such, that
Ollama no longer reads, or that it never knew (with a did-you-mean against
envconfig/config.go). Whether the numbers fit the host is ``rules_limits``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from ollama_ops.audit.context import Ctx, finding
from ollama_ops.audit.model import Finding, Severity

_INT_VARS = (
    "OLLAMA_NUM_PARALLEL",
    "OLLAMA_MAX_LOADED_MODELS",
    "OLLAMA_MAX_QUEUE",
    "OLLAMA_CONTEXT_LENGTH",
    "OLLAMA_GPU_OVERHEAD",
)
_BOOL_VARS = (
    "OLLAMA_FLASH_ATTENTION",
    "OLLAMA_NOPRUNE",
    "OLLAMA_SCHED_SPREAD",
    "OLLAMA_NOHISTORY",
    "OLLAMA_MULTIUSER_CACHE",
    "OLLAMA_INTEL_GPU",
    "OLLAMA_NEW_ENGINE",
)
_KNOWN_OLLAMA_VARS = frozenset(
    {
        "OLLAMA_HOST",
        "OLLAMA_MODELS",
        "OLLAMA_KEEP_ALIVE",
        "OLLAMA_LOAD_TIMEOUT",
        "OLLAMA_KV_CACHE_TYPE",
        "OLLAMA_ORIGINS",
        "OLLAMA_DEBUG",
        "OLLAMA_LLM_LIBRARY",
        "OLLAMA_TMPDIR",
        "OLLAMA_RUNNERS_DIR",
        "OLLAMA_NEW_ESTIMATES",
        "OLLAMA_REMOTES",
        "OLLAMA_VULKAN",
        *_INT_VARS,
        *_BOOL_VARS,
    }
)
_GO_BOOLS = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}


def rule_env_files(ctx: Ctx) -> Iterator[Finding]:
    for a, ef in ctx.env_files():
        if ef.missing and not a.value.startswith("-"):
            yield finding(
                "env-file-missing",
                Severity.ERROR,
                a,
                None,
                f"EnvironmentFile={a.value} does not exist: the unit fails to start "
                '("Failed to load environment files")',
                f"create {ef.path}, or write EnvironmentFile=-{ef.path} to make it optional",
            )
        elif ef.error is not None:
            yield finding(
                "env-file-unreadable",
                Severity.WARNING,
                a,
                None,
                f"EnvironmentFile={a.value} cannot be read here ({ef.error}); its "
                "variables are not audited",
                "run the audit as root",
            )


def rule_ollama_env(ctx: Ctx) -> Iterator[Finding]:
    """Ollama variables that do not parse, are stale or unknown."""
    for name in _INT_VARS:
        var = ctx.env.get(name)
        if var is not None and ctx.int_env(name) is None:
            yield finding(
                "env-not-a-number",
                Severity.WARNING,
                var,
                None,
                f"{name}={var.value} is not a whole number: Ollama warns and uses its default",
                f"write {name} as a whole number",
            )
    for name in _BOOL_VARS:
        var = ctx.env.get(name)
        if var is not None and var.value.strip().strip("\"'") not in _GO_BOOLS | {""}:
            yield finding(
                "env-bool-unparsable",
                Severity.WARNING,
                var,
                None,
                f"{name}={var.value} is not a Go boolean: Ollama counts an unparsable value "
                "as TRUE",
                f"write {name}=1 or {name}=0",
            )
    tmp = ctx.env.get("OLLAMA_TMPDIR")
    if tmp is not None:
        yield finding(
            "env-stale",
            Severity.WARNING,
            tmp,
            None,
            "OLLAMA_TMPDIR was removed in Ollama v0.5.2 (runners are no longer unpacked to a "
            "temp dir): setting it does nothing",
            "remove OLLAMA_TMPDIR",
        )
    for name, var in sorted(ctx.env.items()):
        if name.startswith("OLLAMA_") and name not in _KNOWN_OLLAMA_VARS:
            near = difflib.get_close_matches(name, sorted(_KNOWN_OLLAMA_VARS), n=1, cutoff=0.8)
            yield finding(
                "env-unknown",
                Severity.INFO,
                var,
                None,
                f"{name} is not a server variable ollama-ops knows"
                + (f"; did you mean {near[0]}?" if near else ""),
                "check the name against Ollama's envconfig/config.go",
            )
