"""Decode request bodies the way Go's encoding/json (via gin) reports errors.

Ollama binds bodies with ``c.ShouldBindJSON``: an empty body is
``missing request body``; a syntax error is Go's message (``invalid character
'x' looking for beginning of value``, ``unexpected EOF``); a value of the
wrong type is ``json: cannot unmarshal string into Go struct field
GenerateRequest.prompt of type string``; unknown fields are ignored; trailing
data after the first value is ignored (a json.Decoder reads one value).

What Go's decoder refuses, this one refuses too, so that no value Python would
accept and Go would not reaches the server (issue 7, item 12):

* ``NaN``, ``Infinity`` and ``-Infinity`` are syntax errors
  (``invalid character 'N' looking for beginning of value``);
* a number beyond float64 (``1e400``, a 400-digit integer) is
  ``json: cannot unmarshal number 1e400 into Go value of type float64``;
* an ``int`` field takes only an integer literal within int64 (``1.0``, ``1e3``
  and ``2**63`` are refused, as Go's ``strconv.ParseInt`` refuses them);
* lone UTF-16 surrogates in strings (``"\\ud800"``) become U+FFFD, as in Go;
* nesting deeper than Python's decoder follows (about 900 levels; Go's limit
  is 10000) is ``invalid character '[' exceeded max depth``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

#: Go's encoding/json maxNestingDepth.
GO_MAX_DEPTH = 10000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT64_MAX = 1.7976931348623157e308
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')

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


class GoFloat(float):
    """A JSON number with a fraction or exponent, keeping its literal for Go's messages."""

    __slots__ = ("literal",)
    literal: str

    def __new__(cls, literal: str) -> GoFloat:
        self = super().__new__(cls, literal)
        self.literal = literal
        return self


class _OutOfRange(Exception):
    def __init__(self, literal: str) -> None:
        super().__init__(literal)
        self.literal = literal


class _Constant(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _parse_float(literal: str) -> float:
    f = GoFloat(literal)
    if not -_FLOAT64_MAX <= f <= _FLOAT64_MAX:  # inf: beyond float64
        raise _OutOfRange(literal)
    return f


def _parse_int(literal: str) -> int:
    # A float64 holds at most 309 integer digits; refusing longer literals
    # first also keeps int() from Python's 4300-digit limit (a ValueError).
    if len(literal.lstrip("-")) > 309 or abs(int(literal)) > _FLOAT64_MAX:
        raise _OutOfRange(literal)
    return int(literal)


def _parse_constant(name: str) -> float:
    raise _Constant(name)


_DECODER = json.JSONDecoder(
    parse_float=_parse_float, parse_int=_parse_int, parse_constant=_parse_constant
)


def _is_int64(v: object) -> bool:
    """What Go's strconv.ParseInt(literal, 10, 64) accepts: an integer literal in range."""
    return type(v) is int and _INT64_MIN <= v <= _INT64_MAX


def _literal(v: object) -> str:
    return v.literal if isinstance(v, GoFloat) else str(v)


def _depth_error(doc: str) -> str:
    """Go's message for a document nested too deep: the bracket that goes past the limit."""
    depth, deepest, char = 0, 0, "["
    for m in _BRACKETS.finditer(doc):
        tok = m.group()
        if tok in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest, char = depth, tok
                if depth > GO_MAX_DEPTH:
                    break
        elif tok in ("]", "}"):
            depth -= 1
    return f"invalid character '{char}' exceeded max depth"


def _fix_surrogates(v: Any) -> Any:
    """Lone surrogates become U+FFFD, as Go's decoder makes them (iterative: no recursion)."""
    if isinstance(v, str):
        return _LONE_SURROGATE.sub("\ufffd", v)
    root = [v]
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if isinstance(node, dict):
            node.clear()
        for key, item in items:
            value = _LONE_SURROGATE.sub("\ufffd", item) if isinstance(item, str) else item
            if isinstance(item, (dict, list)):
                stack.append(item)
            node[_LONE_SURROGATE.sub("\ufffd", key) if isinstance(key, str) else key] = value
    return root[0]


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
    start = len(doc) - len(doc.lstrip())
    try:
        value, _ = _DECODER.raw_decode(doc, start)
    except json.JSONDecodeError as e:
        raise BindError(_syntax_error(doc, e)) from None
    except _Constant as e:
        if e.name.startswith("-"):
            raise BindError("invalid character 'I' in numeric literal") from None
        raise BindError(f"invalid character '{e.name[0]}' looking for beginning of value") from None
    except _OutOfRange as e:
        raise BindError(
            f"json: cannot unmarshal number {e.literal} into Go value of type float64"
        ) from None
    except RecursionError:
        raise BindError(_depth_error(doc)) from None
    if _SURROGATE_ESCAPE.search(raw):
        value = _fix_surrogates(value)
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
        ok = _is_int64(v)
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
                if item is None:
                    continue
                shown = _json_kind(item)
                if shown == want and (code != "[]int" or _is_int64(item)):
                    continue
                if shown == "number" and code == "[]int":
                    shown = f"number {_literal(item)}"
                raise BindError(
                    f"json: cannot unmarshal {shown} into Go struct field "
                    f"{struct}.{field} of type {_GO_TYPE[code][2:]}"
                )
    if not ok:
        shown = kind
        if kind == "number" and code == "int":
            shown = f"number {_literal(v)}"
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


def go_int64(val: float) -> int:
    """Go's ``int64(f)`` of a JSON number on amd64: truncated; out of range is MinInt64."""
    f = float(val)
    if not -(2.0**63) <= f < 2.0**63:
        return _INT64_MIN
    return int(f)


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
            out[key] = go_int64(val)
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
