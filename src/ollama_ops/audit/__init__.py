"""Findings over an installed ollama.service: pure rules and a thin edge.

``check`` is pure: it judges an effective unit (fragment + drop-ins, as
``effective_mod.load_effective`` assembles it) against the host facts and the systemd
version, plus the few files under the root that change what the unit means
(EnvironmentFile= contents, modules-load.d, /etc/passwd homes), which the
edge reads into ``RootFiles`` first. ``audit`` is the edge: it loads the unit
under a root, reads those files, runs ``check`` and adds the exposure score
of ``systemd-analyze security --offline``.

Each rule cites what systemd or Ollama actually does (see the package's
tests and ../shared/reference): a finding names the file and line of the
assignment it is about, the directive (or, for Environment= and
EnvironmentFile= settings, the variable), one line of message and a concrete
fix. ollama-ops' own drop-in must never get a finding above INFO.

This module holds the public API and the order the rules run in; the rules
live in ``rules_*`` by concern, over the ``context`` that ``rootfiles``
completes, and they speak in the ``model``'s findings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ollama_ops.audit import (
    rules_devices,
    rules_env,
    rules_instances,
    rules_keys,
    rules_limits,
    rules_network,
    rules_paths,
    rules_restart,
    rules_service,
)
from ollama_ops.audit.context import Ctx, EnvFile, RootFiles, finding
from ollama_ops.audit.exposure import exposure as _exposure
from ollama_ops.audit.model import Finding, Report, Severity, format_text, ordered
from ollama_ops.audit.rootfiles import _parse_env_file as _parse_env_file
from ollama_ops.audit.rootfiles import read_root_files
from ollama_ops.audit.rules_devices import _allows as _allows
from ollama_ops.audit.rules_limits import GiB as GiB
from ollama_ops.audit.rules_network import _bind_host as _bind_host
from ollama_ops.audit.rules_restart import DEFAULT_RESTART_SEC as DEFAULT_RESTART_SEC
from ollama_ops.audit.rules_restart import DEFAULT_START_LIMIT_BURST as DEFAULT_START_LIMIT_BURST
from ollama_ops.audit.rules_restart import (
    DEFAULT_START_LIMIT_INTERVAL as DEFAULT_START_LIMIT_INTERVAL,
)
from ollama_ops.audit.values import parse_timespan as parse_timespan
from ollama_ops.errors import OpsError
from ollama_ops.host import systemd
from ollama_ops.model.facts import HostFacts
from ollama_ops.plan import preflight
from ollama_ops.unitfile import effective as effective_mod

if TYPE_CHECKING:
    from ollama_ops.runtime import Runtime

__all__ = [
    "EnvFile",
    "Finding",
    "Report",
    "RootFiles",
    "Severity",
    "audit",
    "check",
    "format_text",
    "read_root_files",
    "systemd_version_for",
]

# The order findings are produced in; ``check`` then sorts them, stably.
_RULES: tuple[Callable[[Ctx], Iterator[Finding]], ...] = (
    rules_keys.rule_keys,
    rules_env.rule_env_files,
    rules_service.rule_service,
    rules_limits.rule_memory,
    rules_limits.rule_cpus,
    rules_limits.rule_gpu_env,
    rules_env.rule_ollama_env,
    rules_limits.rule_models_vs_memory,
    rules_limits.rule_gomaxprocs,
    rules_paths.rule_paths,
    rules_paths.rule_proc,
    rules_devices.rule_devices,
    rules_network.rule_network,
    rules_network.rule_address_families,
    rules_restart.rule_restart,
    rules_instances.rule_instance,  # quiet unless the unit is an instance (ollama@NAME)
)


def check(
    effective: effective_mod.EffectiveUnit,
    facts: HostFacts | None,
    systemd_version: int,
    files: RootFiles | None = None,
) -> list[Finding]:
    """Every rule over the effective unit; pure. Worst first, then by file and line."""
    if effective.masked:
        return [
            finding(
                "unit-masked",
                Severity.CRITICAL,
                None,
                None,
                f"{effective.name} is masked ({effective.fragment}): it cannot start",
                f"systemctl unmask {effective.name}",
            )
        ]
    ctx = Ctx(effective, facts, systemd_version, files or RootFiles())
    return ordered(f for rule in _RULES for f in rule(ctx))


def systemd_version_for(rt: Runtime, facts: HostFacts | None, given: int | None = None) -> int:
    """The systemd version the rules judge against: ``given``, else the facts', else the
    installed systemctl's (asked through the runtime's runner), else 252 (Debian 12's)."""
    if given is not None:
        return given
    if facts is not None:
        return facts.systemd_version
    return systemd.installed_version(rt.run) or 252


def audit(
    rt: Runtime,
    unit_name: str = "ollama.service",
    facts: HostFacts | None = None,
    *,
    systemd_version: int | None = None,
    with_exposure: bool = True,
) -> Report:
    """Load ``unit_name`` under the runtime's root, run every rule and the exposure score.

    The runtime's runner asks systemd's version (when neither ``systemd_version`` nor
    ``facts`` give it) and runs `systemd-analyze security --offline`.
    """
    root = rt.root
    # The reader plan and apply use too; then an instance's %i, %n ... as systemd fills them in
    # (ollama@gpu0: EnvironmentFile=/etc/ollama/%i.conf).
    effective = rules_instances.expand_instance(preflight.load_unit(root, unit_name))
    if effective.fragment is None:
        raise OpsError(f"{unit_name} not found under {root}; install ollama or pass --root")
    version = systemd_version_for(rt, facts, systemd_version)
    findings = check(effective, facts, version, read_root_files(root, effective))
    exposure: float | None = None
    if with_exposure and not effective.masked:
        exposure, score = _exposure(root, unit_name, rt.run)
        findings = ordered([*findings, score])
    return Report(
        unit=unit_name,
        fragment=effective.fragment,
        dropins=effective.dropins,
        findings=tuple(findings),
        exposure=exposure,
    )
