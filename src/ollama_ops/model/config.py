"""The operator's deployment config (TOML), validated into a frozen dataclass.

Every key is one row of ``SETTINGS`` (section, key, parser, default, help,
example), mkosi's ``ConfigSetting``: parsing, defaults, the "did you mean"
suggestions, ``ollama-ops config keys`` and the README's table all come from
it. Sections that are not key/value tables (``[environment]``) have their own
parser in ``SECTIONS``. Values that end up in a
unit file are checked again by ``unit.render``; here they are checked for
meaning (sizes, percentages, addresses, paths).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollama_ops.errors import ConfigError
from ollama_ops.gpu import spec as gpu_spec
from ollama_ops.logs import spec as logs_spec
from ollama_ops.model.bind import validate_bind
from ollama_ops.unitfile.syntax import is_plain_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/ollama-ops/ollama-ops.toml")
DEFAULT_BIND = "127.0.0.1:11434"

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_size(value: object, where: str) -> int:
    """Bytes from an int or a string like "48G", "512MiB", "1.5T" (powers of 1024)."""
    if isinstance(value, bool):
        raise ConfigError(f'{where} = {value!r} is not a size; write bytes or e.g. "48G"')
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(f'{where} = {value} must be positive; write e.g. "48G"')
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            number = float(match.group(1)) * _SIZE_FACTORS[match.group(2).upper()]
            if number >= 1:
                return int(number)
    raise ConfigError(f'{where} = {value!r} is not a size; write bytes or e.g. "48G", "512M"')


def format_size(num_bytes: int) -> str:
    """Human form for messages: 51539607552 -> "48.0 GiB"."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


# ---------------------------------------------------------------- value parsers
def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} = {value!r} must be a string")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"{where} = {value!r} contains a control character (newline?); remove it")
    return value


def _path(value: object, where: str) -> str:
    text = _str(value, where)
    if not is_plain_path(text):
        raise ConfigError(
            f"{where} = {text!r} must be an absolute path of letters, digits and ._/@+- "
            "(no spaces, '%', '..' or quotes)"
        )
    return text.rstrip("/") or "/"


