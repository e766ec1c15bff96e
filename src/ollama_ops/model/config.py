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
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ollama_ops.errors import ConfigError
from ollama_ops.gpu import spec as gpu_spec
from ollama_ops.logs import spec as logs_spec
from ollama_ops.model.bind import validate_bind
from ollama_ops.model.facts import MAX_MEMORY_BYTES
from ollama_ops.models import spec as models_spec
from ollama_ops.unitfile.grammar import MAX_CPUS, cpu_ranges
from ollama_ops.unitfile.paths import is_plain_path, normalize, writable_problem

if TYPE_CHECKING:
    from ollama_ops.health.settings import WatchConfig
    from ollama_ops.model.instances import FrontDoorConfig, InstanceConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/ollama-ops/ollama-ops.toml")
DEFAULT_BIND = "127.0.0.1:11434"

_SIZE_RE = re.compile(r"\s*([0-9]{1,20}(?:\.[0-9]{1,9})?)\s*([KMGT]?)(i?B)?\s*", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Below this ollama serve cannot run: the server, one runner and the smallest model
# with its context take about half a GiB; the kernel would OOM-kill it at once.
MIN_SERVICE_MEMORY = 512 * 1024**2
# The largest open-file limit Linux accepts (fs.nr_open's ceiling, which systemd
# raises it to at boot); above it setrlimit() fails and the unit exits 205/LIMITS.
MAX_NOFILE = 1073741816
# Below this Ollama runs out of descriptors for its clients, runners and model files.
MIN_NOFILE = 1024


def shown(text: str) -> str:
    """A key or value for a one-line message: as is when plain, else repr, cut short."""
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,60}", text):
        return text
    out = repr(text)
    return out if len(out) <= 62 else out[:60] + "..."


def parse_size(value: object, where: str) -> int:
    """Bytes from an int or a string like "48G", "512MiB", "1.5T" (powers of 1024)."""
    if isinstance(value, bool):
        raise ConfigError(f'{where} = {value!r} is not a size; write bytes or e.g. "48G"')
    number: float | int | None = None
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(f'{where} = {_number(value)} must be positive; write e.g. "48G"')
        number = value
    elif isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        if match:
            number = float(match.group(1)) * _SIZE_FACTORS[match.group(2).upper()]
    if number is None or number < 1:
        raise ConfigError(
            f'{where} = {shown(str(value))} is not a size; write bytes or e.g. "48G", "512M"'
        )
    if number > MAX_MEMORY_BYTES:
        raise ConfigError(
            f"{where} = {_number(value)} is more memory than a Linux host can have "
            f'(4 PiB); write a size such as "48G"'
        )
    return int(number)


def _number(value: object) -> str:
    """A number for a message; a huge one is not printed digit by digit."""
    if isinstance(value, int) and abs(value) >= 10**30:
        return "a number of more than 30 digits"
    return shown(str(value))


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
        raise ConfigError(f"{where} = {_number(value)} must be a string")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise ConfigError(
            f"{where} = {shown(value)} contains a control character (newline?); remove it"
        )
    return value


def _path(value: object, where: str) -> str:
    text = _str(value, where)
    if not is_plain_path(text):
        raise ConfigError(
            f"{where} = {shown(text)} must be an absolute path of letters, digits and ._/@+- "
            "(no spaces, '%', '..' or quotes), at most 4095 bytes"
        )
    return normalize(text)


def writable_path(path: str, where: str) -> str:
    """``path`` normalized, or ConfigError if the service must not write there."""
    norm = normalize(path)
    problem = writable_problem(norm)
    if problem is not None:
        raise ConfigError(
            f"{where} = {shown(path)} would make a system directory writable ({problem}); "
            "name a directory of its own, e.g. /srv/ollama/models"
        )
    return norm


def _writable_path(value: object, where: str) -> str:
    return writable_path(_path(value, where), where)


