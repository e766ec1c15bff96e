"""Decode request bodies the way Go's encoding/json (via gin) reports errors.

Ollama binds bodies with ``c.ShouldBindJSON``: an empty body is
``missing request body``; a syntax error is Go's message (``invalid character
'x' looking for beginning of value``, ``unexpected EOF``); a value of the
wrong type is ``json: cannot unmarshal string into Go struct field
GenerateRequest.prompt of type string``; unknown fields are ignored; trailing
data after the first value is ignored (a json.Decoder reads one value).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# Field type codes: "string", "bool", "int", "float", "object", "[]string",
# "[]int", "any", "duration", "[]object". None (JSON null) is always accepted.
Schema = Mapping[str, str]

_GO_TYPE = {
    "string": "string",
    "bool": "bool",
    "int": "int",
    "float": "float64",
    "object": "map[string]interface {}",
    "[]string": "[]string",
    "[]int": "[]int",
    "[]object": "[]api.Message",
}


class BindError(ValueError):
    """The body could not be bound; ``str(err)`` is Ollama's error text."""


def _json_kind(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def _syntax_error(doc: str, err: json.JSONDecodeError) -> str:
    pos = err.pos
    rest = doc[pos:]
    if not rest.strip() or err.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    c = rest[0]
    ch = "'" + (c if c.isprintable() else json.dumps(c)[1:-1]) + "'"
    msg = err.msg
    if msg.startswith("Expecting property name"):
        return f"invalid character {ch} looking for beginning of object key string"
    if msg.startswith("Expecting ':'"):
        return f"invalid character {ch} after object key"
    if msg.startswith("Expecting ','"):
        return f"invalid character {ch} after object key:value pair"
    if msg.startswith("Invalid control character"):
        return f"invalid character {ch} in string literal"
    if msg.startswith("Invalid \\escape") or msg.startswith("Invalid \\u"):
        return f"invalid character {ch} in string escape code"
    return f"invalid character {ch} looking for beginning of value"


def decode_body(raw: bytes) -> Any:
    """Decode the first JSON value of a body, with Go's error texts."""
    try:
        doc = raw.decode("utf-8")
    except UnicodeDecodeError:
        doc = raw.decode("utf-8", errors="replace")
    if not doc.strip():
        raise BindError("missing request body")
    dec = json.JSONDecoder()
    start = len(doc) - len(doc.lstrip())
    try:
        value, _ = dec.raw_decode(doc, start)
    except json.JSONDecodeError as e:
        raise BindError(_syntax_error(doc, e)) from None
    return value


def _check(struct: str, field: str, code: str, v: object) -> None:
    if v is None or code == "any":
        return
    kind = _json_kind(v)
    ok = True
    if code == "string":
        ok = kind == "string"
    elif code == "bool":
        ok = kind == "bool"
    elif code == "int":
        ok = kind == "number" and float(v).is_integer()  # type: ignore[arg-type]
    elif code == "float":
        ok = kind == "number"
    elif code == "object":
        ok = kind == "object"
    elif code == "duration":
        return  # validated by the caller with Go's own message
    elif code in ("[]string", "[]int", "[]object"):
        if kind != "array":
            ok = False
        else:
            assert isinstance(v, list)
            want = {"[]string": "string", "[]int": "number", "[]object": "object"}[code]
            for item in v:
                if item is not None and _json_kind(item) != want:
                    raise BindError(
                        f"json: cannot unmarshal {_json_kind(item)} into Go struct field "
                        f"{struct}.{field} of type {_GO_TYPE[code][2:]}"
                    )
    if not ok:
        shown = kind
        if kind == "number" and code == "int":
            shown = f"number {v}"
        raise BindError(
            f"json: cannot unmarshal {shown} into Go struct field {struct}.{field} "
            f"of type {_GO_TYPE.get(code, code)}"
        )


def bind(raw: bytes, struct: str, schema: Schema) -> dict[str, Any]:
    """Decode ``raw`` into a dict, type-checking the known fields."""
    value = decode_body(raw)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BindError(
            f"json: cannot unmarshal {_json_kind(value)} into Go value of type api.{struct}"
        )
    for key, code in schema.items():
        if key in value:
            _check(struct, key, code, value[key])
    return value


def check_messages(messages: object, struct: str = "ChatRequest") -> None:
    """Type-check chat messages: role/content strings, images strings."""
    if not isinstance(messages, list):
        return
    for m in messages:
        if not isinstance(m, dict):
            continue
        for key, code in (("role", "string"), ("content", "string"), ("images", "[]string")):
            if key in m:
                _check(f"{struct}.messages", key, code, m[key])


Options = tuple[dict[str, Any], tuple[str, ...]]

# api.Options fields and their Go kinds (runner options included).
OPTION_KINDS: dict[str, str] = {
    "num_keep": "int",
    "seed": "int",
    "num_predict": "int",
    "top_k": "int",
    "top_p": "float",
    "min_p": "float",
    "typical_p": "float",
    "repeat_last_n": "int",
    "temperature": "float",
    "repeat_penalty": "float",
    "presence_penalty": "float",
    "frequency_penalty": "float",
    "stop": "slice",
    "num_ctx": "int",
    "num_batch": "int",
    "num_gpu": "int",
    "main_gpu": "int",
    "use_mmap": "bool",
    "num_thread": "int",
}


class OptionError(ValueError):
    """api.Options.FromMap failed; Ollama answers these with a 500."""


def parse_options(opts: Mapping[str, Any]) -> Options:
    """api.Options.FromMap: returns (valid options, unknown keys to warn about)."""
    out: dict[str, Any] = {}
    unknown = []
    for key, val in opts.items():
        kind = OPTION_KINDS.get(key)
        if kind is None:
            unknown.append(key)
            continue
        if val is None:
            continue
        if kind == "int":
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise OptionError(f'option "{key}" must be of type integer')
            out[key] = int(val)
        elif kind == "float":
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise OptionError(f'option "{key}" must be of type float32')
            out[key] = float(val)
        elif kind == "bool":
            if not isinstance(val, bool):
                raise OptionError(f'option "{key}" must be of type boolean')
            out[key] = val
        else:
            if not isinstance(val, list):
                raise OptionError(f'option "{key}" must be of type array')
            if not all(isinstance(s, str) for s in val):
                raise OptionError(f'option "{key}" must be of an array of strings')
            out[key] = list(val)
    return out, tuple(unknown)
