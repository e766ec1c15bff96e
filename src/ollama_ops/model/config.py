"""The operator's deployment config (TOML), validated into a frozen dataclass.

Every key is declared once in ``_SCHEMA``; validation, defaults and the
"did you mean" suggestions are all derived from it. Values that end up in a
unit file are checked again by ``unit.render``; here they are checked for
meaning (sizes, percentages, addresses, paths).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollama_ops.errors import ConfigError
from ollama_ops.health.settings import WATCH_KEYS, WatchConfig, parse_watch
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


@dataclass(frozen=True)
class ServiceConfig:
    unit: str = "ollama.service"
    bind: str = DEFAULT_BIND
    allowed_networks: tuple[str, ...] = ()
    models_dir: str | None = None
    binary: str | None = None


@dataclass(frozen=True)
class LimitsConfig:
    os_reserve: int | None = None
    memory_high: int | None = None
    memory_max: int | None = None
    memory_high_percent: float = 80.0
    memory_max_percent: float = 93.0
    cpu_weight: int | None = None
    allowed_cpus: str | None = None  # "auto" (rule), "none", or a CPU list
    nofile: int | None = None


@dataclass(frozen=True)
class HardeningConfig:
    relax: tuple[str, ...] = ()  # directives to leave at systemd's default
    read_write_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploymentConfig:
    service: ServiceConfig = field(default_factory=ServiceConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    environment: Mapping[str, str] = field(default_factory=dict)
    hardening: HardeningConfig = field(default_factory=HardeningConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)  # health: [watch], see health.settings
    source: str | None = None  # where it was read from, for messages
    # Dotted names of the keys the operator set, so `plan` can say "from the file".
    set_keys: frozenset[str] = frozenset()


_SCHEMA: dict[str, frozenset[str]] = {
    "service": frozenset({"unit", "bind", "allowed_networks", "models_dir", "binary"}),
    "limits": frozenset(
        {
            "os_reserve",
            "memory_high",
            "memory_max",
            "memory_high_percent",
            "memory_max_percent",
            "cpu_weight",
            "allowed_cpus",
            "nofile",
        }
    ),
    "environment": frozenset(),  # free-form variable names, validated separately
    "hardening": frozenset({"relax", "read_write_paths"}),
    "watch": WATCH_KEYS,
}


def _suggest(key: str, known: set[str] | frozenset[str]) -> str:
    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
    if near:
        return f"; did you mean {near[0]!r}?"
    return f"; known keys: {', '.join(sorted(known))}"


def _check_keys(table: Mapping[str, Any], known: frozenset[str], where: str, src: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{src}: unknown key {where}{key}{_suggest(key, known)}")


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


def validate_bind(value: str, where: str = "service.bind") -> tuple[str, int]:
    """Split an OLLAMA_HOST-style bind address into (host, port)."""
    text = value.strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    host, port_text = text, "11434"
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"{where} = {value!r}: unclosed '['; write e.g. \"[::1]:11434\"")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"{where} = {value!r}: expected ':port' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    host = host or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError as exc:
        raise ConfigError(f"{where} = {value!r}: port {port_text!r} is not a number") from exc
    if not 0 < port < 65536:
        raise ConfigError(f"{where} = {value!r}: port {port} is out of range 1-65535")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise ConfigError(
                f"{where} = {value!r}: {host!r} is not an IP address; bind to an address such "
                "as 127.0.0.1, 0.0.0.0 or a NIC's IP"
            ) from exc
    return host, port


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


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


def from_dict(data: Mapping[str, Any], src: str = "config") -> DeploymentConfig:
    _check_keys(data, frozenset(_SCHEMA), "", src)
    set_keys: set[str] = set()
    tables: dict[str, Mapping[str, Any]] = {}
    for name, known in _SCHEMA.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{src}: [{name}] must be a table")
        if known:
            _check_keys(table, known, f"{name}.", src)
        tables[name] = table
        set_keys.update(f"{name}.{k}" for k in table)

    def w(key: str) -> str:
        return f"{src}: {key}"

    svc = tables["service"]
    unit = _str(svc.get("unit", "ollama.service"), w("service.unit"))
    if not re.fullmatch(r"[A-Za-z0-9_@:][A-Za-z0-9_.@:-]*\.service", unit) or ".." in unit:
        raise ConfigError(
            f'{w("service.unit")} = {unit!r} is not a service name; write e.g. "ollama.service"'
        )
    bind = _str(svc.get("bind", DEFAULT_BIND), w("service.bind"))
    validate_bind(bind, w("service.bind"))
    networks = tuple(
        _network(v, w(f"service.allowed_networks[{i}]"))
        for i, v in enumerate(
            _str_list(svc.get("allowed_networks", []), w("service.allowed_networks"))
        )
    )
    models_dir = (
        _writable_path(svc["models_dir"], w("service.models_dir")) if "models_dir" in svc else None
    )
    binary = _path(svc["binary"], w("service.binary")) if "binary" in svc else None

    lim = tables["limits"]

    def size(key: str) -> int | None:
        return parse_size(lim[key], w(f"limits.{key}")) if key in lim else None

    allowed_cpus = None
    if "allowed_cpus" in lim:
        allowed_cpus = _str(lim["allowed_cpus"], w("limits.allowed_cpus"))
        if allowed_cpus not in ("auto", "none") and not re.fullmatch(
            r"\d+(-\d+)?(,\d+(-\d+)?)*", allowed_cpus
        ):
            raise ConfigError(
                f'{w("limits.allowed_cpus")} = {allowed_cpus!r}; write "auto", "none" or a CPU '
                'list such as "0-15,32-47"'
            )
    limits = LimitsConfig(
        os_reserve=size("os_reserve"),
        memory_high=size("memory_high"),
        memory_max=size("memory_max"),
        memory_high_percent=_percent(
            lim.get("memory_high_percent", 80.0), w("limits.memory_high_percent")
        ),
        memory_max_percent=_percent(
            lim.get("memory_max_percent", 93.0), w("limits.memory_max_percent")
        ),
        cpu_weight=_positive_int(lim["cpu_weight"], w("limits.cpu_weight"), 10000)
        if "cpu_weight" in lim
        else None,
        allowed_cpus=allowed_cpus,
        nofile=_positive_int(lim["nofile"], w("limits.nofile"), 1 << 30)
        if "nofile" in lim
        else None,
    )
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

    env: dict[str, str] = {}
    for name, raw in tables["environment"].items():
        where = w(f"environment.{name}")
        if not _ENV_NAME_RE.match(name):
            raise ConfigError(
                f"{where}: {name!r} is not a valid variable name; use letters, digits and _"
            )
        if name == "OLLAMA_HOST":
            raise ConfigError(f"{where}: set the bind address with service.bind, not OLLAMA_HOST")
        if name == "OLLAMA_MODELS":
            env[name] = _writable_path(raw, where)
            continue
        if isinstance(raw, bool):
            env[name] = "1" if raw else "0"
        elif isinstance(raw, int | float):
            env[name] = str(raw)
        else:
            env[name] = _str(raw, where)

    hard = tables["hardening"]
    relax = tuple(
        _str(v, w(f"hardening.relax[{i}]"))
        for i, v in enumerate(_str_list(hard.get("relax", []), w("hardening.relax")))
    )
    rw_paths = tuple(
        _writable_path(v, w(f"hardening.read_write_paths[{i}]"))
        for i, v in enumerate(
            _str_list(hard.get("read_write_paths", []), w("hardening.read_write_paths"))
        )
    )
    cfg = DeploymentConfig(
        service=ServiceConfig(
            unit=unit, bind=bind, allowed_networks=networks, models_dir=models_dir, binary=binary
        ),
        limits=limits,
        environment=env,
        hardening=HardeningConfig(relax=relax, read_write_paths=rw_paths),
        watch=parse_watch(tables["watch"], w),
        source=src,
        set_keys=frozenset(set_keys),
    )
    return cfg


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