# Making one of these writable would undo ProtectSystem=strict for the whole OS.
_SYSTEM_DIRS = frozenset(
    {"/", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/proc", "/sys", "/dev"}
    | {"/run", "/var", "/var/lib", "/usr/local", "/usr/lib", "/usr/share", "/home", "/root"}
)


def _writable_path(value: object, where: str) -> str:
    path = _path(value, where)
    if path in _SYSTEM_DIRS:
        raise ConfigError(
            f"{where} = {path!r} would make a system directory writable; name a directory "
            "of its own, e.g. /srv/ollama/models"
        )
    return path


def _percent(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
        raise ConfigError(f"{where} = {value!r} must be a percentage between 0 and 100")
    return float(value)


def _positive_int(value: object, where: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ConfigError(f"{where} = {value!r} must be a whole number from 1 to {maximum}")
    return value


def _network(value: object, where: str) -> str:
    text = _str(value, where)
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError as exc:
        raise ConfigError(
            f'{where} = {text!r} is not a network; write CIDR such as "10.0.0.0/8" or an address'
        ) from exc


def _str_list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise ConfigError(f'{where} = {value!r} must be a list, e.g. ["10.0.0.0/8"]')
    return value


def _unit_name(value: object, where: str) -> str:
    unit = _str(value, where)
    if not re.fullmatch(r"[A-Za-z0-9_@:][A-Za-z0-9_.@:-]*\.service", unit) or ".." in unit:
        raise ConfigError(f'{where} = {unit!r} is not a service name; write e.g. "ollama.service"')
    return unit


def _bind(value: object, where: str) -> str:
    text = _str(value, where)
    validate_bind(text, where)
    return text


def _networks(value: object, where: str) -> tuple[str, ...]:
    return tuple(_network(v, f"{where}[{i}]") for i, v in enumerate(_str_list(value, where)))


def _size(value: object, where: str) -> int:
    return parse_size(value, where)


def _cpu_weight(value: object, where: str) -> int:
    return _positive_int(value, where, 10000)


def _nofile(value: object, where: str) -> int:
    return _positive_int(value, where, 1 << 30)


def _allowed_cpus(value: object, where: str) -> str:
    text = _str(value, where)
    if text not in ("auto", "none") and not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", text):
        raise ConfigError(
            f'{where} = {text!r}; write "auto", "none" or a CPU list such as "0-15,32-47"'
        )
    return text


def _names(value: object, where: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(_str_list(value, where)))


def _writable_paths(value: object, where: str) -> tuple[str, ...]:
    return tuple(_writable_path(v, f"{where}[{i}]") for i, v in enumerate(_str_list(value, where)))


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class ConfigSetting:
    """One key of the config file: how to parse it, its default and what it means."""

    section: str
    key: str
    parse: Callable[[object, str], Any]
    default: Any
    help: str
    example: str  # a TOML value, shown by `config keys` and the README

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}"


SETTINGS: tuple[ConfigSetting, ...] = (
    ConfigSetting("service", "unit", _unit_name, "ollama.service",
                  "the service to configure", '"ollama.service"'),
    ConfigSetting("service", "bind", _bind, DEFAULT_BIND,
                  "OLLAMA_HOST; a non-loopback address needs allowed_networks", '"0.0.0.0:11434"'),
    ConfigSetting("service", "allowed_networks", _networks, (),
                  "client networks let through IPAddressAllow=", '["10.0.0.0/8"]'),
    ConfigSetting("service", "models_dir", _writable_path, None,
                  "the model store (OLLAMA_MODELS); needs an ollama user", '"/srv/ollama/models"'),
    ConfigSetting("service", "binary", _path, None,
                  "the ollama binary ExecStart= runs", '"/usr/local/bin/ollama"'),
    ConfigSetting("limits", "os_reserve", _size, None,
                  "RAM kept for the OS before the percentages (default 4G, or RAM/4)", '"4G"'),
    ConfigSetting("limits", "memory_high", _size, None,
                  "MemoryHigh= as a size, instead of the percentage rule", '"48G"'),
    ConfigSetting("limits", "memory_max", _size, None,
                  "MemoryMax= as a size, instead of the percentage rule", '"56G"'),
    ConfigSetting("limits", "memory_high_percent", _percent, 80.0,
                  "MemoryHigh= as a share of RAM after the OS reserve", "80"),
    ConfigSetting("limits", "memory_max_percent", _percent, 93.0,
                  "MemoryMax= as a share of RAM after the OS reserve", "93"),
    ConfigSetting("limits", "cpu_weight", _cpu_weight, None,
                  "CPUWeight= (1-10000; rule: 150)", "150"),
    ConfigSetting("limits", "allowed_cpus", _allowed_cpus, None,
                  '"auto" (the GPUs\' NUMA node), "none", or a CPU list', '"0-15"'),
    ConfigSetting("limits", "nofile", _nofile, None,
                  "LimitNOFILE= (rule: 65536)", "65536"),
    ConfigSetting("hardening", "relax", _names, (),
                  "directives to leave at systemd's default", '["MemoryDenyWriteExecute"]'),
    ConfigSetting("hardening", "read_write_paths", _writable_paths, (),
                  "more directories the service may write", '["/srv/cache"]'),
    ConfigSetting("gpu", "persistence", gpu_spec.parse_persistence, True,
                  "`gpu apply`: persistence mode on (nvidia-smi -pm 1)", "true"),
    ConfigSetting("gpu", "power_limit", gpu_spec.parse_power, None,
                  "`gpu apply`: watts or % of the card's default, inside its range", '"90%"'),
    ConfigSetting("gpu", "lock_clocks", gpu_spec.parse_clock, None,
                  "`gpu apply`: lock graphics clocks to a supported MHz, or \"max\"", "1410"),
    ConfigSetting("gpu", "gpus", gpu_spec.parse_gpu_indexes, None,
                  "`gpu apply`: which GPUs (nvidia-smi indexes; default all)", "[0, 1]"),
    ConfigSetting("logs", "rate_limit_interval", logs_spec.parse_span, "30s",
                  "LogRateLimitIntervalSec= (systemd 240+)", '"30s"'),
    ConfigSetting("logs", "rate_limit_burst", logs_spec.parse_burst, 5000,
                  "LogRateLimitBurst= per interval (0: no limit)", "5000"),
    ConfigSetting("logs", "filter_probes", logs_spec.parse_flag, True,
                  "LogFilterPatterns= drops 200s of health probes (systemd 253+)", "true"),
    ConfigSetting("logs", "namespace", logs_spec.parse_namespace, None,
                  "LogNamespace=: the service's own journal (journalctl --namespace=)", '"ollama"'),
    ConfigSetting("logs", "namespace_max_use", logs_spec.parse_journal_size, "2G",
                  "SystemMaxUse= of the namespace's journal", '"2G"'),
    ConfigSetting("logs", "namespace_retention", logs_spec.parse_span, "14day",
                  "MaxRetentionSec= of the namespace's journal", '"14day"'),
    ConfigSetting("logs", "global_limits", logs_spec.parse_flag, False,
                  "the guide's journald.conf.d limits for the whole journal", "false"),
)  # fmt: skip

_BY_SECTION: dict[str, dict[str, ConfigSetting]] = {}
for _row in SETTINGS:
    _BY_SECTION.setdefault(_row.section, {})[_row.key] = _row


def default(dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    return _BY_SECTION[section][key].default


# ---------------------------------------------------------------- the sections


@dataclass(frozen=True)
class ServiceConfig:
    unit: str = default("service.unit")
    bind: str = default("service.bind")
    allowed_networks: tuple[str, ...] = default("service.allowed_networks")
    models_dir: str | None = default("service.models_dir")
    binary: str | None = default("service.binary")


@dataclass(frozen=True)
class LimitsConfig:
    os_reserve: int | None = default("limits.os_reserve")
    memory_high: int | None = default("limits.memory_high")
    memory_max: int | None = default("limits.memory_max")
    memory_high_percent: float = default("limits.memory_high_percent")
    memory_max_percent: float = default("limits.memory_max_percent")
    cpu_weight: int | None = default("limits.cpu_weight")
    allowed_cpus: str | None = default("limits.allowed_cpus")
    nofile: int | None = default("limits.nofile")


@dataclass(frozen=True)
class HardeningConfig:
    relax: tuple[str, ...] = default("hardening.relax")
    read_write_paths: tuple[str, ...] = default("hardening.read_write_paths")


@dataclass(frozen=True)
class GpuConfig:
    persistence: bool = default("gpu.persistence")
    power_limit: gpu_spec.PowerSpec | None = default("gpu.power_limit")  # noqa: RUF009 (None)
    lock_clocks: gpu_spec.ClockSpec | None = default("gpu.lock_clocks")  # noqa: RUF009 (None)
    gpus: tuple[int, ...] | None = default("gpu.gpus")


@dataclass(frozen=True)
class LogsConfig:
    rate_limit_interval: str = default("logs.rate_limit_interval")
    rate_limit_burst: int = default("logs.rate_limit_burst")
    filter_probes: bool = default("logs.filter_probes")
    namespace: str | None = default("logs.namespace")
    namespace_max_use: str = default("logs.namespace_max_use")
    namespace_retention: str = default("logs.namespace_retention")
    global_limits: bool = default("logs.global_limits")


@dataclass(frozen=True)
class DeploymentConfig:
    service: ServiceConfig = field(default_factory=ServiceConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    environment: Mapping[str, str] = field(default_factory=dict)
    hardening: HardeningConfig = field(default_factory=HardeningConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    source: str | None = None  # where it was read from, for messages
    # Dotted names of the keys the operator set, so `plan` can say "from the file".
    set_keys: frozenset[str] = frozenset()


def _suggest(key: str, known: set[str] | frozenset[str]) -> str:
    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
    if near:
        return f"; did you mean {near[0]!r}?"
    return f"; known keys: {', '.join(sorted(known))}"


def _check_keys(table: Mapping[str, Any], known: frozenset[str], where: str, src: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{src}: unknown key {where}{key}{_suggest(key, known)}")


def _keyed(cls: type[Any]) -> Callable[[Mapping[str, Any], str, str], Any]:
    """A section parser for a key/value table whose rows are in SETTINGS."""

    def parse(table: Mapping[str, Any], name: str, src: str) -> Any:
        rows = _BY_SECTION[name]
        _check_keys(table, frozenset(rows), f"{name}.", src)
        return cls(**{k: rows[k].parse(v, f"{src}: {name}.{k}") for k, v in table.items()})

    return parse


def _environment(table: Mapping[str, Any], name: str, src: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for var, raw in table.items():
        where = f"{src}: {name}.{var}"
        if not _ENV_NAME_RE.match(var):
            raise ConfigError(
                f"{where}: {var!r} is not a valid variable name; use letters, digits and _"
            )
        if var == "OLLAMA_HOST":
            raise ConfigError(f"{where}: set the bind address with service.bind, not OLLAMA_HOST")
        if var == "OLLAMA_MODELS":
            env[var] = _writable_path(raw, where)
        elif isinstance(raw, bool):
            env[var] = "1" if raw else "0"
        elif isinstance(raw, int | float):
            env[var] = str(raw)
        else:
            env[var] = _str(raw, where)
    return env


# Every [section] of the file: its parser and what it is for. The field of
# DeploymentConfig has the section's name.
SECTIONS: dict[str, tuple[Callable[[Mapping[str, Any], str, str], Any], str]] = {
    "service": (_keyed(ServiceConfig), "the service: unit, bind address, model store"),
    "limits": (_keyed(LimitsConfig), "memory, CPU and file limits"),
    "environment": (_environment, "any other variable for ollama serve"),
    "hardening": (_keyed(HardeningConfig), "what the sandbox leaves open"),
    "gpu": (_keyed(GpuConfig), "GPU power and clocks for `ollama-ops gpu`"),
    "logs": (_keyed(LogsConfig), "journal limits, probe filter and namespace"),
}


def _check_limits(limits: LimitsConfig, src: str) -> None:
    if limits.memory_high and limits.memory_max and limits.memory_high > limits.memory_max:
        raise ConfigError(
            f"{src}: limits.memory_high ({format_size(limits.memory_high)}) is above "
            f"limits.memory_max ({format_size(limits.memory_max)}); MemoryHigh must be at most "
            "MemoryMax"
        )
    if limits.memory_high_percent > limits.memory_max_percent:
        raise ConfigError(
            f"{src}: limits.memory_high_percent ({limits.memory_high_percent:g}) is above "
            f"limits.memory_max_percent ({limits.memory_max_percent:g}); lower it"
        )


def from_dict(data: Mapping[str, Any], src: str = "config") -> DeploymentConfig:
    _check_keys(data, frozenset(SECTIONS), "", src)
    parts: dict[str, Any] = {}
    set_keys: set[str] = set()
    for name, (parse, _help) in SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{src}: [{name}] must be a table")
        parts[name] = parse(table, name, src)
        set_keys.update(f"{name}.{k}" for k in table)
    _check_limits(parts["limits"], src)
    return DeploymentConfig(**parts, source=src, set_keys=frozenset(set_keys))


def keys_table() -> str:
    """The config keys as a Markdown table: `ollama-ops config keys` and the README."""
    rows = ["| key | example | what it sets |", "|---|---|---|"]
    for s in SETTINGS:
        rows.append(f"| `{s.dotted}` | `{s.example}` | {s.help} |")
    for name, (_parse, help_text) in SECTIONS.items():
        if name not in _BY_SECTION:
            rows.append(f'| `[{name}]` | `NAME = "value"` | {help_text} |')
    return "\n".join(rows) + "\n"


def loads(text: str, src: str = "config") -> DeploymentConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{src}: not valid TOML ({exc}); fix the syntax at that line") from exc
    return from_dict(data, src)


def load(path: Path | None) -> DeploymentConfig:
    """Read the config; a missing default file means rules only, a missing named one is an error."""
    target = path or DEFAULT_CONFIG_PATH
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        if path is None:
            return DeploymentConfig()
        raise ConfigError(
            f"config file {str(target)!r} not found; pass an existing --config FILE"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config file {str(target)!r} cannot be read ({exc}); check its permissions"
        ) from exc
    return loads(text, str(target))
