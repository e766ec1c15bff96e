"""The settings a tune can sweep (pure): one table of Ollama variables, their values, a Setting.

Each row of ``PARAMS`` names an Ollama environment variable, how its values
are read and checked, and what it does. ``--param NAME=V1,V2`` and the
shorthand options (``--flash-attention``, ``--kv-cache-type``, ...) all come
through :func:`parse_values`, so a value is refused the same way whichever
way it was given.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .errors import TuneError


def _int_in(low: int, high: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not re.fullmatch(r"[0-9]{1,9}", text) or not low <= int(text) <= high:
            raise ValueError(f"a whole number from {low} to {high}")
        return str(int(text))

    return parse


_TRUE, _FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def _bool(text: str) -> str:
    low = text.lower()
    if low in _TRUE:
        return "1"
    if low in _FALSE:
        return "0"
    raise ValueError("1 or 0 (true/false, on/off)")


KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")


def _kv_type(text: str) -> str:
    if text.lower() not in KV_CACHE_TYPES:
        raise ValueError(f"one of {', '.join(KV_CACHE_TYPES)}")
    return text.lower()


@dataclass(frozen=True)
class Param:
    """One Ollama variable a tune can sweep."""

    name: str  # as --param names it
    env: str  # the variable of ollama serve
    parse: Callable[[str], str]  # a value as written to the config; ValueError says what fits
    numeric: bool  # written to the TOML file as an integer
    help: str


PARAMS: tuple[Param, ...] = (
    Param("num_parallel", "OLLAMA_NUM_PARALLEL", _int_in(1, 256), True,
          "requests each loaded model serves at once (slots)"),
    Param("flash_attention", "OLLAMA_FLASH_ATTENTION", _bool, False,
          "flash attention: less KV-cache memory and faster long contexts where the model has it"),
    Param("kv_cache_type", "OLLAMA_KV_CACHE_TYPE", _kv_type, False,
          "KV-cache precision (f16, q8_0, q4_0); the quantized ones need flash attention"),
    Param("context_length", "OLLAMA_CONTEXT_LENGTH", _int_in(256, 16_777_216), True,
          "default context window; the KV cache is slots x context"),
    Param("max_loaded_models", "OLLAMA_MAX_LOADED_MODELS", _int_in(1, 64), True,
          "models kept loaded at once"),
)  # fmt: skip

#: Swept when the command line names no num_parallel values.
DEFAULT_NUM_PARALLEL = ("1", "2", "4", "8")
_BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
_BY_ENV: dict[str, Param] = {p.env: p for p in PARAMS}
_HINT = "e.g. --param num_parallel=1,2,4,8"


def lookup(name: str) -> Param:
    """The row for ``num_parallel``, ``num-parallel`` or ``OLLAMA_NUM_PARALLEL``."""
    key = name.strip()
    row = _BY_ENV.get(key.upper()) or _BY_NAME.get(key.lower().replace("-", "_"))
    if row is not None:
        return row
    near = difflib.get_close_matches(key.lower(), list(_BY_NAME), n=1, cutoff=0.5)
    hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(_BY_NAME)}"
    raise TuneError(f"--param {key!r}: not a setting tune can sweep; {hint}")


def parse_values(param: Param, text: str, option: str) -> tuple[str, ...]:
    """``"1,2,4"`` -> ("1", "2", "4"), each checked; duplicates dropped, order kept."""
    out: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise TuneError(f"{option} {text!r}: an empty value; {_HINT}")
        try:
            value = param.parse(item)
        except ValueError as exc:
            raise TuneError(f"{option} {text!r}: {item!r} is not {exc} ({param.env})") from None
        if value not in out:
            out.append(value)
    return tuple(out)


def parse_param(text: str) -> tuple[Param, tuple[str, ...]]:
    """``--param num_parallel=1,2,4`` -> (the row, its values)."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip():
        raise TuneError(f"--param {text!r}: write NAME=V1,V2,...; {_HINT}")
    param = lookup(name)
    return param, parse_values(param, values, f"--param {param.name}=")


@dataclass(frozen=True)
class Axis:
    """One swept parameter and its values, in the order given."""

    param: Param
    values: tuple[str, ...]


def axes(given: Iterable[tuple[Param, tuple[str, ...]]]) -> tuple[Axis, ...]:
    """The swept parameters in table order; num_parallel always, with its default values."""
    chosen: dict[str, tuple[str, ...]] = {}
    for param, values in given:
        if param.name in chosen:
            raise TuneError(
                f"{param.name} is given twice; list all its values once, e.g. "
                f"--param {param.name}={','.join(chosen[param.name] + values)}"
            )
        chosen[param.name] = values
    chosen.setdefault("num_parallel", DEFAULT_NUM_PARALLEL)
    return tuple(Axis(p, chosen[p.name]) for p in PARAMS if p.name in chosen)


@dataclass(frozen=True)
class Setting:
    """Values of the swept variables, in table order; None: not set (Ollama's default)."""

    values: tuple[tuple[str, str | None], ...]  # (env var, value)

    @classmethod
    def of(cls, values: Mapping[str, str | None]) -> Setting:
        order = [p.env for p in PARAMS]
        return cls(tuple(sorted(values.items(), key=lambda kv: order.index(kv[0]))))

    @property
    def env(self) -> dict[str, str]:
        """The variables this setting sets (the unset ones are left out)."""
        return {k: v for k, v in self.values if v is not None}

    def get(self, env: str) -> str | None:
        return dict(self.values).get(env)

    def label(self) -> str:
        """``num_parallel=4 flash_attention=1`` (short names; unset shows as "default")."""
        return " ".join(
            f"{_BY_ENV[k].name}={v if v is not None else 'default'}" for k, v in self.values
        )

    def env_label(self) -> str:
        """``OLLAMA_NUM_PARALLEL=4 OLLAMA_FLASH_ATTENTION=1`` (unset ones as "unset")."""
        return " ".join(f"{k}={v if v is not None else '(unset)'}" for k, v in self.values)


def param_for(env: str) -> Param:
    return _BY_ENV[env]
