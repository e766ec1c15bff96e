"""The effective unit as every rule sees it: lookups, environment, identity, sandbox.

``Ctx`` wraps an effective unit (fragment + drop-ins) with the host facts, the
systemd version and the ``RootFiles`` read beside it, and answers what systemd
would make of it: the last assignment of a key, the environment Ollama starts
with (Environment= overridden by EnvironmentFile=), the user and its $HOME,
the ProtectSystem=/ProtectHome= mode in force (DynamicUser= implies some), what
turns NoNewPrivileges= on, and whether the service restarts. ``finding`` builds
a ``Finding`` located at an assignment or variable. Pure: the files under the
root arrive already read (see ``rootfiles``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ollama_ops.audit.model import Finding, Severity
from ollama_ops.audit.values import parse_bool, parse_go_int
from ollama_ops.model.facts import INSTALLER_HOME, HostFacts
from ollama_ops.unitfile import effective as effective_mod
from ollama_ops.unitfile import syntax as unit

SERVICE = "Service"
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
# ProtectSystem=/ProtectHome=: the modes named as such, and the one DynamicUser= implies.
_PROTECT_MODES = {
    "ProtectSystem": (("strict", "full"), "strict"),
    "ProtectHome": (("read-only", "tmpfs"), "read-only"),
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


@dataclass(frozen=True)
class Var:
    name: str
    value: str
    file: str
    line: int
    via: str  # "Environment" or "EnvironmentFile"


class Ctx:
    """The effective unit with the lookups every rule needs."""

    def __init__(
        self,
        effective: effective_mod.EffectiveUnit,
        facts: HostFacts | None,
        version: int,
        files: RootFiles,
    ) -> None:
        self.u = effective
        self.facts = facts
        self.version = version
        self.files = files
        self.env = self._environment()

    def last(self, key: str, section: str = SERVICE) -> unit.Assignment | None:
        return self.u.last(section, key)

    def value(self, key: str, section: str = SERVICE) -> str | None:
        a = self.last(key, section)
        return None if a is None else a.value

    def values(self, key: str, section: str = SERVICE) -> list[unit.Assignment]:
        return self.u.values(section, key)

    def words(self, key: str) -> list[str]:
        """The space-separated words of every assignment of a list setting, in order."""
        return [w for a in self.values(key) for w in a.value.split()]

    def enabled(self, key: str) -> unit.Assignment | None:
        """The last assignment of a boolean setting if it turns the setting on, else None."""
        a = self.last(key)
        return a if a is not None and parse_bool(a.value) else None

    def flag(self, key: str) -> bool:
        return self.enabled(key) is not None

    # environment ------------------------------------------------------
    def env_files(self) -> Iterator[tuple[unit.Assignment, EnvFile]]:
        """Each EnvironmentFile= assignment with the files it named, in order."""
        by_spec: dict[str, list[EnvFile]] = {}
        for ef in self.files.env_files:
            by_spec.setdefault(ef.spec, []).append(ef)
        for a in self.values("EnvironmentFile"):
            for ef in by_spec.get(a.value, []):
                yield a, ef

    def _environment(self) -> dict[str, Var]:
        env: dict[str, Var] = {}
        for a in self.u.assignments:
            if a.section != SERVICE or a.key != "Environment":
                continue
            if a.value == "":
                env.clear()
                continue
            for name, val in unit.parse_environment([a.value]).items():
                env[name] = Var(name, val, a.path, a.line, "Environment")
        # EnvironmentFile= wins over Environment= (systemd.exec(5)); files apply in order.
        for _a, ef in self.env_files():
            for line, name, val in ef.entries:
                env[name] = Var(name, val, ef.path, line, "EnvironmentFile")
        return env

    def int_env(self, name: str) -> tuple[Var, int] | None:
        """A variable Ollama reads as a whole number, and that number; None: unset or not one."""
        var = self.env.get(name)
        if var is None:
            return None
        number = parse_go_int(var.value.strip().strip("\"'"))
        return None if number is None else (var, number)

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
    def protection(self, key: str) -> tuple[str, unit.Assignment | None]:
        """The mode of ProtectSystem= or ProtectHome= in force, and its assignment.

        No assignment: the mode DynamicUser= implies, or "no".
        """
        named, implied = _PROTECT_MODES[key]
        a = self.last(key)
        if a is not None:
            low = a.value.strip().lower()
            mode = low if low in named else "yes" if parse_bool(low) else "no"
            if mode != "no" or not self.dynamic:
                return mode, a
        return (implied, None) if self.dynamic else ("no", None)

    def nnp(self) -> unit.Assignment | None:
        """The assignment that makes NoNewPrivileges= apply, if any."""
        a = self.enabled("NoNewPrivileges")
        if a is not None:
            return a
        if not self.non_root:
            return None
        if self.dynamic:
            return self.last("DynamicUser")
        for key in _IMPLY_NNP:
            b = self.last(key)
            if b is not None and parse_bool(b.value) is not False:
                return b
        return None

    # restart ----------------------------------------------------------
    def restart(self) -> str:
        """The Restart= mode as written; "no" when unset."""
        a = self.last("Restart")
        return a.value.strip() if a is not None else "no"

    @property
    def restarts(self) -> bool:
        """Whether systemd restarts the service after it exits with an error."""
        return self.restart() in _RESTARTING


def finding(  # noqa: PLR0917 - every rule builds findings positionally, in field order
    fid: str,
    sev: Severity,
    where: unit.Assignment | Var | None,
    directive: str | None,
    message: str,
    fix: str,
) -> Finding:
    """A finding at an assignment or variable (its file, line and name), or at the unit."""
    if isinstance(where, Var):
        return Finding(fid, sev, where.file, where.line, directive or where.name, message, fix)
    if where is None:
        return Finding(fid, sev, None, None, directive, message, fix)
    return Finding(fid, sev, where.path, where.line, directive or where.key, message, fix)
