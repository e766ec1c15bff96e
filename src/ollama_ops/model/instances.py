"""Several Ollama instances on one host and their nginx front door: config and plan data.

``[instances.NAME]`` tables and the ``[frontdoor]`` table of the deployment
config are parsed here, self-contained: every key is declared once in a
schema, an unknown key gets the nearest known one as a hint, and every
error is one line naming the key and the fix. The second half holds the
plan's output for them (frozen data that ``render`` and ``apply`` read).
Pure: no I/O.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ollama_ops.errors import ConfigError
from ollama_ops.model.bind import validate_bind
from ollama_ops.model.config import parse_size
from ollama_ops.model.deployment import Deployment, Source
from ollama_ops.unitfile.syntax import is_plain_path

SHARED = "shared"  # models_dir = "shared": the main unit's model store
# systemd: a unit name has at most 255 characters (UNIT_NAME_MAX - 1); the drop-in
# directory "<unit>.d" must also fit in one 255-byte path component.
UNIT_NAME_MAX = 255
_INSTANCE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CPU_LIST_RE = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")
_UUID_RE = re.compile(r"(GPU|MIG)-[0-9A-Za-z-]+")
_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
DEFAULT_FRONTDOOR_PATH = "/etc/nginx/conf.d/ollama-ops.conf"

# Variables the instance plan decides itself: each one's key says how to set it.
_MANAGED_ENV = {
    "OLLAMA_HOST": "port and bind",
    "OLLAMA_MODELS": "models_dir",
    "OLLAMA_NOPRUNE": "prune (shared stores only)",
    "CUDA_VISIBLE_DEVICES": "gpus",
    "ROCR_VISIBLE_DEVICES": "gpus",
    "HIP_VISIBLE_DEVICES": "gpus",
    "HOME": "nothing (each instance's home is its state directory)",
}

INSTANCE_KEYS = frozenset(
    {
        "gpus",
        "port",
        "bind",
        "allowed_networks",
        "memory_high",
        "memory_max",
        "cpu_weight",
        "allowed_cpus",
        "models_dir",
        "prune",
        "share_gpus",
        "models",
        "environment",
    }
)
FRONTDOOR_KEYS = frozenset(
    {
        "listen",
        "balance",
        "routes",
        "instances",
        "max_fails",
        "fail_timeout",
        "read_timeout",
        "connect_timeout",
        "tls_certificate",
        "tls_certificate_key",
        "allowed_networks",
        "server_name",
        "path",
    }
)


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class ModelDecl:
    """A model an instance serves; vram_bytes None: estimated from the tag."""

    name: str
    vram_bytes: int | None = None


@dataclass(frozen=True)
class InstanceConfig:
    name: str
    port: int
    gpus: tuple[int | str, ...] = ()  # indexes as in `ollama-ops facts`, or GPU UUIDs
    bind: str = "127.0.0.1"
    allowed_networks: tuple[str, ...] = ()
    memory_high: int | None = None
    memory_max: int | None = None
    cpu_weight: int | None = None
    allowed_cpus: str | None = None  # "auto", "none" or a CPU list
    models_dir: str | None = None  # None: its own store; SHARED: the main unit's; or a path
    prune: bool | None = None
    share_gpus: bool = False
    models: tuple[ModelDecl, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)

    @property
    def unit_name(self) -> str:
        return unit_name("ollama.service", self.name)


@dataclass(frozen=True)
class FrontDoorConfig:
    listen: str
    balance: str = "least_conn"  # or "model": a route per model family
    routes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # model-name prefix -> instances
    instances: tuple[str, ...] = ()  # () = every instance
    max_fails: int = 2
    fail_timeout: int = 10  # seconds
    read_timeout: int | None = None  # seconds; None: the rule (longer than a model load)
    connect_timeout: int = 3
    tls_certificate: str | None = None
    tls_certificate_key: str | None = None
    allowed_networks: tuple[str, ...] = ()
    server_name: str = "_"
    path: str = DEFAULT_FRONTDOOR_PATH


def unit_name(main_unit: str, name: str) -> str:
    """``ollama.service`` + ``fast`` -> ``ollama@fast.service``."""
    stem = main_unit.removesuffix(".service")
    return f"{stem}@{name}.service"


def _suggest(key: str, known: frozenset[str]) -> str:
    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(sorted(known))}"


def _check_keys(table: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}{_suggest(key, known)}")


def check_name(name: object, where: str, main_unit: str = "ollama.service") -> str:
    """An instance name safe as a systemd instance, a directory and an nginx name."""
    if not isinstance(name, str) or not _INSTANCE_NAME_RE.fullmatch(name):
        raise ConfigError(
            f"{where}: instance name {name!r} is not allowed; use letters, digits, '-' and '_', "
            "starting with a letter or digit (it names a unit, a directory and an upstream)"
        )
    unit = unit_name(main_unit, name)
    if len(unit) + len(".d") > UNIT_NAME_MAX:
        limit = UNIT_NAME_MAX - len(unit_name(main_unit, "")) - len(".d")
        raise ConfigError(
            f"{where}: instance name of {len(name)} characters is too long: {unit[:20]}... and "
            f"its drop-in directory must fit systemd's {UNIT_NAME_MAX}-character unit names; "
            f"use at most {limit}"
        )
    return name


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} = {value!r} must be a string")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"{where} = {value!r} contains a control character; remove it")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} = {value!r} must be true or false")
    return value


def _int(value: object, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{where} = {value!r} must be a whole number from {lo} to {hi}")
    return value


def _list(value: object, where: str, example: str) -> list[object]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} = {value!r} must be a list, e.g. {example}")
    return value


def _path(value: object, where: str) -> str:
    text = _str(value, where)
    if not is_plain_path(text) or text.rstrip("/") in ("", "/usr", "/etc", "/var", "/var/lib"):
        raise ConfigError(
            f"{where} = {text!r} must be an absolute path of its own, of letters, digits and "
            "._/@+- (no spaces, '%' or '..'), e.g. /srv/ollama/models"
        )
    return text.rstrip("/")


def _networks(value: object, where: str) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(_list(value, where, '["10.0.0.0/8"]')):
        text = _str(item, f"{where}[{i}]")
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError as exc:
            raise ConfigError(
                f'{where}[{i}] = {text!r} is not a network; write CIDR such as "10.0.0.0/8"'
            ) from exc
    return tuple(out)


def _gpus(value: object, where: str) -> tuple[int | str, ...]:
    out: list[int | str] = []
    for i, item in enumerate(_list(value, where, "[0, 1]")):
        uuid = isinstance(item, str) and _UUID_RE.fullmatch(item)
        index = isinstance(item, int) and not isinstance(item, bool) and item >= 0
        if uuid or index:
            out.append(item)  # type: ignore[arg-type]
        else:
            raise ConfigError(
                f"{where}[{i}] = {item!r} is not a GPU; write its index from `ollama-ops facts` "
                'or its UUID ("GPU-...")'
            )
        if out.count(out[-1]) > 1:
            raise ConfigError(f"{where} lists GPU {item!r} twice; list each GPU once")
    return tuple(out)


def _models(value: object, where: str) -> tuple[ModelDecl, ...]:
    if isinstance(value, dict):
        return tuple(
            ModelDecl(_str(k, where), parse_size(v, f"{where}.{k!r}")) for k, v in value.items()
        )
    return tuple(
        ModelDecl(_str(v, f"{where}[{i}]"))
        for i, v in enumerate(_list(value, where, '["llama3.2:3b"] or {"mine:latest" = "12G"}'))
    )


def _environment(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table of variables, e.g. {{ OLLAMA_KEEP_ALIVE = 1 }}")
    env: dict[str, str] = {}
    for name, raw in value.items():
        at = f"{where}.{name}"
        if not _ENV_NAME_RE.fullmatch(name):
            raise ConfigError(
                f"{at}: {name!r} is not a valid variable name; use letters, digits, _"
            )
        if name in _MANAGED_ENV:
            raise ConfigError(
                f"{at}: ollama-ops sets {name} for each instance; set {_MANAGED_ENV[name]}"
            )
        if isinstance(raw, bool):
            env[name] = "1" if raw else "0"
        elif isinstance(raw, int | float):
            env[name] = str(raw)
        else:
            env[name] = _str(raw, at)
    return env


def _cpus(value: object, where: str) -> str:
    text = _str(value, where)
    if text not in ("auto", "none") and not _CPU_LIST_RE.fullmatch(text):
        raise ConfigError(f'{where} = {text!r}; write "auto", "none" or a CPU list like "0-15"')
    return text


def _models_dir(value: object, where: str) -> str:
    if value == SHARED:
        return SHARED
    return _path(value, where)


def _instance(name: str, table: Mapping[str, Any], src: str) -> InstanceConfig:
    where = f"{src}: instances.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table: [instances.{name}] with port = ...")
    _check_keys(table, INSTANCE_KEYS, where)
    if "port" not in table:
        raise ConfigError(f"{where}.port is missing; add port = <a free port>, e.g. 11435")
    port = _int(table["port"], f"{where}.port", 1, 65535)
    bind = _str(table.get("bind", "127.0.0.1"), f"{where}.bind")
    try:
        ipaddress.ip_address(bind)
    except ValueError as exc:
        raise ConfigError(
            f'{where}.bind = {bind!r} must be an IP address alone, e.g. "127.0.0.1" (port is port)'
        ) from exc

    def size(key: str) -> int | None:
        return parse_size(table[key], f"{where}.{key}") if key in table else None

    high, mx = size("memory_high"), size("memory_max")
    if high is not None and mx is not None and high > mx:
        raise ConfigError(
            f"{where}.memory_high is above memory_max; MemoryHigh must be at most MemoryMax"
        )
    return InstanceConfig(
        name=name,
        port=port,
        gpus=_gpus(table.get("gpus", []), f"{where}.gpus"),
        bind=bind,
        allowed_networks=_networks(table.get("allowed_networks", []), f"{where}.allowed_networks"),
        memory_high=high,
        memory_max=mx,
        cpu_weight=_int(table["cpu_weight"], f"{where}.cpu_weight", 1, 10000)
        if "cpu_weight" in table
        else None,
        allowed_cpus=_cpus(table["allowed_cpus"], f"{where}.allowed_cpus")
        if "allowed_cpus" in table
        else None,
        models_dir=_models_dir(table["models_dir"], f"{where}.models_dir")
        if "models_dir" in table
        else None,
        prune=_bool(table["prune"], f"{where}.prune") if "prune" in table else None,
        share_gpus=_bool(table.get("share_gpus", False), f"{where}.share_gpus"),
        models=_models(table.get("models", []), f"{where}.models"),
        environment=_environment(table.get("environment", {}), f"{where}.environment"),
    )


def parse_instances(
    table: Mapping[str, Any], src: str, main_unit: str = "ollama.service"
) -> tuple[InstanceConfig, ...]:
    """The ``[instances]`` table: one InstanceConfig per ``[instances.NAME]``, in name order."""
    if not isinstance(table, dict):
        raise ConfigError(
            f"{src}: instances must be tables, e.g. [instances.fast] with port = 11435"
        )
    out = []
    for name in sorted(table):
        check_name(name, f"{src}: [instances.{name}]", main_unit)
        out.append(_instance(name, table[name], src))
    ports: dict[int, str] = {}
    for inst in out:
        if inst.port in ports:
            raise ConfigError(
                f"{src}: instances.{inst.name}.port = {inst.port} is also instances."
                f"{ports[inst.port]}'s port; give each instance its own port"
            )
        ports[inst.port] = inst.name
    return tuple(out)


def _seconds(value: object, where: str, hi: int) -> int:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*(s|m|min)?\s*", value)
        if match:
            value = int(match.group(1)) * (60 if match.group(2) in ("m", "min") else 1)
    return _int(value, where, 1, hi)


def _routes(value: object, where: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(
            f'{where} must be a table of model-name prefix -> instances, e.g. {{ llama = ["fast"] }}'
        )
    out = []
    for prefix, names in value.items():
        at = f"{where}.{prefix}"
        if not _PREFIX_RE.fullmatch(prefix):
            raise ConfigError(
                f"{at}: {prefix!r} is not a model-name prefix; use lower-case letters, digits, ._-"
            )
        listed = tuple(_str(n, f"{at}[{i}]") for i, n in enumerate(_list(names, at, '["fast"]')))
        if not listed:
            raise ConfigError(f"{at} lists no instance; name at least one")
        out.append((prefix, listed))
    return tuple(out)


def parse_frontdoor(table: object, src: str) -> FrontDoorConfig:
    """The ``[frontdoor]`` table: the nginx front door over the instances."""
    where = f"{src}: frontdoor"
    if not isinstance(table, dict):
        raise ConfigError(f'{where} must be a table: [frontdoor] with listen = "127.0.0.1:8080"')
    _check_keys(table, FRONTDOOR_KEYS, where)
    if "listen" not in table:
        raise ConfigError(f'{where}.listen is missing; add listen = "127.0.0.1:8080"')
    listen = _str(table["listen"], f"{where}.listen")
    validate_bind(listen, f"{where}.listen")
    balance = _str(table.get("balance", "least_conn"), f"{where}.balance")
    if balance not in ("least_conn", "model"):
        raise ConfigError(f'{where}.balance = {balance!r}; use "least_conn" or "model"')
    routes = _routes(table["routes"], f"{where}.routes") if "routes" in table else ()
    if balance == "model" and not routes:
        raise ConfigError(
            f'{where}: balance = "model" needs routes, e.g. routes = {{ llama = ["fast"] }}'
        )
    if routes and balance != "model":
        raise ConfigError(f'{where}.routes is set but balance = {balance!r}; set balance = "model"')
    cert = (
        _path(table["tls_certificate"], f"{where}.tls_certificate")
        if "tls_certificate" in table
        else None
    )
    key = (
        _path(table["tls_certificate_key"], f"{where}.tls_certificate_key")
        if "tls_certificate_key" in table
        else None
    )
    if (cert is None) != (key is None):
        raise ConfigError(f"{where}: TLS needs both tls_certificate and tls_certificate_key")
    path = _path(table.get("path", DEFAULT_FRONTDOOR_PATH), f"{where}.path")
    if not (path.startswith("/etc/nginx/") and path.endswith(".conf")):
        raise ConfigError(f"{where}.path = {path!r} must be a .conf file under /etc/nginx/")
    server_name = _str(table.get("server_name", "_"), f"{where}.server_name")
    if not re.fullmatch(r"[A-Za-z0-9_.*-]+( [A-Za-z0-9_.*-]+)*", server_name):
        raise ConfigError(
            f"{where}.server_name = {server_name!r}: write host names separated by spaces"
        )
    instances = tuple(
        _str(n, f"{where}.instances[{i}]")
        for i, n in enumerate(_list(table.get("instances", []), f"{where}.instances", '["fast"]'))
    )
    return FrontDoorConfig(
        listen=listen,
        balance=balance,
        routes=routes,
        instances=instances,
        max_fails=_int(table.get("max_fails", 2), f"{where}.max_fails", 1, 100),
        fail_timeout=_seconds(table.get("fail_timeout", 10), f"{where}.fail_timeout", 3600),
        read_timeout=_seconds(table["read_timeout"], f"{where}.read_timeout", 86400)
        if "read_timeout" in table
        else None,
        connect_timeout=_seconds(table.get("connect_timeout", 3), f"{where}.connect_timeout", 300),
        tls_certificate=cert,
        tls_certificate_key=key,
        allowed_networks=_networks(table.get("allowed_networks", []), f"{where}.allowed_networks"),
        server_name=server_name,
        path=path,
    )


# ---------------------------------------------------------------- plan output


@dataclass(frozen=True)
class Row:
    """One front-door value with its source and the reason ``plan`` shows."""

    key: str
    value: str | None
    source: Source
    reason: str


@dataclass(frozen=True)
class UpstreamGroup:
    name: str  # nginx upstream name
    servers: tuple[tuple[str, str], ...]  # (instance, host:port)


@dataclass(frozen=True)
class FrontDoorPlan:
    path: str
    listen: str  # host:port as nginx writes it
    groups: tuple[UpstreamGroup, ...]
    routes: tuple[tuple[str, str], ...]  # (model-name prefix, group name)
    default_group: str
    max_fails: int
    fail_timeout: int
    read_timeout: int
    connect_timeout: int
    server_name: str
    tls_certificate: str | None
    tls_certificate_key: str | None
    allowed_networks: tuple[str, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class InstancesPlan:
    """The template, one drop-in per instance, the boot drop-in and the front door."""

    template: Deployment  # unit_name "ollama@.service": base_unit + settings, one whole file
    instances: tuple[Deployment, ...]  # unit_name "ollama@NAME.service": drop-in settings
    boot_path: str  # multi-user.target's drop-in that starts the instances at boot
    frontdoor: FrontDoorPlan | None
    notes: tuple[str, ...] = ()

    def unit_names(self) -> list[str]:
        return [d.unit_name for d in self.instances]
