"""Findings over an installed ollama.service: pure rules and a thin edge.

``check`` is pure: it judges an effective unit (fragment + drop-ins, as
``unit.load_effective`` assembles it) against the host facts and the systemd
version, plus the few files under the root that change what the unit means
(EnvironmentFile= contents, modules-load.d, /etc/passwd homes), which the
edge reads into ``RootFiles`` first. ``audit`` is the edge: it loads the unit
under a root, reads those files, runs ``check`` and adds the exposure score
of ``systemd-analyze security --offline``.

Each rule cites what systemd or Ollama actually does (see the module's
tests and ../shared/reference): a finding names the file and line of the
assignment it is about, the directive (or, for Environment= and
EnvironmentFile= settings, the variable), one line of message and a concrete
fix. ollama-ops' own drop-in must never get a finding above INFO.
"""

from __future__ import annotations

import difflib
import fnmatch
import glob
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path, PurePosixPath

from ollama_ops import directives, systemd, unit
from ollama_ops.config import format_size
from ollama_ops.errors import CommandError, FactsError, OpsError
from ollama_ops.facts import HostFacts, format_cpu_list, parse_cpu_list

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
]

GiB = 1024**3
INSTALLER_HOME = "/usr/share/ollama"
DEFAULT_START_LIMIT_INTERVAL = 10.0  # DefaultStartLimitIntervalSec= of system.conf
DEFAULT_START_LIMIT_BURST = 5
DEFAULT_RESTART_SEC = 0.1


class Severity(IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    file: str | None  # path inside the root; None for the unit as a whole
    line: int | None
    directive: str | None  # a unit key, or the variable for Environment=/EnvironmentFile=
    message: str
    fix: str

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "severity": self.severity.label,
            "file": self.file,
            "line": self.line,
            "directive": self.directive,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Report:
    unit: str
    fragment: str | None
    dropins: tuple[str, ...]
    findings: tuple[Finding, ...]
    exposure: float | None

    def worst(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.INFO)

    def to_json(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "fragment": self.fragment,
            "dropins": list(self.dropins),
            "exposure": self.exposure,
            "worst": self.worst().label,
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True)
class EnvFile:
    """One file named by EnvironmentFile= (globs expanded), as read under the root."""

    spec: str  # the EnvironmentFile= value as written, '-' prefix included
    path: str  # path inside the root
    entries: tuple[tuple[int, str, str], ...] = ()  # (line, NAME, value)
    missing: bool = False
    error: str | None = None  # unreadable: why


@dataclass(frozen=True)
class RootFiles:
    """Files under the root that change what the unit means. Empty: nothing there."""

    env_files: tuple[EnvFile, ...] = ()
    # Kernel modules loaded at boot (modules-load.d, /etc/modules, softdeps of
    # nvidia), '-' written as '_'. None: not looked at, so rules that need it stay quiet.
    boot_modules: frozenset[str] | None = None
    homes: Mapping[str, str] = field(default_factory=dict)  # /etc/passwd: user -> home
    # /etc/group: group -> member users. None: no /etc/group under the root.
    groups: Mapping[str, frozenset[str]] | None = None


# ------------------------------------------------------------------ parsing

_TIME_UNITS: dict[str, float] = {
    "usec": 1e-6,
    "us": 1e-6,
    "µs": 1e-6,
    "msec": 1e-3,
    "ms": 1e-3,
    "seconds": 1,
    "second": 1,
    "sec": 1,
    "s": 1,
    "": 1,
    "minutes": 60,
    "minute": 60,
    "min": 60,
    "m": 60,
    "hours": 3600,
    "hour": 3600,
    "hr": 3600,
    "h": 3600,
    "days": 86400,
    "day": 86400,
    "d": 86400,
    "weeks": 604800,
    "week": 604800,
    "w": 604800,
    "months": 2629800,
    "month": 2629800,
    "M": 2629800,
    "years": 31557600,
    "year": 31557600,
    "y": 31557600,
}
_TIME_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-zµ]*)")


def parse_timespan(text: str) -> float | None:
    """Seconds in a systemd time span ("10", "5min", "1h 30s"); inf; None if invalid."""
    text = text.strip()
    if text == "infinity":
        return math.inf
    pos, total = 0, 0.0
    if not text:
        return None
    while pos < len(text):
        match = _TIME_PART.match(text, pos)
        if match is None or match.group(2) not in _TIME_UNITS:
            return None
        total += float(match.group(1)) * _TIME_UNITS[match.group(2)]
        pos = match.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    return total


_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTPE]?)B?$")
_SIZE_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SIZE_FACTORS["E"] = 1024**6


@dataclass(frozen=True)
class _Size:
    bytes: float | None  # None: relative and no facts to resolve it
    text: str
    percent: float | None = None


def _parse_memory(text: str, facts: HostFacts | None) -> _Size | str:
    """A MemoryMax=-style value, or the reason it is invalid."""
    value = text.strip()
    if value == "infinity":
        return _Size(math.inf, value)
    for sign, scale in (("%", 100.0), ("‰", 1000.0), ("‱", 10000.0)):
        if value.endswith(sign):
            try:
                share = float(value[: -len(sign)]) / scale
            except ValueError:
                return f"{value!r} is not a number followed by {sign}"
            if not 0 <= share <= 1:
                return f"{value} is more than all of the host's memory (at most 100%)"
            total = None if facts is None else share * facts.memory_bytes
            return _Size(total, value, share * 100)
    match = _SIZE_RE.match(value)
    if match is None:
        return f"{value!r} is not a size such as 48G, 80% or infinity"
    return _Size(float(match.group(1)) * _SIZE_FACTORS[match.group(2)], value)


_BOOL_TRUE = {"1", "yes", "y", "true", "t", "on"}
_BOOL_FALSE = {"0", "no", "n", "false", "f", "off"}


def _bool(text: str | None) -> bool | None:
    if text is None:
        return None
    low = text.strip().lower()
    if low in _BOOL_TRUE:
        return True
    if low in _BOOL_FALSE:
        return False
    return None


def _bind_host(value: str) -> str:
    """The host part Ollama binds for an OLLAMA_HOST value (envconfig.Host)."""
    text = value.strip().strip("\"'")
    _scheme, sep, hostport = text.partition("://")
    if not sep:
        hostport = text
    hostport = hostport.split("/", 1)[0]
    if hostport.startswith("["):
        end = hostport.find("]")
        if end > 0 and hostport[end + 1 : end + 2] == ":":
            return hostport[1:end]
    elif hostport.count(":") == 1:
        return hostport.split(":", 1)[0]
    inner = hostport.strip("[]")
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return hostport or "127.0.0.1"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _norm_module(name: str) -> str:
    return name.strip().replace("-", "_")


# ------------------------------------------------------------------ context

_SVC = "Service"
_RESTARTING = {"always", "on-failure", "on-abnormal", "on-abort", "on-watchdog"}
# Options that imply NoNewPrivileges= for a service without CAP_SYS_ADMIN (systemd.exec(5)).
_IMPLY_NNP = (
    "SystemCallFilter",
    "SystemCallArchitectures",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectClock",
    "MemoryDenyWriteExecute",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
)


@dataclass(frozen=True)
class _Var:
    name: str
    value: str
    file: str
    line: int
    via: str  # "Environment" or "EnvironmentFile"


