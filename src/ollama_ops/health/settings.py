"""The `[watch]` section of the deployment config: one table of keys, validated here.

``model.config`` hands the raw table to :func:`parse_watch`; this module
imports nothing from the rest of the package but errors and the path rule,
so the config can import it without a cycle.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ollama_ops.errors import ConfigError
from ollama_ops.unitfile.paths import is_plain_path

DEFAULT_OLLAMA_OPS = "/usr/local/bin/ollama-ops"
DEFAULT_METRICS = "127.0.0.1:9839"
MODES = ("supervisor", "timer")
OOM_POLICIES = ("continue", "stop", "kill")


@dataclass(frozen=True)
class WatchConfig:
    enabled: bool = False
    mode: str = "supervisor"  # "timer": the guide's layout, a timer running one check
    ollama_ops: str = DEFAULT_OLLAMA_OPS  # the program the units run
    ready_wait: bool | None = None  # ExecStartPost= wait for the API; None: when enabled
    ready_timeout: int = 60
    oom_policy: str = "continue"
    metrics: str = DEFAULT_METRICS  # "" to serve none
    interval: float = 1.0
    failures: int = 3
    startup_grace: float = 90.0
    cooldown: float = 30.0
    max_actions: int = 4
    window: float = 3600.0
    healthy_reset: float = 300.0
    timer_period: int = 120
    observe_only: bool = False

    @property
    def waits_ready(self) -> bool:
        wanted = self.enabled if self.ready_wait is None else self.ready_wait
        return wanted and self.ready_timeout > 0


# key -> (kind, minimum, maximum) for numbers; kind only for the rest.
_NUMBERS: dict[str, tuple[type, float, float]] = {
    "ready_timeout": (int, 0, 3600),
    "interval": (float, 0.2, 60),
    "failures": (int, 1, 100),
    "startup_grace": (float, 0, 86400),
    "cooldown": (float, 0, 86400),
    "max_actions": (int, 1, 1000),
    "window": (float, 60, 7 * 86400),
    "healthy_reset": (float, 0, 86400),
    "timer_period": (int, 10, 86400),
}
_BOOLS = ("enabled", "ready_wait", "observe_only")
WATCH_KEYS = frozenset({*_NUMBERS, *_BOOLS, "mode", "ollama_ops", "oom_policy", "metrics"})


def _number(key: str, value: object, where: str) -> float | int:
    kind, low, high = _NUMBERS[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        ok = ok and isinstance(value, int)
    if not ok or not low <= value <= high:  # type: ignore[operator]
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{where} = {value!r} must be {what} from {low:g} to {high:g}")
    return kind(value)  # type: ignore[no-any-return]


def _choice(value: object, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise ConfigError(f"{where} = {value!r} must be one of {', '.join(map(repr, choices))}")
    return str(value)


def parse_watch(table: Mapping[str, Any], where: Callable[[str], str]) -> WatchConfig:
    """The validated `[watch]` table (keys already checked against WATCH_KEYS)."""
    values: dict[str, Any] = {}
    for key, value in table.items():
        w = where(f"watch.{key}")
        if key in _BOOLS:
            if not isinstance(value, bool):
                raise ConfigError(f"{w} = {value!r} must be true or false")
            values[key] = value
        elif key in _NUMBERS:
            values[key] = _number(key, value, w)
        elif key == "mode":
            values[key] = _choice(value, MODES, w)
        elif key == "oom_policy":
            values[key] = _choice(value, OOM_POLICIES, w)
        elif key == "ollama_ops":
            if not isinstance(value, str) or not is_plain_path(value):
                raise ConfigError(f"{w} = {value!r} must be the absolute path of ollama-ops")
            values[key] = value
        elif key == "metrics":
            values[key] = _metrics(value, w)
    return WatchConfig(**values)


def _metrics(value: object, where: str) -> str:
    if value == "":
        return ""
    if not isinstance(value, str):
        raise ConfigError(f'{where} = {value!r} must be a string such as "127.0.0.1:9839"')
    try:
        check_listen(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return value


def check_listen(address: str) -> tuple[str, int]:
    """ "127.0.0.1:9839" -> (host, port); only loopback addresses (the metrics are not for the LAN)."""
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        port, loopback = 0, False
    if not sep or not 0 < port < 65536 or not loopback:
        raise ConfigError(
            f"metrics address {address!r} must be a loopback address and port, e.g. 127.0.0.1:9839"
        )
    return host, port