def _percent(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
        raise ConfigError(f"{where} = {_number(value)} must be a percentage between 0 and 100")
    return float(value)


def _int_in(value: object, where: str, minimum: int, maximum: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConfigError(
            f"{where} = {_number(value)} must be a whole number from {minimum} to {maximum}"
            + (f" ({why})" if why else "")
        )
    return value


def _network(value: object, where: str) -> str:
    text = _str(value, where)
    # ASCII address characters only: ipaddress takes any text after '%' as an IPv6
    # zone, which IPAddressAllow= would read as more words ("fe80::%x any").
    if re.fullmatch(r"[0-9A-Fa-f:.]+(/[0-9]{1,3})?", text):
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
    raise ConfigError(
        f'{where} = {shown(text)} is not a network; write CIDR such as "10.0.0.0/8" or an '
        "address (no IPv6 zone ids)"
    )


def _str_list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise ConfigError(f'{where} = {_number(value)} must be a list, e.g. ["10.0.0.0/8"]')
    return value


def _unit_name(value: object, where: str) -> str:
    unit = _str(value, where)
    if not re.fullmatch(r"[A-Za-z0-9_@:][A-Za-z0-9_.@:-]{0,240}\.service", unit) or ".." in unit:
        raise ConfigError(
            f'{where} = {shown(unit)} is not a service name; write e.g. "ollama.service"'
        )
    return unit


def _bind(value: object, where: str) -> str:
    text = _str(value, where)
    validate_bind(text, where)
    return text


def _networks(value: object, where: str) -> tuple[str, ...]:
    return tuple(_network(v, f"{where}[{i}]") for i, v in enumerate(_str_list(value, where)))


def _size(value: object, where: str) -> int:
    return parse_size(value, where)


def _memory_limit(value: object, where: str) -> int:
    size = parse_size(value, where)
    if size < MIN_SERVICE_MEMORY:
        raise ConfigError(
            f"{where} = {format_size(size)} is below the 512 MiB ollama serve needs to start "
            "(server, runner and the smallest model); the kernel would OOM-kill or stall it; "
            'write at least "1G"'
        )
    return size


def _cpu_weight(value: object, where: str) -> int:
    return _int_in(value, where, 1, 10000)


def _nofile(value: object, where: str) -> int:
    return _int_in(
        value,
        where,
        MIN_NOFILE,
        MAX_NOFILE,
        "below 1024 Ollama runs out of descriptors; above the kernel's fs.nr_open ceiling "
        "the service fails to start with 205/LIMITS",
    )


def _allowed_cpus(value: object, where: str) -> str:
    text = _str(value, where)
    if text in ("auto", "none"):
        return text
    if not re.fullmatch(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*", text) or cpu_ranges(text) is None:
        raise ConfigError(
            f'{where} = {shown(text)}; write "auto", "none" or a CPU list such as "0-15,32-47" '
            f"(ASCII digits, CPUs below {MAX_CPUS})"
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
    ConfigSetting("service", "egress", models_spec.parse_egress, models_spec.EGRESS_CLOSED,
                  '"open" drops IPAddressDeny=any so plain `ollama pull` works (see plan)', '"open"'),
    ConfigSetting("limits", "os_reserve", _size, None,
                  "RAM kept for the OS before the percentages (default 4G, or RAM/4)", '"4G"'),
    ConfigSetting("limits", "memory_high", _memory_limit, None,
                  "MemoryHigh= as a size, instead of the percentage rule", '"48G"'),
    ConfigSetting("limits", "memory_max", _memory_limit, None,
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
    ConfigSetting("models", "pull", models_spec.parse_models, (),
                  "models apply pulls (egress opened only meanwhile)", '["llama3.2:3b"]'),
    ConfigSetting("models", "warm", models_spec.parse_models, (),
                  "models apply pulls and loads, kept for keep_alive", '["llama3.2:3b"]'),
    ConfigSetting("models", "keep_alive", models_spec.parse_keep_alive, "-1",
                  'how long warm models stay loaded ("-1": forever, "30m")', '"-1"'),
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
    egress: str = default("service.egress")


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
class ModelsConfig:
    pull: tuple[str, ...] = default("models.pull")
    warm: tuple[str, ...] = default("models.warm")
    keep_alive: str = default("models.keep_alive")


@dataclass(frozen=True)
class DeploymentConfig:
    service: ServiceConfig = field(default_factory=ServiceConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    environment: Mapping[str, str] = field(default_factory=dict)
    hardening: HardeningConfig = field(default_factory=HardeningConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)  # see ollama_ops.models
    instances: tuple[InstanceConfig, ...] = ()  # [instances.NAME], model/instances.py
    frontdoor: FrontDoorConfig | None = None  # [frontdoor], model/instances.py
    watch: WatchConfig = field(default_factory=lambda: _watch({}, "watch", ""))  # health/settings
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
            raise ConfigError(f"{src}: unknown key {where}{shown(key)}{_suggest(key, known)}")


def _keyed(cls: type[Any]) -> Callable[[Mapping[str, Any], str, str], Any]:
    """A section parser for a key/value table whose rows are in SETTINGS."""

    def parse(table: Mapping[str, Any], name: str, src: str) -> Any:
        rows = _BY_SECTION[name]
        _check_keys(table, frozenset(rows), f"{name}.", src)
        return cls(**{k: rows[k].parse(v, f"{src}: {name}.{k}") for k, v in table.items()})

    return parse


# Variables that decide which code runs inside ollama serve: refused.
_REFUSED_ENV = {
    "OLLAMA_HOST": "set the bind address with service.bind, not OLLAMA_HOST",
    "HOME": "HOME comes from the service user (or the state directory ollama-ops sets up); "
    "Ollama writes its key to $HOME/.ollama, which must be writable: leave HOME out "
    "and set service.models_dir for the models",
    "LD_PRELOAD": "LD_PRELOAD loads a library into ollama serve and every runner, past the "
    "sandbox; install what it provides system-wide instead",
    "LD_AUDIT": "LD_AUDIT loads a library into ollama serve and every runner, past the sandbox",
}


def _env_value(raw: object, where: str) -> str:
    if isinstance(raw, bool):
        return "1" if raw else "0"
    if isinstance(raw, int):
        if abs(raw) >= 2**63:
            raise ConfigError(
                f"{where} = {_number(raw)} is out of range for a number; quote it if you mean "
                "the text"
            )
        return str(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise ConfigError(f"{where} = {raw} is not a finite number; write a number or text")
        return str(raw)
    return _str(raw, where)


def _environment(table: Mapping[str, Any], name: str, src: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for var, raw in table.items():
        where = f"{src}: {name}.{shown(var)}"
        if not _ENV_NAME_RE.fullmatch(var):
            raise ConfigError(
                f"{where}: {shown(var)} is not a valid variable name; use letters, digits and _"
            )
        if var in _REFUSED_ENV:
            raise ConfigError(f"{where}: {_REFUSED_ENV[var]}")
        if var == "OLLAMA_MODELS":
            env[var] = _writable_path(raw, where)
        else:
            env[var] = _env_value(raw, where)
    return env


def _instances(table: Mapping[str, Any], name: str, src: str) -> Any:
    from ollama_ops.model.instances import parse_instances  # it imports this module

    return parse_instances(table, src)


def _watch(table: Mapping[str, Any], name: str, src: str) -> Any:
    from ollama_ops.health.settings import WATCH_KEYS, parse_watch

    _check_keys(table, WATCH_KEYS, f"{name}.", src)
    return parse_watch(table, lambda key: f"{src}: {key}")


def _frontdoor(table: Mapping[str, Any], name: str, src: str) -> Any:
    from ollama_ops.model.instances import parse_frontdoor

    return parse_frontdoor(table, src) if table else None


# Every [section] of the file: its parser and what it is for. The field of
# DeploymentConfig has the section's name.
SECTIONS: dict[str, tuple[Callable[[Mapping[str, Any], str, str], Any], str]] = {
    "service": (_keyed(ServiceConfig), "the service: unit, bind address, model store"),
    "limits": (_keyed(LimitsConfig), "memory, CPU and file limits"),
    "environment": (_environment, "any other variable for ollama serve"),
    "hardening": (_keyed(HardeningConfig), "what the sandbox leaves open"),
    "gpu": (_keyed(GpuConfig), "GPU power and clocks for `ollama-ops gpu`"),
    "logs": (_keyed(LogsConfig), "journal limits, probe filter and namespace"),
    "models": (_keyed(ModelsConfig), "models apply pulls and keeps warm"),
    "instances": (_instances, "more instances ollama@NAME: gpus, port, limits (docs/instances.md)"),
    "frontdoor": (_frontdoor, "nginx in front of the instances (docs/instances.md)"),
    "watch": (_watch, "the supervisor ollama-ops-watch and its policy (docs/health.md)"),
}
_SECTION_EXAMPLES = {
    "instances": "[instances.fast] gpus = [0]",
    "frontdoor": 'listen = "..."',
    "watch": "enabled = true",
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
            example = _SECTION_EXAMPLES.get(name, 'NAME = "value"')
            rows.append(f"| `[{name}]` | `{example}` | {help_text} |")
    return "\n".join(rows) + "\n"


def loads(text: str, src: str = "config") -> DeploymentConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{src}: not valid TOML ({' '.join(str(exc).split())}); fix the syntax at that line"
        ) from exc
    except (ValueError, RecursionError) as exc:  # a number of over 4300 digits, deep nesting
        raise ConfigError(
            f"{src}: cannot be read ({' '.join(str(exc).split())[:80]}); "
            "shorten the number or the nesting"
        ) from exc
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
    return loads(text, shown(str(target)) if not str(target).isprintable() else str(target))