class _Ctx:
    """The effective unit with the lookups every rule needs."""

    def __init__(
        self,
        effective: unit.EffectiveUnit,
        facts: HostFacts | None,
        version: int,
        files: RootFiles,
    ) -> None:
        self.u = effective
        self.facts = facts
        self.version = version
        self.files = files
        self.env = self._environment()

    def last(self, key: str, section: str = _SVC) -> unit.Assignment | None:
        return self.u.last(section, key)

    def value(self, key: str, section: str = _SVC) -> str | None:
        a = self.last(key, section)
        return None if a is None else a.value

    def values(self, key: str, section: str = _SVC) -> list[unit.Assignment]:
        return self.u.values(section, key)

    def flag(self, key: str) -> bool:
        return _bool(self.value(key)) is True

    def _environment(self) -> dict[str, _Var]:
        env: dict[str, _Var] = {}
        for a in self.u.assignments:
            if a.section != _SVC or a.key != "Environment":
                continue
            if a.value == "":
                env.clear()
                continue
            for name, val in unit.parse_environment([a.value]).items():
                env[name] = _Var(name, val, a.path, a.line, "Environment")
        # EnvironmentFile= wins over Environment= (systemd.exec(5)); files apply in order.
        by_spec: dict[str, list[EnvFile]] = {}
        for ef in self.files.env_files:
            by_spec.setdefault(ef.spec, []).append(ef)
        for a in self.values("EnvironmentFile"):
            for ef in by_spec.get(a.value, []):
                for line, name, val in ef.entries:
                    env[name] = _Var(name, val, ef.path, line, "EnvironmentFile")
        return env

    # identity ---------------------------------------------------------
    @property
    def dynamic(self) -> bool:
        return self.flag("DynamicUser")

    @property
    def user(self) -> str:
        value = self.value("User")
        return value if value else "root"

    @property
    def non_root(self) -> bool:
        return self.dynamic or self.user not in ("root", "0")

    def home(self) -> tuple[str | None, str]:
        """The service's $HOME and where that came from."""
        var = self.env.get("HOME")
        if var is not None:
            return var.value, f"Environment HOME ({var.file}:{var.line})"
        if self.dynamic:
            return "/", "DynamicUser= (a dynamic user's home is /)"
        user = self.user
        if user in ("root", "0"):
            return "/root", "the service runs as root"
        install = self.facts.ollama if self.facts is not None else None
        if install is not None and install.home and install.user == user:
            return install.home, f"the home of user {user} in the host facts"
        if user in self.files.homes:
            return self.files.homes[user], f"the home of user {user} in /etc/passwd"
        if user == "ollama":
            return INSTALLER_HOME, "the official installer's home for user ollama"
        return None, f"user {user} is not in /etc/passwd under the root"

    # sandbox ----------------------------------------------------------
    def protect_system(self) -> tuple[str, unit.Assignment | None]:
        a = self.last("ProtectSystem")
        if a is not None:
            low = a.value.strip().lower()
            mode = low if low in ("strict", "full") else "yes" if _bool(low) else "no"
            if mode != "no" or not self.dynamic:
                return mode, a
        return ("strict", None) if self.dynamic else ("no", None)

    def protect_home(self) -> tuple[str, unit.Assignment | None]:
        a = self.last("ProtectHome")
        if a is not None:
            low = a.value.strip().lower()
            mode = low if low in ("read-only", "tmpfs") else "yes" if _bool(low) else "no"
            if mode != "no" or not self.dynamic:
                return mode, a
        return ("read-only", None) if self.dynamic else ("no", None)

    def nnp(self) -> unit.Assignment | None:
        """The assignment that makes NoNewPrivileges= apply, if any."""
        a = self.last("NoNewPrivileges")
        if a is not None and _bool(a.value):
            return a
        if not self.non_root:
            return None
        if self.dynamic:
            return self.last("DynamicUser")
        for key in _IMPLY_NNP:
            b = self.last(key)
            if b is not None and _bool(b.value) is not False:
                return b
        return None


# --------------------------------------------------------------- helpers


def _f(  # noqa: PLR0917 - every rule builds findings positionally, in field order
    fid: str,
    sev: Severity,
    where: unit.Assignment | _Var | None,
    directive: str | None,
    message: str,
    fix: str,
) -> Finding:
    if isinstance(where, _Var):
        return Finding(fid, sev, where.file, where.line, directive or where.name, message, fix)
    if where is None:
        return Finding(fid, sev, None, None, directive, message, fix)
    return Finding(fid, sev, where.path, where.line, directive or where.key, message, fix)


def _host_cpus(facts: HostFacts) -> set[int]:
    cpus: set[int] = set()
    for node in facts.numa_nodes:
        cpus.update(parse_cpu_list(node.cpus))
    return cpus or set(range(facts.cpus))


def _within(path: str, prefix: str) -> bool:
    p, q = PurePosixPath(path), PurePosixPath(prefix)
    return p == q or q in p.parents


def _strip_path(spec: str) -> str:
    return spec.lstrip("-+")


# ---------------------------------------------------------------- rules


def _rule_keys(ctx: _Ctx) -> Iterator[Finding]:
    """Keys unknown to, misplaced for or too new for the installed systemd."""
    seen_sections: set[tuple[str, str]] = set()
    for a in ctx.u.assignments:
        if a.section.startswith("X-"):
            continue
        if a.section not in ("Unit", "Service", "Install"):
            if (a.path, a.section) not in seen_sections:
                seen_sections.add((a.path, a.section))
                yield _f(
                    "unknown-section",
                    Severity.WARNING,
                    a,
                    None,
                    f"[{a.section}] is not a section of a service unit; systemd ignores it "
                    "and every key in it",
                    "move the keys to [Unit], [Service] or [Install], or name the section "
                    "X-... to keep it as a comment",
                )
            continue
        d = directives.lookup(a.key)
        if d is None:
            near = difflib.get_close_matches(a.key, list(directives.DIRECTIVES), n=1, cutoff=0.8)
            hint = f"; did you mean {near[0]}=?" if near else ""
            yield _f(
                "unknown-key",
                Severity.INFO,
                a,
                None,
                f"{a.key}= is not known to ollama-ops' table, so it is not judged{hint}",
                f"run `systemd-analyze verify {ctx.u.name}` to see whether systemd "
                f"{ctx.version} knows it",
            )
            continue
        since = d.accepted_in(a.section)
        if since is None:
            yield _f(
                "misplaced-key",
                Severity.WARNING,
                a,
                None,
                f'{a.key}= is not valid in [{a.section}]: systemd logs "Unknown key" and '
                "ignores it"
                + (
                    f", so the default ({DEFAULT_START_LIMIT_INTERVAL:g} s window) applies"
                    if a.key == "StartLimitIntervalSec"
                    else ""
                ),
                f"move {a.key}={a.value} to [{d.section}]",
            )
            continue
        if a.section != d.section:
            yield _f(
                "misplaced-key",
                Severity.INFO,
                a,
                None,
                f"{a.key}= in [{a.section}] is still honoured for compatibility, but it "
                f"belongs in [{d.section}]",
                f"move {a.key}={a.value} to [{d.section}]",
            )
        if since > ctx.version:
            yield _f(
                "too-new-for-systemd",
                Severity.WARNING,
                a,
                None,
                f'{a.key}= needs systemd >= {since}; systemd {ctx.version} logs "Unknown '
                'key" and ignores it',
                f"remove {a.key}= (or upgrade systemd to {since} or later)",
            )
        if a.key == "StartLimitInterval":
            yield _f(
                "legacy-name",
                Severity.INFO,
                a,
                None,
                "StartLimitInterval= is the pre-230 spelling of StartLimitIntervalSec=",
                f"write StartLimitIntervalSec={a.value} in [Unit]",
            )


