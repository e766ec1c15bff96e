"""Environment parsing with the semantics of Ollama's envconfig package.

* Values are stripped of surrounding spaces, then of surrounding quotes.
* Booleans parse like Go's ``strconv.ParseBool``; an unparsable value is TRUE.
* Unsigned integers that do not parse fall back to the default with a warning.
* Durations accept Go's ``time.ParseDuration`` syntax ("5m", "1h30m", "0")
  or a plain integer number of seconds; a negative value means forever.
* OLLAMA_HOST: scheme optional, default ``http://127.0.0.1:11434``; a bare
  host keeps the default port (80/443 when the scheme is http/https).

Durations are float seconds here; ``math.inf`` stands for Go's MaxInt64.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DEFAULT_PORT = "11434"
DEFAULT_KEEP_ALIVE = 300.0
DEFAULT_MAX_QUEUE = 512

Warn = Callable[[str, "dict[str, object]"], None]


def _no_warn(msg: str, attrs: dict[str, object]) -> None:
    del msg, attrs


def var(env: Mapping[str, str], key: str) -> str:
    """Ollama's envconfig.Var: trim spaces, then quotes."""
    return env.get(key, "").strip().strip("\"'")


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_go_bool(text: str) -> bool | None:
    """strconv.ParseBool; None when it does not parse."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def env_bool(env: Mapping[str, str], key: str) -> bool:
    """envconfig.Bool: unset or empty is false, unparsable is TRUE."""
    s = var(env, key)
    if not s:
        return False
    b = parse_go_bool(s)
    return True if b is None else b


def env_uint(env: Mapping[str, str], key: str, default: int, warn: Warn = _no_warn) -> int:
    """envconfig.Uint: decimal digits only; otherwise the default, with a warning."""
    s = var(env, key)
    if not s:
        return default
    if s.isascii() and s.isdigit() and int(s) < 2**64:
        return int(s)
    warn(
        "invalid environment variable, using default",
        {"key": key, "value": s, "default": default},
    )
    return default


class DurationError(ValueError):
    """A Go duration string did not parse; the message is Go's."""


_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DUR_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")


def parse_go_duration(text: str) -> float:
    """time.ParseDuration, returning seconds. Raises DurationError with Go's text."""
    orig = text
    quoted = '"' + orig + '"'
    neg = False
    if text[:1] in ("-", "+"):
        neg = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise DurationError("time: invalid duration " + quoted)
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _DUR_PART.match(text, pos)
        if m is None or m.end() == pos:
            raise DurationError("time: invalid duration " + quoted)
        number, unit = m.group(1), m.group(2)
        if number in ("", "."):
            raise DurationError("time: invalid duration " + quoted)
        if not unit:
            raise DurationError("time: missing unit in duration " + quoted)
        if unit not in _UNITS:
            raise DurationError('time: unknown unit "' + unit + '" in duration ' + quoted)
        total += float(number) * _UNITS[unit]
        pos = m.end()
    if total > 2**63 / 1e9:
        raise DurationError("time: invalid duration " + quoted)
    return -total if neg else total


#: The longest time.Duration, in seconds (MaxInt64 nanoseconds).
MAX_DURATION_S = (2**63 - 1) / 1e9


def saturate_duration(seconds: float) -> float:
    """A keep-alive as the scheduler uses it: negative, NaN or beyond MaxInt64 ns is forever.

    Go's time arithmetic saturates (``time.Now().Add(d)`` never wraps), so a
    keep-alive too long for a Duration means "never expire", never an error.
    """
    if not seconds >= 0 or seconds >= MAX_DURATION_S:  # "not >=" is also true for NaN
        return math.inf
    return seconds


def env_keep_alive(env: Mapping[str, str], key: str = "OLLAMA_KEEP_ALIVE") -> float:
    """envconfig.KeepAlive: Go duration, else integer seconds, else 5m; <0 = forever."""
    s = var(env, key)
    value = DEFAULT_KEEP_ALIVE
    if s:
        try:
            value = parse_go_duration(s)
        except DurationError:
            if re.fullmatch(r"[+-]?[0-9]+", s) and -(2**63) <= int(s) < 2**63:
                value = float(int(s))
    return saturate_duration(value)


