"""Values of the ``[models]`` table and of ``service.egress``: model names, keep-alive, egress.

Pure: parsers for ``model.config.SETTINGS`` rows (``(value, where) -> parsed``,
raising ConfigError with one line) and Ollama's model-name rules.

Names follow Ollama's ``model.ParseName``: ``[host/][namespace/]model[:tag]``
with ``registry.ollama.ai``, ``library`` and ``latest`` filled in; each part is
letters, digits, ``_``, ``-`` and ``.``, not starting with ``-`` or ``.``.
``/api/tags`` shows the shortest form (``llama3.2:3b``), which is what
:func:`short_name` gives, so a configured name and a listed one compare equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ollama_ops.errors import ConfigError

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

EGRESS_CLOSED = "closed"
EGRESS_OPEN = "open"
EGRESS_VALUES = (EGRESS_CLOSED, EGRESS_OPEN)

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,349}(:[0-9]{1,5})?")
# Go's time.ParseDuration: an optional sign, then number+unit pairs ("1h30m", "-1s", "0").
_GO_DURATION = re.compile(r"[+-]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)")
_INTEGER = re.compile(r"[+-]?\d{1,18}")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_MAX_DURATION_S = (2**63 - 1) / 1e9  # Go's time.Duration


def _seconds(text: str) -> float:
    """The length of an integer (seconds) or Go duration, without its sign."""
    if _INTEGER.fullmatch(text):
        return float(abs(int(text)))
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", text)
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def short(self) -> str:
        """Ollama's DisplayShortest: ``model:tag`` in the default host and namespace."""
        if self.host == DEFAULT_HOST:
            if self.namespace == DEFAULT_NAMESPACE:
                return f"{self.model}:{self.tag}"
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"


def parse_name(text: str) -> ModelName | None:
    """model.ParseName with the defaults filled in; None when Ollama would refuse it."""
    if not text or len(text) > 512:
        return None
    rest, tag = text, DEFAULT_TAG
    if ":" in rest.rsplit("/", 1)[-1]:
        rest, _, tag = rest.rpartition(":")
    parts = rest.split("/")
    if len(parts) > 3:
        return None
    host = parts[0] if len(parts) == 3 else DEFAULT_HOST
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    model = parts[-1]
    if not (
        _HOST.fullmatch(host)
        and _PART.fullmatch(namespace)
        and _PART.fullmatch(model)
        and _PART.fullmatch(tag)
    ):
        return None
    return ModelName(host, namespace, model, tag)


def short_name(text: str) -> str:
    """The name as ``/api/tags`` lists it (``llama3.2`` -> ``llama3.2:latest``); else as given."""
    name = parse_name(text)
    return name.short if name else text


def model_name(value: object, where: str) -> str:
    """One model name, checked as Ollama checks it, in its shortest form."""
    if not isinstance(value, str):
        raise ConfigError(f'{where} = {value!r} must be a model name such as "llama3.2:3b"')
    name = parse_name(value)
    if name is None:
        raise ConfigError(
            f"{where} = {value!r} is not a model name Ollama accepts; write [namespace/]model[:tag] "
            'of letters, digits, "_", "-" and "." (e.g. "llama3.2:3b")'
        )
    return name.short


def parse_models(value: object, where: str) -> tuple[str, ...]:
    """A list of model names, without duplicates (``llama3.2`` and ``llama3.2:latest`` are one)."""
    if not isinstance(value, list):
        raise ConfigError(f'{where} = {value!r} must be a list, e.g. ["llama3.2:3b"]')
    names: list[str] = []
    for i, item in enumerate(value):
        name = model_name(item, f"{where}[{i}]")
        if name in names:
            raise ConfigError(f"{where}[{i}] = {item!r} repeats {name!r}; list each model once")
        names.append(name)
    return tuple(names)


def parse_keep_alive(value: object, where: str) -> str:
    """How long a warmed model stays loaded: seconds or a Go duration; negative = forever.

    Returned as text ("-1", "30m"); :func:`keep_alive_wire` turns it into what
    ``/api/generate`` accepts. 0 is refused: it would unload the model at once.
    """
    text = (
        str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    )
    if not (_INTEGER.fullmatch(text) or _GO_DURATION.fullmatch(text)):
        raise ConfigError(
            f'{where} = {value!r} is not a keep-alive; write "-1" (forever), whole seconds '
            '("600") or a Go duration ("30m", "1h30m")'
        )
    seconds = _seconds(text)
    if seconds > _MAX_DURATION_S:
        raise ConfigError(
            f'{where} = {value!r} is longer than Ollama accepts (about 292 years); write "-1" '
            "for forever"
        )
    if seconds == 0:
        raise ConfigError(
            f'{where} = {value!r} would unload a warmed model at once; write "-1" (forever) '
            'or a duration such as "30m"'
        )
    return text


def keep_alive_wire(text: str) -> int | str:
    """The keep-alive as /api/generate takes it: a number of seconds, or a Go duration string.

    Ollama's API reads a JSON string with time.ParseDuration, which refuses a
    bare "-1"; a number is seconds (negative: forever), so whole seconds go as one.
    """
    return int(text) if _INTEGER.fullmatch(text) else text


def parse_egress(value: object, where: str) -> str:
    if value not in EGRESS_VALUES:
        raise ConfigError(
            f'{where} = {value!r} must be "closed" (the default: `ollama-ops pull` opens it only '
            'while pulling) or "open" (plain `ollama pull` works; the IP filter is dropped)'
        )
    assert isinstance(value, str)
    return value