def _rule_memory(ctx: _Ctx) -> Iterator[Finding]:
    """Memory limits that are invalid, contradict each other or the host, or are missing."""
    sizes: dict[str, tuple[unit.Assignment, _Size]] = {}
    for key in ("MemoryHigh", "MemoryMax"):
        a = ctx.last(key)
        if a is None:
            continue
        parsed = _parse_memory(a.value, ctx.facts)
        if isinstance(parsed, str):
            yield _f(
                "invalid-value",
                Severity.WARNING,
                a,
                None,
                f"{key}={a.value}: {parsed}; systemd ignores the line",
                f"write {key}= as bytes with K/M/G/T, a percentage of RAM or infinity",
            )
            continue
        sizes[key] = (a, parsed)
    if not any(s.bytes is None or math.isfinite(s.bytes) for _a, s in sizes.values()):
        yield _f(
            "no-memory-limit",
            Severity.WARNING,
            None,
            "MemoryMax",
            "no MemoryMax=/MemoryHigh=: Ollama does not see cgroup limits and can load a "
            "model that pushes the whole host into the OOM killer",
            "set MemoryHigh= and MemoryMax= below the host's RAM minus an OS reserve "
            "(`ollama-ops plan` computes them)",
        )
    high, mx = sizes.get("MemoryHigh"), sizes.get("MemoryMax")
    high_b = high[1].bytes if high else None
    max_b = mx[1].bytes if mx else None
    if (
        high
        and mx
        and high_b is not None
        and max_b is not None
        and math.isfinite(high_b)
        and high_b > max_b
    ):
        yield _f(
            "memory-high-above-max",
            Severity.ERROR,
            high[0],
            None,
            f"MemoryHigh={high[1].text} is above MemoryMax={mx[1].text}: the hard limit "
            "OOM-kills Ollama before throttling ever starts",
            "set MemoryHigh= below MemoryMax= (e.g. 80 % and 93 % of RAM minus the OS reserve)",
        )
    if ctx.facts is not None:
        total = ctx.facts.memory_bytes
        for key, (a, size) in sizes.items():
            finite = size.bytes is not None and math.isfinite(size.bytes)
            if size.percent is None and finite and size.bytes is not None and size.bytes > total:
                yield _f(
                    "memory-above-host",
                    Severity.WARNING,
                    a,
                    None,
                    f"{key}={size.text} is more than the host's RAM "
                    f"({format_size(total)}): the limit can never act",
                    f"lower {key}= below {format_size(total)} minus an OS reserve",
                )


def _rule_cpus(ctx: _Ctx) -> Iterator[Finding]:
    a = ctx.last("AllowedCPUs")
    if a is None:
        return
    text = ",".join(a.value.split())
    try:
        wanted = set(parse_cpu_list(text))
    except FactsError:
        yield _f(
            "invalid-value",
            Severity.WARNING,
            a,
            None,
            f"AllowedCPUs={a.value} is not a CPU list; systemd ignores the line",
            'write a CPU list such as "0-15,32-47"',
        )
        return
    if ctx.facts is None:
        return
    host = _host_cpus(ctx.facts)
    missing = sorted(wanted - host)
    if missing:
        yield _f(
            "cpus-not-on-host",
            Severity.ERROR,
            a,
            None,
            f"AllowedCPUs={a.value} names CPUs this host lacks ({format_cpu_list(missing)}); "
            "the kernel rejects the cpuset and the pinning is not applied",
            f"use CPUs of this host ({format_cpu_list(sorted(host))}), e.g. the NUMA node "
            "of the GPUs",
        )


def _visible_list(ctx: _Ctx, name: str) -> tuple[_Var, list[str]] | None:
    var = ctx.env.get(name)
    if var is None:
        return None
    return var, [p.strip() for p in var.value.split(",") if p.strip()]


def _rule_gpu_env(ctx: _Ctx) -> Iterator[Finding]:
    """CUDA/ROCm device lists naming GPUs the host lacks."""
    if ctx.facts is None:
        return
    for name, gpus, vendor in (
        ("CUDA_VISIBLE_DEVICES", ctx.facts.nvidia_gpus, "NVIDIA"),
        ("ROCR_VISIBLE_DEVICES", ctx.facts.amd_gpus, "AMD"),
        ("HIP_VISIBLE_DEVICES", ctx.facts.amd_gpus, "AMD"),
    ):
        found = _visible_list(ctx, name)
        if found is None:
            continue
        var, parts = found
        indexes = {g.index for g in gpus} | set(range(len(gpus)))
        numeric = [p for p in parts if p.lstrip("-").isdigit()]
        if not gpus and parts:
            yield _f(
                "gpus-not-on-host",
                Severity.WARNING,
                var,
                None,
                f"{name}={var.value} but the host has no {vendor} GPU",
                f"remove {name}=",
            )
            continue
        bad = [p for p in numeric if int(p) not in indexes]
        if not bad:
            continue
        # CUDA stops at the first invalid index: the ones before it stay visible.
        usable = 0
        for p in parts:
            if p in bad:
                break
            usable += 1
        yield _f(
            "gpus-not-on-host",
            Severity.ERROR if usable == 0 else Severity.WARNING,
            var,
            None,
            f"{name}={var.value} names GPU {', '.join(bad)}, but the host has "
            f"{len(gpus)} {vendor} GPU(s) ({', '.join(str(i) for i in sorted(indexes))}); "
            + (
                "no GPU is visible and Ollama runs on the CPU"
                if usable == 0
                else "the devices from the first invalid index on are ignored"
            ),
            f"list only {', '.join(str(g.index) for g in gpus)} (or unset {name} to use all)",
        )


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


def _int_var(ctx: _Ctx, name: str) -> tuple[_Var, int] | None:
    var = ctx.env.get(name)
    if var is None:
        return None
    try:
        return var, int(var.value.strip().strip("\"'"))
    except ValueError:
        return None