def request_keep_alive(value: object) -> float:
    """api.Duration.UnmarshalJSON: number = seconds, string = Go duration.

    Negative means forever, and so does a number of seconds too large for a
    Go Duration (saturated, never a 500). Raises DurationError (a 400 for the
    caller).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        kind = {bool: "bool", list: "[]interface {}", dict: "map[string]interface {}"}
        raise DurationError("Unsupported type: '" + kind.get(type(value), "unknown") + "'")
    if isinstance(value, str):
        return saturate_duration(parse_go_duration(value))
    try:
        d = float(value)
    except OverflowError:  # an int beyond float64
        d = math.inf if value > 0 else -math.inf
    return saturate_duration(d)


def _fixed(value: int, digits: int) -> str:
    """``value / 10**digits`` with the fraction's trailing zeros dropped, as Go prints it."""
    whole, frac = divmod(value, 10**digits)
    tail = str(frac).rjust(digits, "0").rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def format_go_duration(seconds: float) -> str:
    """time.Duration.String: ``0s``, ``794.342µs``, ``5.050123s``, ``5m0s``, ``1h2m3.5s``."""
    if math.isinf(seconds) or seconds >= MAX_DURATION_S:
        return "2562047h47m16.854775807s"
    ns = round(seconds * 1e9)
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns == 0:
        return "0s"
    if ns < 1000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_fixed(ns, 3)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{_fixed(ns, 6)}ms"
    total_s, frac = divmod(ns, 1_000_000_000)
    minutes, secs = divmod(total_s, 60)
    hours, minutes = divmod(minutes, 60)
    out = _fixed(secs * 1_000_000_000 + frac, 9) + "s"
    if hours or minutes:
        out = f"{minutes}m" + out
    if hours:
        out = f"{hours}h" + out
    return sign + out


class HostPortError(ValueError):
    """net.SplitHostPort failed."""


def split_host_port(hostport: str) -> tuple[str, str]:
    """Go's net.SplitHostPort."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise HostPortError("missing ']' in address")
        rest = hostport[end + 1 :]
        if not rest:
            raise HostPortError("missing port in address")
        if not rest.startswith(":"):
            raise HostPortError("unexpected ']' in address")
        host, port = hostport[1:end], rest[1:]
        if ":" in port:
            raise HostPortError("too many colons in address")
    else:
        i = hostport.rfind(":")
        if i < 0:
            raise HostPortError("missing port in address")
        host, port = hostport[:i], hostport[i + 1 :]
        if ":" in host:
            raise HostPortError("too many colons in address")
    if "[" in host or "]" in host or "[" in port or "]" in port:
        raise HostPortError("unexpected '[' in address")
    return host, port


def _is_ip(text: str) -> str | None:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


@dataclass(frozen=True)
class OllamaHost:
    """The parsed OLLAMA_HOST."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @property
    def hostport(self) -> str:
        """net.JoinHostPort(host, port)."""
        h = "[" + self.host + "]" if ":" in self.host else self.host
        return f"{h}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.hostport}" + ("/" + self.path if self.path else "")


def parse_host(value: str, warn: Warn = _no_warn) -> OllamaHost:
    """envconfig.Host for a raw OLLAMA_HOST value."""
    s = value.strip().strip("\"'").strip()
    default_port = DEFAULT_PORT
    scheme, sep, hostport = s.partition("://")
    if not sep:
        scheme, hostport = "http", s
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"
    hostport, _, path = hostport.partition("/")
    try:
        host, port = split_host_port(hostport)
    except HostPortError:
        host, port = "127.0.0.1", default_port
        ip = _is_ip(hostport.strip("[]"))
        if ip is not None:
            host = ip
        elif hostport:
            host = hostport
    if not re.fullmatch(r"[+-]?[0-9]+", port) or not 0 <= int(port) <= 65535:
        warn("invalid port, using default", {"port": port, "default": default_port})
        port = default_port
    return OllamaHost(scheme=scheme, host=host, port=int(port), path=path)


def env_host(env: Mapping[str, str], warn: Warn = _no_warn) -> OllamaHost:
    return parse_host(var(env, "OLLAMA_HOST"), warn)


@dataclass(frozen=True)
class ServerEnv:
    """The OLLAMA_* settings the simulator honours, already parsed."""

    host: OllamaHost
    models: str
    num_parallel: int
    max_loaded_models: int
    max_queue: int
    keep_alive: float
    load_timeout: float
    context_length: int
    debug: bool
    noprune: bool


def read_server_env(env: Mapping[str, str], home: str | None, warn: Warn = _no_warn) -> ServerEnv:
    """Parse everything once, in Ollama's way. ``home`` may be None if unknown."""
    models = var(env, "OLLAMA_MODELS")
    if not models and home:
        models = home.rstrip("/") + "/.ollama/models"
    num_parallel = env_uint(env, "OLLAMA_NUM_PARALLEL", 0, warn)
    max_queue = env_uint(env, "OLLAMA_MAX_QUEUE", DEFAULT_MAX_QUEUE, warn)
    load_timeout = (
        env_keep_alive(env, "OLLAMA_LOAD_TIMEOUT") if var(env, "OLLAMA_LOAD_TIMEOUT") else 300.0
    )
    if load_timeout <= 0:
        load_timeout = math.inf
    return ServerEnv(
        host=env_host(env, warn),
        models=models,
        num_parallel=num_parallel if num_parallel > 0 else 1,
        max_loaded_models=env_uint(env, "OLLAMA_MAX_LOADED_MODELS", 0, warn),
        max_queue=max_queue,
        keep_alive=env_keep_alive(env),
        load_timeout=load_timeout,
        context_length=env_uint(env, "OLLAMA_CONTEXT_LENGTH", 0, warn),
        debug=env_bool(env, "OLLAMA_DEBUG"),
        noprune=env_bool(env, "OLLAMA_NOPRUNE"),
    )