def _rule_ollama_env(ctx: _Ctx) -> Iterator[Finding]:
    """Ollama variables that do not parse, are stale, unknown, or absurd for the host."""
    for name in _INT_VARS:
        var = ctx.env.get(name)
        if var is not None and _int_var(ctx, name) is None:
            yield _f(
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
            yield _f(
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
        yield _f(
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
            yield _f(
                "env-unknown",
                Severity.INFO,
                var,
                None,
                f"{name} is not a server variable ollama-ops knows"
                + (f"; did you mean {near[0]}?" if near else ""),
                "check the name against Ollama's envconfig/config.go",
            )
    yield from _rule_models_vs_memory(ctx)
    yield from _rule_gomaxprocs(ctx)


def _rule_models_vs_memory(ctx: _Ctx) -> Iterator[Finding]:
    """A light heuristic: ~4 GiB per resident model plus ~1 GiB of KV cache per slot."""
    if ctx.facts is None:
        return
    loaded = _int_var(ctx, "OLLAMA_MAX_LOADED_MODELS")
    parallel = _int_var(ctx, "OLLAMA_NUM_PARALLEL")
    if loaded is None and parallel is None:
        return
    gpus = ctx.facts.gpus
    n_loaded = loaded[1] if loaded and loaded[1] > 0 else (3 * len(gpus) if gpus else 3)
    n_parallel = parallel[1] if parallel and parallel[1] > 0 else 1
    budget = ctx.facts.vram_bytes if gpus else ctx.facts.memory_bytes
    kind = "VRAM" if gpus else "RAM (CPU only)"
    need = n_loaded * (4 * GiB + n_parallel * GiB)
    if need <= budget:
        return
    where = loaded[0] if loaded else parallel[0] if parallel else None
    yield _f(
        "models-exceed-memory",
        Severity.WARNING,
        where,
        None,
        f"OLLAMA_MAX_LOADED_MODELS={n_loaded} x OLLAMA_NUM_PARALLEL={n_parallel} needs about "
        f"{format_size(need)} (4 GiB per small model + 1 GiB KV cache per slot), the host has "
        f"{format_size(budget)} {kind}: models will be evicted or OOM-killed",
        "lower OLLAMA_MAX_LOADED_MODELS and OLLAMA_NUM_PARALLEL (`ollama-ops plan` sizes "
        "them from VRAM and RAM)",
    )


def _rule_gomaxprocs(ctx: _Ctx) -> Iterator[Finding]:
    var = ctx.env.get("GOMAXPROCS")
    if var is None:
        return
    try:
        value = int(var.value.strip())
    except ValueError:
        yield _f(
            "env-not-a-number",
            Severity.WARNING,
            var,
            None,
            f"GOMAXPROCS={var.value} is not a number: Go ignores it",
            "remove GOMAXPROCS",
        )
        return
    if ctx.facts is None:
        yield _f(
            "gomaxprocs-fixed",
            Severity.INFO,
            var,
            None,
            f"GOMAXPROCS={value} is fixed; without host facts it cannot be compared with the CPUs",
            "remove GOMAXPROCS: Go sizes it from the CPU affinity (AllowedCPUs=)",
        )
        return
    cpus = _host_cpus(ctx.facts)
    where = "the host"
    allowed = ctx.value("AllowedCPUs")
    if allowed:
        try:
            pinned = cpus & set(parse_cpu_list(",".join(allowed.split())))
        except FactsError:
            pinned = set()
        if pinned:
            cpus, where = pinned, "AllowedCPUs="
    if value != len(cpus):
        yield _f(
            "gomaxprocs-fixed",
            Severity.WARNING,
            var,
            None,
            f"GOMAXPROCS={value} but {where} has {len(cpus)} CPUs: "
            + ("threads oversubscribe the cores" if value > len(cpus) else "cores sit idle"),
            "remove GOMAXPROCS: Go sizes it from the CPU affinity, and inference threads live "
            "in the runner, which ignores it",
        )


# writability --------------------------------------------------------------


@dataclass(frozen=True)
class _Mount:
    path: str
    writable: bool
    inaccessible: bool
    cause: unit.Assignment | None
    what: str  # e.g. "ProtectSystem=strict"
    tmpfs: bool = False  # an empty file system: only bind mounts below it show anything
    bind: bool = False


def _mounts(ctx: _Ctx) -> list[_Mount]:
    out: list[_Mount] = []
    mode, a = ctx.protect_system()
    what = (
        f"ProtectSystem={mode}"
        if a is not None
        else "DynamicUser=yes (implies ProtectSystem=strict)"
    )
    ro = {
        "strict": ["/"],
        "full": ["/usr", "/boot", "/efi", "/etc"],
        "yes": ["/usr", "/boot", "/efi"],
    }
    for path in ro.get(mode, []):
        out.append(_Mount(path, False, False, a or ctx.last("DynamicUser"), what))
    if mode == "strict":
        for api in ("/dev", "/proc", "/sys"):
            out.append(_Mount(api, True, False, None, "API file systems"))
    if ctx.flag("PrivateTmp") or ctx.dynamic:
        for tmp in ("/tmp", "/var/tmp"):
            out.append(_Mount(tmp, True, False, ctx.last("PrivateTmp"), "PrivateTmp=yes"))
    hmode, ha = ctx.protect_home()
    hwhat = (
        f"ProtectHome={hmode}"
        if ha is not None
        else "DynamicUser=yes (implies ProtectHome=read-only)"
    )
    if hmode != "no":
        for path in ("/home", "/root", "/run/user"):
            out.append(
                _Mount(
                    path,
                    False,
                    hmode == "yes",
                    ha or ctx.last("DynamicUser"),
                    hwhat,
                    tmpfs=hmode == "tmpfs",
                )
            )
    for key, writable, hidden in (
        ("ReadWritePaths", True, False),
        ("ReadOnlyPaths", False, False),
        ("InaccessiblePaths", False, True),
    ):
        for b in ctx.values(key):
            for word in b.value.split():
                out.append(_Mount(_strip_path(word), writable, hidden, b, f"{key}={word}"))
    for key, base in (
        ("StateDirectory", "/var/lib"),
        ("CacheDirectory", "/var/cache"),
        ("LogsDirectory", "/var/log"),
        ("RuntimeDirectory", "/run"),
    ):
        for b in ctx.values(key):
            for word in b.value.split():
                name = word.split(":", 1)[0]
                out.append(_Mount(f"{base}/{name}", True, False, b, f"{key}={word}"))
    for b in ctx.values("BindPaths"):
        for word in b.value.split():
            parts = _strip_path(word).split(":")
            dest = parts[1] if len(parts) > 1 and parts[1].startswith("/") else parts[0]
            out.append(_Mount(dest, True, False, b, f"BindPaths={word}", bind=True))
    return out


def _writable(ctx: _Ctx, path: str) -> _Mount | None:
    """None if the sandbox lets the service write ``path``, else the mount that stops it."""
    mounts = _mounts(ctx)
    # systemd drops every mount below an inaccessible one (namespace.c drop_inaccessible).
    hidden = [m for m in mounts if m.inaccessible and _within(path, m.path)]
    if hidden:
        return min(hidden, key=lambda m: len(m.path))
    covering = [m for m in mounts if _within(path, m.path)]
    for tmpfs in [m for m in covering if m.tmpfs]:
        # Below an empty tmpfs only bind mounts bring a directory back.
        covering = [
            m for m in covering if m.bind or not (_within(m.path, tmpfs.path) and m is not tmpfs)
        ]
    if not covering:
        return None
    depth = max(len(PurePosixPath(m.path).parts) for m in covering)
    deepest = [m for m in covering if len(PurePosixPath(m.path).parts) == depth]
    blocking = [m for m in deepest if not m.writable]
    return blocking[0] if blocking else None


def _restart_loops(ctx: _Ctx) -> bool:
    restart = (ctx.value("Restart") or "no").strip()
    return restart in _RESTARTING


def _rule_paths(ctx: _Ctx) -> Iterator[Finding]:
    """$HOME/.ollama (the key) and the model store must be writable."""
    home, source = ctx.home()
    if home is None:
        yield _f(
            "home-unknown",
            Severity.INFO,
            ctx.last("User"),
            None,
            f"cannot tell the service's $HOME: {source}",
            "pass --facts from the host, or set Environment=HOME=... in the unit",
        )
    else:
        key_dir = f"{home.rstrip('/')}/.ollama"
        stop = _writable(ctx, key_dir)
        if stop is not None:
            loops = _restart_loops(ctx)
            yield _f(
                "home-not-writable",
                Severity.CRITICAL if loops else Severity.ERROR,
                stop.cause,
                stop.what.split("=", 1)[0],
                f"{stop.what} makes {key_dir} "
                + ("inaccessible" if stop.inaccessible else "read-only")
                + f" ($HOME={home}: {source}): `ollama serve` cannot write "
                f"{key_dir}/id_ed25519 and exits 1"
                + (f", and Restart={ctx.value('Restart')} loops" if loops else ""),
                f"add ReadWritePaths={home} (or set Environment=HOME=/var/lib/ollama with "
                "StateDirectory=ollama)",
            )
    models_var = ctx.env.get("OLLAMA_MODELS")
    if models_var is not None and models_var.value.startswith("/"):
        stop = _writable(ctx, models_var.value)
        if stop is not None:
            yield _f(
                "models-not-writable",
                Severity.ERROR,
                models_var,
                None,
                f"OLLAMA_MODELS={models_var.value} is "
                + ("inaccessible" if stop.inaccessible else "read-only")
                + f" under {stop.what}: pulls and creates fail, and the models may be unreadable",
                f"add ReadWritePaths={models_var.value} (or keep the models under $HOME or a "
                "StateDirectory=)",
            )


def _rule_proc(ctx: _Ctx) -> Iterator[Finding]:
    a = ctx.last("ProcSubset")
    if a is not None and a.value.strip() == "pid":
        yield _f(
            "proc-subset-pid",
            Severity.ERROR,
            a,
            None,
            "ProcSubset=pid hides /proc/meminfo, which Ollama reads to size models to memory",
            "set ProcSubset=all (ProtectProc=invisible still hides other processes)",
        )


# devices ------------------------------------------------------------------

_DRIVER_NAMES: tuple[tuple[str, str], ...] = (
    (r"/dev/nvidia-uvm(-tools)?", "nvidia-uvm"),
    (r"/dev/nvidia-caps/.*", "nvidia-caps"),
    (r"/dev/nvidia(ctl|\d+|-modeset)", "nvidia-frontend"),
    (r"/dev/kfd", "kfd"),
    (r"/dev/dri/.*", "drm"),
)


def _allows(spec: str, node: str) -> bool:
    """Whether one DeviceAllow= value grants read+write on ``node``."""
    words = spec.split()
    if not words:
        return False
    target, mode = words[0], (words[1] if len(words) > 1 else "rwm")
    if "r" not in mode or "w" not in mode:
        return False
    if target.startswith("/dev/"):
        return target == node
    if target.startswith("char-"):
        pattern = target[len("char-") :]
        for regex, driver in _DRIVER_NAMES:
            if re.fullmatch(regex, node):
                return fnmatch.fnmatchcase(driver, pattern)
    return False


def _gpu_nodes(facts: HostFacts) -> list[tuple[str, bool]]:
    """(device node, required) for the host's GPUs; not required: only for MIG."""
    nodes: list[tuple[str, bool]] = []
    present = facts.device_nodes
    if facts.nvidia_gpus:
        nodes += [("/dev/nvidiactl", True), ("/dev/nvidia-uvm", True)]
        numbered = [d for d in present if re.fullmatch(r"/dev/nvidia\d+", d)]
        if not numbered:
            numbered = [f"/dev/nvidia{g.index}" for g in facts.nvidia_gpus]
        nodes += [(d, True) for d in sorted(numbered)]
        nodes += [(d, False) for d in present if d.startswith("/dev/nvidia-caps/")]
    if facts.amd_gpus:
        nodes.append(("/dev/kfd", True))
        render = [d for d in present if d.startswith("/dev/dri/renderD")]
        if not render:
            render = [f"/dev/dri/renderD{128 + g.index}" for g in facts.amd_gpus]
        nodes += [(d, True) for d in sorted(render)]
    return nodes


def _rule_devices(ctx: _Ctx) -> Iterator[Finding]:
    allow = ctx.values("DeviceAllow")
    policy_a = ctx.last("DevicePolicy")
    policy = policy_a.value.strip() if policy_a is not None else "auto"
    if allow and policy == "auto":
        yield _f(
            "device-policy-implicit",
            Severity.WARNING,
            allow[0],
            "DeviceAllow",
            "DeviceAllow= without DevicePolicy=closed: the kernel enforces the list only "
            "implicitly (auto + a list acts as closed), systemd-analyze security counts it as "
            '"no device ACL", and a later DeviceAllow= reset opens every device',
            "add DevicePolicy=closed next to the DeviceAllow= list",
        )
    facts = ctx.facts
    if facts is None or not facts.gpus:
        return
    private = ctx.last("PrivateDevices")
    if private is not None and _bool(private.value):
        yield _f(
            "private-devices-gpu",
            Severity.ERROR,
            private,
            None,
            "PrivateDevices=yes gives the service a /dev without GPU nodes: Ollama finds no "
            "GPU and runs on the CPU",
            "set PrivateDevices=no and list the GPU nodes with DevicePolicy=closed and "
            "DeviceAllow=",
        )
    elif policy in ("closed", "strict") or allow:
        where = policy_a if policy_a is not None else allow[0]
        shown = policy if policy != "auto" else "auto (with a list: closed)"
        denied = [
            (node, required)
            for node, required in _gpu_nodes(facts)
            if not any(_allows(a.value, node) for a in allow)
        ]
        for required in (True, False):
            nodes = [node for node, req in denied if req is required]
            if not nodes:
                continue
            numbered = any(re.fullmatch(r"/dev/nvidia\d+", n) for n in nodes)
            yield _f(
                "gpu-device-denied",
                Severity.ERROR if required else Severity.WARNING,
                where,
                "DeviceAllow",
                f"DevicePolicy={shown} does not allow {', '.join(nodes)} rw: "
                + ("Ollama cannot use the GPU(s) behind them" if required else "MIG is unusable"),
                " ".join(f"DeviceAllow={n} rw" for n in nodes)
                + (" (or DeviceAllow=char-nvidia-frontend rw for every GPU)" if numbered else "")
                + ("" if required else " (or DeviceAllow=char-nvidia-caps rw)"),
            )
    nvidia = bool(facts.nvidia_gpus)
    if nvidia:
        nnp = ctx.nnp()
        mods = ctx.files.boot_modules
        if nnp is not None and mods is not None and "nvidia_uvm" not in mods:
            yield _f(
                "nvidia-uvm-not-loaded",
                Severity.WARNING,
                nnp,
                None,
                (
                    "NoNewPrivileges=yes"
                    if nnp.key == "NoNewPrivileges"
                    else f"{nnp.key}={nnp.value} implies NoNewPrivileges=yes"
                )
                + ": the setuid nvidia-modprobe "
                "cannot load nvidia_uvm on first GPU use, and no modules-load.d entry loads it "
                "at boot: after a reboot Ollama may find no GPU",
                "list nvidia and nvidia_uvm in /etc/modules-load.d/nvidia.conf "
                "(`ollama-ops apply` writes it)",
            )
    mdwe = ctx.last("MemoryDenyWriteExecute")
    if mdwe is not None and _bool(mdwe.value):
        yield _f(
            "mdwe-gpu",
            Severity.WARNING,
            mdwe,
            None,
            "MemoryDenyWriteExecute=yes on a GPU host: CUDA and ROCm map writable+executable "
            "code, so GPU runners can fail to start",
            "remove MemoryDenyWriteExecute= (keep it only on CPU-only hosts)",
        )
    if facts.amd_gpus:
        yield from _rule_amd_groups(ctx)
    pu = ctx.last("PrivateUsers")
    if facts.amd_gpus and pu is not None and _bool(pu.value):
        yield _f(
            "private-users-amd",
            Severity.ERROR,
            pu,
            None,
            "PrivateUsers=yes on an AMD host: /dev/kfd and /dev/dri are reached through the "
            "render/video groups, which are unmapped in the user namespace",
            "remove PrivateUsers= on ROCm hosts",
        )


def _rule_amd_groups(ctx: _Ctx) -> Iterator[Finding]:
    """ROCm opens /dev/kfd and /dev/dri/renderD* through the render (or video) group."""
    wanted = {"render", "video"}
    extra = set(_words(ctx.values("SupplementaryGroups")))
    group = ctx.value("Group")
    if extra & wanted or (group in wanted):
        return
    groups = ctx.files.groups
    if ctx.dynamic:
        why = "DynamicUser=yes belongs to no group"
        where = ctx.last("DynamicUser")
    elif (
        groups is None
        or not ctx.non_root
        or any(ctx.user in groups.get(g, frozenset()) for g in wanted)
    ):
        return
    else:
        why = f"user {ctx.user} is in neither render nor video (/etc/group)"
        where = ctx.last("User")
    yield _f(
        "amd-no-render-group",
        Severity.ERROR,
        where,
        "SupplementaryGroups",
        f"{why}: ROCm cannot open /dev/kfd or /dev/dri/renderD*, so Ollama runs on the CPU",
        "add SupplementaryGroups=render video",
    )


# network ------------------------------------------------------------------

_ANY = {"any", "0.0.0.0/0", "::/0"}
_LOOPBACK = {"localhost", "127.0.0.1", "127.0.0.0/8", "::1", "::1/128", "127.0.0.1/32"}


def _words(assignments: Iterable[unit.Assignment]) -> list[str]:
    return [w for a in assignments for w in a.value.split()]


def _rule_network(ctx: _Ctx) -> Iterator[Finding]:
    deny = _words(ctx.values("IPAddressDeny"))
    allow = _words(ctx.values("IPAddressAllow"))
    deny_all = any(w in _ANY for w in deny) or {"0.0.0.0/0", "::/0"} <= set(deny)
    private_net = ctx.last("PrivateNetwork")
    if private_net is not None and _bool(private_net.value):
        yield _f(
            "private-network",
            Severity.ERROR,
            private_net,
            None,
            "PrivateNetwork=yes gives Ollama its own empty network: no client, not even on "
            "this host, can reach the API",
            "remove PrivateNetwork= and limit clients with IPAddressDeny=any plus IPAddressAllow=",
        )
        return
    if deny_all and not any(w in _LOOPBACK for w in allow):
        where = ctx.values("IPAddressDeny")[-1]
        yield _f(
            "ip-deny-loopback",
            Severity.ERROR,
            where,
            "IPAddressDeny",
            "IPAddressDeny=any without localhost in IPAddressAllow=: the server cannot talk "
            "to its runner on 127.0.0.1, so no model loads",
            "add IPAddressAllow=localhost",
        )
    if deny_all and not any(w in _ANY for w in allow):
        yield _f(
            "ip-deny-blocks-pull",
            Severity.INFO,
            ctx.values("IPAddressDeny")[-1],
            "IPAddressDeny",
            "IPAddressDeny=any also blocks `ollama pull` from the registry",
            "pull through a proxy in IPAddressAllow=, or copy models in",
        )
    host_var = ctx.env.get("OLLAMA_HOST")
    if host_var is None:
        return
    host = _bind_host(host_var.value)
    if _is_loopback(host):
        return
    restricting = [w for w in allow if w not in _ANY and w not in _LOOPBACK]
    shown = host or "every address"
    allowlisted = deny_all and not any(w in _ANY for w in allow)
    if allowlisted and not restricting:
        yield _f(
            "bind-unreachable",
            Severity.INFO,
            host_var,
            None,
            f"OLLAMA_HOST={host_var.value} binds {shown}, but IPAddressAllow= lets only "
            "loopback clients in",
            "list the client networks in IPAddressAllow=, or bind 127.0.0.1",
        )
        return
    if allowlisted:
        return
    firewallish = bool(deny or allow) or any(
        ctx.values(k)
        for k in ("IPIngressFilterPath", "RestrictNetworkInterfaces", "SocketBindAllow")
    )
    yield _f(
        "api-exposed",
        Severity.ERROR if firewallish else Severity.CRITICAL,
        host_var,
        None,
        f"OLLAMA_HOST={host_var.value} serves the unauthenticated API on {shown} with no "
        "IPAddressDeny=any + IPAddressAllow= allow-list"
        + ("" if firewallish else ", and no other network restriction in the unit"),
        "add IPAddressDeny=any and IPAddressAllow=localhost <client networks> (e.g. "
        "10.0.0.0/8), or bind OLLAMA_HOST=127.0.0.1:11434 behind a reverse proxy",
    )


def _families(ctx: _Ctx) -> set[str] | None:
    """The address families allowed by RestrictAddressFamilies=; None: unrestricted."""
    mode: str | None = None
    fams: set[str] = set()
    for a in ctx.values("RestrictAddressFamilies"):
        value = a.value.strip()
        if value == "none":
            mode, fams = "allow", set()
            continue
        invert = value.startswith("~")
        names = set(value.lstrip("~").split())
        if mode is None:
            mode, fams = ("deny" if invert else "allow"), names
        elif mode == "allow":
            fams = fams - names if invert else fams | names
        else:
            fams = fams | names if invert else fams - names
    if mode is None:
        return None
    if mode == "deny":
        return {f for f in ("AF_INET", "AF_INET6", "AF_UNIX") if f not in fams}
    return fams


def _rule_address_families(ctx: _Ctx) -> Iterator[Finding]:
    fams = _families(ctx)
    if fams is None:
        return
    where = ctx.values("RestrictAddressFamilies")[-1]
    host_var = ctx.env.get("OLLAMA_HOST")
    host = _bind_host(host_var.value) if host_var is not None else "127.0.0.1"
    if "AF_INET" not in fams:
        yield _f(
            "address-families",
            Severity.ERROR,
            where,
            None,
            "RestrictAddressFamilies= does not allow AF_INET: Ollama cannot listen on IPv4 or "
            "reach its runner on 127.0.0.1",
            "allow AF_INET AF_INET6 AF_UNIX",
        )
    if "AF_INET6" not in fams:
        v6 = ":" in host
        yield _f(
            "address-families",
            Severity.ERROR if v6 else Severity.INFO,
            where,
            None,
            "RestrictAddressFamilies= does not allow AF_INET6: "
            + (f"Ollama cannot bind {host}" if v6 else "IPv6 clients and binds fail"),
            "allow AF_INET AF_INET6 AF_UNIX",
        )


# restart ------------------------------------------------------------------


def _time(ctx: _Ctx, a: unit.Assignment | None, default: float) -> tuple[float, list[Finding]]:
    if a is None:
        return default, []
    seconds = parse_timespan(a.value)
    if seconds is None:
        return default, [
            _f(
                "invalid-value",
                Severity.WARNING,
                a,
                None,
                f"{a.key}={a.value} is not a time span; systemd ignores the line",
                f"write {a.key}= in seconds or with a unit, e.g. 10s or 5min",
            )
        ]
    return seconds, []


def _effective_start_limit(ctx: _Ctx, names: tuple[str, ...]) -> unit.Assignment | None:
    """The last assignment systemd honours among the spellings/sections of one setting."""
    found: unit.Assignment | None = None
    for a in ctx.u.assignments:
        if a.key not in names:
            continue
        d = directives.lookup(a.key)
        since = d.accepted_in(a.section) if d is not None else None
        if since is not None and since <= ctx.version:
            found = a if a.value != "" else None
    return found


def _restart_delays(ctx: _Ctx, base: float, count: int) -> list[float]:
    """Delays before restarts 1..count, with RestartSteps= back-off where supported."""
    steps_a = ctx.last("RestartSteps")
    max_a = ctx.last("RestartMaxDelaySec")
    steps = 0
    if steps_a is not None and directives.supported("RestartSteps", ctx.version):
        try:
            steps = int(steps_a.value)
        except ValueError:
            steps = 0
    top = parse_timespan(max_a.value) if max_a is not None else None
    if (
        steps <= 0
        or top is None
        or not directives.supported("RestartMaxDelaySec", ctx.version)
        or not math.isfinite(top)
        or top <= base
        or base <= 0
    ):
        return [base] * count
    return [top if n >= steps else base * (top / base) ** (n / steps) for n in range(count)]


def _rule_restart(ctx: _Ctx) -> Iterator[Finding]:
    restart_a = ctx.last("Restart")
    restart = restart_a.value.strip() if restart_a is not None else "no"
    if restart not in _RESTARTING:
        yield _f(
            "restart-never",
            Severity.WARNING,
            restart_a,
            "Restart",
            f"Restart={restart}: after a crash or an OOM kill Ollama stays down",
            "set Restart=on-failure with RestartSec=5 and a start limit in [Unit] "
            "(StartLimitIntervalSec=600, StartLimitBurst=5)",
        )
        return
    rs_a = ctx.last("RestartSec")
    restart_sec, bad = _time(ctx, rs_a, DEFAULT_RESTART_SEC)
    yield from bad
    int_a = _effective_start_limit(ctx, ("StartLimitIntervalSec", "StartLimitInterval"))
    interval, bad = _time(ctx, int_a, DEFAULT_START_LIMIT_INTERVAL)
    yield from bad
    burst_a = _effective_start_limit(ctx, ("StartLimitBurst",))
    burst = DEFAULT_START_LIMIT_BURST
    if burst_a is not None:
        try:
            burst = int(burst_a.value)
        except ValueError:
            yield _f(
                "invalid-value",
                Severity.WARNING,
                burst_a,
                None,
                f"StartLimitBurst={burst_a.value} is not a whole number; systemd ignores it",
                "write StartLimitBurst=5 in [Unit]",
            )
    where = restart_a
    interval_text = (
        f"StartLimitIntervalSec={int_a.value}"
        if int_a is not None
        else f"the default {DEFAULT_START_LIMIT_INTERVAL:g} s start-limit window"
    )
    fix_limit = (
        "put StartLimitIntervalSec=600 and StartLimitBurst=5 in [Unit] and keep "
        "RestartSec= x StartLimitBurst= well below the interval"
    )
    if interval == 0 or burst == 0:
        yield _f(
            "restart-loop-forever",
            Severity.WARNING,
            int_a if interval == 0 else burst_a,
            None,
            f"Restart={restart} with the start limit disabled: a service that cannot start "
            "(e.g. an unwritable $HOME) restarts forever",
            fix_limit,
        )
        return
    if burst == 1:
        yield _f(
            "restart-gives-up",
            Severity.WARNING,
            burst_a,
            None,
            "StartLimitBurst=1: the first automatic restart inside the window is refused, so "
            "one crash leaves Ollama down",
            "set StartLimitBurst=5 in [Unit]",
        )
        return
    delays = _restart_delays(ctx, restart_sec, burst)
    span = sum(delays)
    if span >= interval:
        yield _f(
            "restart-loop-forever",
            Severity.WARNING,
            where,
            "Restart",
            f"Restart={restart} with RestartSec={rs_a.value if rs_a else '100ms'}: {burst} "
            f"restarts take at least {span:g} s, longer than {interval_text}, so the start "
            "limit can never trip and a broken start loops forever",
            fix_limit,
        )


# misc ---------------------------------------------------------------------


def _rule_service(ctx: _Ctx) -> Iterator[Finding]:
    if not ctx.values("ExecStart"):
        yield _f(
            "no-execstart",
            Severity.ERROR,
            None,
            "ExecStart",
            "no ExecStart=: systemd refuses to load the service",
            "set ExecStart=/usr/local/bin/ollama serve",
        )
    type_a = ctx.last("Type")
    if type_a is not None and type_a.value.strip() in ("notify", "notify-reload", "dbus"):
        yield _f(
            "type-never-ready",
            Severity.ERROR,
            type_a,
            None,
            f"Type={type_a.value}: Ollama never signals readiness, so the start times out",
            "set Type=exec (or simple)",
        )
    wd = ctx.last("WatchdogSec")
    if wd is not None and parse_timespan(wd.value) not in (None, 0.0):
        yield _f(
            "watchdog",
            Severity.ERROR,
            wd,
            None,
            f"WatchdogSec={wd.value}: Ollama never sends WATCHDOG=1, so systemd kills it "
            "after that time",
            "remove WatchdogSec=",
        )
    if not ctx.non_root:
        yield _f(
            "runs-as-root",
            Severity.ERROR,
            ctx.last("User"),
            "User",
            "the service runs as root: a bug in the API or a runner owns the host",
            "set User=ollama and Group=ollama (the installer's account) or DynamicUser=yes",
        )
    mode, _a = ctx.protect_system()
    if mode == "no":
        yield _f(
            "no-filesystem-protection",
            Severity.WARNING,
            ctx.last("ProtectSystem"),
            "ProtectSystem",
            "no ProtectSystem=: the service may write everywhere its user may, and gets no sandbox",
            "apply ollama-ops' drop-in (ProtectSystem=strict with ReadWritePaths= for $HOME "
            "and the models)",
        )


def _rule_env_files(ctx: _Ctx) -> Iterator[Finding]:
    by_spec: dict[str, list[EnvFile]] = {}
    for ef in ctx.files.env_files:
        by_spec.setdefault(ef.spec, []).append(ef)
    for a in ctx.values("EnvironmentFile"):
        for ef in by_spec.get(a.value, []):
            if ef.missing and not a.value.startswith("-"):
                yield _f(
                    "env-file-missing",
                    Severity.ERROR,
                    a,
                    None,
                    f"EnvironmentFile={a.value} does not exist: the unit fails to start "
                    '("Failed to load environment files")',
                    f"create {ef.path}, or write EnvironmentFile=-{ef.path} to make it optional",
                )
            elif ef.error is not None:
                yield _f(
                    "env-file-unreadable",
                    Severity.WARNING,
                    a,
                    None,
                    f"EnvironmentFile={a.value} cannot be read here ({ef.error}); its "
                    "variables are not audited",
                    "run the audit as root",
                )


_RULES: tuple[Callable[[_Ctx], Iterator[Finding]], ...] = (
    _rule_keys,
    _rule_env_files,
    _rule_service,
    _rule_memory,
    _rule_cpus,
    _rule_gpu_env,
    _rule_ollama_env,
    _rule_paths,
    _rule_proc,
    _rule_devices,
    _rule_network,
    _rule_address_families,
    _rule_restart,
)


def check(
    effective: unit.EffectiveUnit,
    facts: HostFacts | None,
    systemd_version: int,
    files: RootFiles | None = None,
) -> list[Finding]:
    """Every rule over the effective unit; pure. Worst first, then by file and line."""
    if effective.masked:
        return [
            _f(
                "unit-masked",
                Severity.CRITICAL,
                None,
                None,
                f"{effective.name} is masked ({effective.fragment}): it cannot start",
                f"systemctl unmask {effective.name}",
            )
        ]
    ctx = _Ctx(effective, facts, systemd_version, files or RootFiles())
    found: list[Finding] = []
    for rule in _RULES:
        found.extend(rule(ctx))
    return sorted(found, key=lambda f: (-f.severity, f.file or "", f.line or 0, f.id))


# ------------------------------------------------------------------ edge


def _host(root: Path, inside: str) -> Path:
    return root / inside.lstrip("/")


def _parse_env_file(text: str) -> list[tuple[int, str, str]]:
    """KEY=VALUE lines as systemd reads them (comments, quotes, 'export' not allowed)."""
    out: list[tuple[int, str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            inner = value[1:-1]
            if value[0] == '"':
                inner = re.sub(r'\\(["\\`$])', r"\1", inner)
            value = inner
        out.append((number, name, value))
    return out


def _read_env_files(root: Path, effective: unit.EffectiveUnit) -> list[EnvFile]:
    out: list[EnvFile] = []
    for a in effective.values(_SVC, "EnvironmentFile"):
        spec = a.value
        inside = spec.lstrip("-")
        if not inside.startswith("/"):
            continue
        if any(c in inside for c in "*?["):
            matches = sorted(glob.glob(str(_host(root, inside))))
            paths = ["/" + str(Path(m).relative_to(root)) for m in matches]
            if not paths:
                out.append(EnvFile(spec, inside, missing=True))
        else:
            paths = [inside]
        for path in paths:
            host = _host(root, path)
            try:
                text = host.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                out.append(EnvFile(spec, path, missing=True))
                continue
            except OSError as exc:
                out.append(EnvFile(spec, path, error=exc.strerror or str(exc)))
                continue
            out.append(EnvFile(spec, path, tuple(_parse_env_file(text))))
    return out


_MODULES_LOAD_DIRS = (
    "etc/modules-load.d",
    "run/modules-load.d",
    "usr/local/lib/modules-load.d",
    "usr/lib/modules-load.d",
    "lib/modules-load.d",
)
_MODPROBE_DIRS = ("etc/modprobe.d", "run/modprobe.d", "usr/lib/modprobe.d", "lib/modprobe.d")


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [
        line.strip() for line in text.splitlines() if line.strip() and line.strip()[0] not in "#;"
    ]


def _conf_files(root: Path, dirs: Iterable[str]) -> list[Path]:
    chosen: dict[str, Path] = {}
    for rel in dirs:
        directory = root / rel
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = directory / name
    return [chosen[n] for n in sorted(chosen)]


def _boot_modules(root: Path) -> frozenset[str]:
    mods: set[str] = set()
    for path in [*_conf_files(root, _MODULES_LOAD_DIRS), root / "etc" / "modules"]:
        mods.update(_norm_module(line.split()[0]) for line in _lines(path))
    # nvidia itself is loaded by udev for the PCI device; a softdep pulls uvm in with it.
    for path in _conf_files(root, _MODPROBE_DIRS):
        for line in _lines(path):
            words = line.split()
            if len(words) >= 3 and words[0] == "softdep" and _norm_module(words[1]) == "nvidia":
                post = words[words.index("post:") + 1 :] if "post:" in words else []
                mods.update(_norm_module(w) for w in post if not w.endswith(":"))
    return frozenset(mods)


def _homes(root: Path) -> dict[str, str]:
    homes: dict[str, str] = {}
    for line in _lines(root / "etc" / "passwd"):
        fields = line.split(":")
        if len(fields) >= 6:
            homes.setdefault(fields[0], fields[5])
    return homes


def _groups(root: Path) -> dict[str, frozenset[str]] | None:
    path = root / "etc" / "group"
    if not path.is_file():
        return None
    groups: dict[str, frozenset[str]] = {}
    for line in _lines(path):
        fields = line.split(":")
        if len(fields) >= 4:
            groups[fields[0]] = frozenset(m for m in fields[3].split(",") if m)
    return groups


def read_root_files(root: Path, effective: unit.EffectiveUnit) -> RootFiles:
    """Read the files under ``root`` that ``check`` needs for this unit."""
    return RootFiles(
        env_files=tuple(_read_env_files(root, effective)),
        boot_modules=_boot_modules(root),
        homes=_homes(root),
        groups=_groups(root),
    )


def _exposure_severity(score: float) -> Severity:
    if score <= 2:
        return Severity.INFO
    if score <= 5:
        return Severity.WARNING
    if score <= 7.5:
        return Severity.ERROR
    return Severity.CRITICAL


def _exposure(root: Path, unit_name: str) -> tuple[float | None, Finding]:
    try:
        score = systemd.security_offline(root, unit_name)
    except CommandError as exc:
        return None, Finding(
            "exposure-unavailable",
            Severity.INFO,
            None,
            None,
            None,
            f"no exposure score: {exc}",
            "install systemd (systemd-analyze) to get `systemd-analyze security --offline`",
        )
    scored: list[tuple[float, str]] = []
    for row in score.findings:
        value, name = row.get("exposure"), row.get("name")
        if isinstance(value, int | float) and name:
            scored.append((float(value), str(name)))
    top = ", ".join(name for _value, name in sorted(scored, key=lambda r: -r[0])[:3])
    return score.exposure, Finding(
        "exposure",
        _exposure_severity(score.exposure),
        None,
        None,
        None,
        f"systemd-analyze security --offline: exposure {score.exposure:.1f} of 10"
        + (f" (largest: {top})" if top else ""),
        (
            "none needed; `ollama-ops plan` explains each directive left weaker than the maximum"
            if score.exposure <= 2
            else "apply ollama-ops' hardened drop-in (`ollama-ops apply`), or add the directives "
            f"`systemd-analyze security {unit_name}` marks with a cross"
        ),
    )


def audit(
    root: Path,
    unit_name: str = "ollama.service",
    facts: HostFacts | None = None,
    *,
    systemd_version: int | None = None,
    with_exposure: bool = True,
) -> Report:
    """Load ``unit_name`` under ``root``, run every rule and the exposure score."""
    effective = unit.load_effective(root, unit_name)
    if effective.fragment is None:
        raise OpsError(f"{unit_name} not found under {root}; install ollama or pass --root")
    version = systemd_version
    if version is None and facts is not None:
        version = facts.systemd_version
    if version is None:
        version = systemd.installed_version() or 252
    findings = check(effective, facts, version, read_root_files(root, effective))
    exposure: float | None = None
    if with_exposure and not effective.masked:
        exposure, finding = _exposure(root, unit_name)
        findings.append(finding)
        findings.sort(key=lambda f: (-f.severity, f.file or "", f.line or 0, f.id))
    return Report(
        unit=unit_name,
        fragment=effective.fragment,
        dropins=effective.dropins,
        findings=tuple(findings),
        exposure=exposure,
    )


def format_text(report: Report) -> str:
    """A table: severity, id, file:line, directive, message, fix; one finding per line."""
    head = [f"{report.unit}: {report.fragment}"]
    head += [f"  drop-in: {d}" for d in report.dropins]
    if report.exposure is not None:
        head.append(f"  exposure: {report.exposure:.1f}")
    if not report.findings:
        return "\n".join([*head, "no findings"]) + "\n"
    rows = [
        (
            f.severity.label.upper(),
            f.id,
            f"{f.file}:{f.line}" if f.file else "-",
            f.directive or "-",
            f.message,
            f"fix: {f.fix}",
        )
        for f in report.findings
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] + " -- " + r[5]
        for r in rows
    ]
    counts = {s: sum(1 for f in report.findings if f.severity is s) for s in Severity}
    summary = ", ".join(f"{n} {s.label}" for s, n in sorted(counts.items(), reverse=True) if n)
    return "\n".join([*head, *lines, f"worst: {report.worst().label} ({summary})"]) + "\n"
