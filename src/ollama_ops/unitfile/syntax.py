"""systemd.syntax(7) parser and renderer: parse, render, quote, split words.

Parsing follows systemd's own config parser (src/shared/conf-parser.c):

* lines end at ``\\n``, ``\\r\\n``, ``\\r`` or NUL; a leading UTF-8 BOM is dropped;
* a line whose first non-blank character is ``#`` or ``;`` is a comment,
  also in the middle of a continuation; ``#`` inside a value is value text;
* a line ending in an unescaped backslash (an odd run of trailing
  backslashes) continues on the next line, the backslash becoming a space;
* blanks (space, tab, CR, LF) around keys and values are stripped, nothing
  else: other Unicode spaces are value text, as for systemd.

Where systemd only warns and ignores (a key before any section, a line with
no ``=``, an empty key, a header without ``]``) this parser raises
``UnitSyntaxError``: a unit ollama-ops reads should not rely on a line
being dropped.

``render`` is the only way this package writes unit files. It refuses any
name or value that could escape its line or its directive, so that for any
value it accepts, ``parse(render(...))`` gives back exactly that value; and
a value of a directive in ``unitfile.directives`` must parse as that
directive's grammar (``unitfile.grammar``), so that systemd reads exactly the
words meant (no ``any`` smuggled into IPAddressAllow= after a space).

The effective unit (fragment plus drop-ins) lives in ``unitfile.effective``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ollama_ops.errors import OpsError, UnitSyntaxError, UnsafeValueError
from ollama_ops.unitfile import directives, grammar
from ollama_ops.unitfile.paths import is_plain_path

__all__ = [
    "Assignment",
    "Section",
    "UnitFile",
    "UnitReadError",
    "escape_specifiers",
    "is_plain_path",
    "parse",
    "parse_environment",
    "quote_environment",
    "render",
    "split_words",
]

_BLANKS = " \t\n\r"  # systemd's WHITESPACE
_COMMENTS = "#;"
_EOL = re.compile(r"\r\n|\r|\n|\0")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHOWN = 60  # characters of an offending value quoted in an error message


class UnitReadError(OpsError):
    """A unit file, drop-in or search directory cannot be read."""


@dataclass(frozen=True)
class Assignment:
    """One ``Key=value`` line (continuations joined) of a unit file."""

    section: str
    key: str
    value: str
    path: str
    line: int  # 1-based line where the assignment starts


@dataclass(frozen=True)
class UnitFile:
    """A parsed unit file: its assignments in order, unknown keys included."""

    path: str
    assignments: tuple[Assignment, ...]
    sections: tuple[str, ...]  # section names in order of first appearance

    def get(self, section: str, key: str) -> list[str]:
        """The raw values of ``key`` in ``section``, in file order."""
        return [a.value for a in self.assignments if a.section == section and a.key == key]


def _show(text: str) -> str:
    shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
    return repr(shown)


def _continues(line: str) -> bool:
    """True if the line ends in an unescaped backslash (systemd's rule)."""
    run = len(line) - len(line.rstrip("\\"))
    return run % 2 == 1


def _physical_lines(text: str) -> list[str]:
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _EOL.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield (first line number, joined text) with comments and continuations handled."""
    pending: str | None = None
    start = 0
    for number, raw in enumerate(_physical_lines(text), start=1):
        stripped = raw.lstrip(_BLANKS)
        if stripped and stripped[0] in _COMMENTS:
            continue
        if pending is None:
            start = number
            joined = raw
        else:
            joined = pending + raw
        if _continues(joined):
            pending = joined[:-1] + " "
            continue
        pending = None
        yield start, joined
    if pending is not None:
        yield start, pending


def parse(text: str, path: str = "<string>") -> UnitFile:
    """Parse unit file text. Raises UnitSyntaxError naming ``path:line``."""
    assignments: list[Assignment] = []
    sections: list[str] = []
    section: str | None = None
    for number, joined in _logical_lines(text):
        line = joined.strip(_BLANKS)
        if not line:
            continue
        where = f"{path}:{number}"
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise UnitSyntaxError(
                    f"{where}: invalid section header {_show(line)}; write it as [Name] "
                    "alone on its line"
                )
            section = line[1:-1]
            if section not in sections:
                sections.append(section)
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise UnitSyntaxError(
                f"{where}: missing '=' in {_show(line)}; write Key=value, a [Section] "
                "header or a # comment"
            )
        key = key.strip(_BLANKS)
        if not key:
            raise UnitSyntaxError(f"{where}: missing key name before '=' in {_show(line)}")
        if section is None:
            raise UnitSyntaxError(
                f"{where}: {key}= appears before any [Section] header; move it below one"
            )
        assignments.append(Assignment(section, key, value.strip(_BLANKS), path, number))
    return UnitFile(path=path, assignments=tuple(assignments), sections=tuple(sections))


# ---------------------------------------------------------------- rendering

Section = tuple[str, Sequence[tuple[str, str]]]


def _control_char(text: str) -> str | None:
    for ch in text:
        if unicodedata.category(ch) == "Cc":
            return ch
    return None


def _check_name(kind: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise UnsafeValueError(
            f"{kind} name {_show(name)} is not valid; use letters, digits and '-', "
            "starting with a letter"
        )


def _check_value(section: str, key: str, value: str) -> None:
    what = f"value {_show(value)} for {section}.{key}="
    bad = _control_char(value)
    if bad is not None:
        raise UnsafeValueError(
            f"{what} contains the control character {bad!r}, which would end or corrupt "
            "the line; remove it"
        )
    if value.endswith("\\"):
        raise UnsafeValueError(
            f"{what} ends with a backslash, which would join the next line; remove it"
        )
    if value != value.strip(_BLANKS):
        raise UnsafeValueError(
            f"{what} has leading or trailing blanks, which systemd strips; remove them"
        )
    known = directives.lookup(key)
    if known is not None and known.accepted_in(section) is not None:
        bad = grammar.problem(known.grammar, value)
        if bad is not None:
            raise UnsafeValueError(
                f"{what} {bad}; {key}= takes {known.grammar.value} ({known.sample or 'see man'})"
            )


def render(sections: Sequence[Section], header: Sequence[str] = ()) -> str:
    """Render sections as unit file text, refusing anything that could escape its line.

    Header lines become ``#`` comments at the top. Raises UnsafeValueError
    naming the key and the value.
    """
    out: list[str] = []
    for text in header:
        bad = _control_char(text)
        if bad is not None:
            raise UnsafeValueError(
                f"header line {_show(text)} contains the control character {bad!r}; remove it"
            )
        out.append(f"# {text}" if text else "#")
    for index, (section, entries) in enumerate(sections):
        _check_name("section", section)
        if out and (index > 0 or header):
            out.append("")
        out.append(f"[{section}]")
        for key, value in entries:
            _check_name("key", key)
            _check_value(section, key, value)
            out.append(f"{key}={value}")
    return "\n".join(out) + "\n" if out else ""


def escape_specifiers(value: str) -> str:
    """Double every ``%`` so systemd expands no specifier in ``value``."""
    return value.replace("%", "%%")


def quote_environment(name: str, value: str) -> str:
    """The ``Environment=`` value that sets ``name`` to exactly ``value``.

    A double-quoted ``"NAME=value"`` with backslash and double quote escaped
    and ``%`` doubled. Raises UnsafeValueError for an invalid name or a value
    with control characters.
    """
    if not _ENV_NAME.fullmatch(name):
        raise UnsafeValueError(
            f"environment variable name {_show(name)} is not valid; use letters, digits "
            "and '_', not starting with a digit"
        )
    bad = _control_char(value)
    if bad is not None:
        raise UnsafeValueError(
            f"value {_show(value)} for environment variable {name} contains the control "
            f"character {bad!r}; remove it"
        )
    body = f"{name}={value}".replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escape_specifiers(body) + '"'


# ----------------------------------------------------------- word splitting

_SIMPLE_ESCAPES = {
    "a": 0x07,
    "b": 0x08,
    "f": 0x0C,
    "n": 0x0A,
    "r": 0x0D,
    "t": 0x09,
    "v": 0x0B,
    "\\": 0x5C,
    '"': 0x22,
    "'": 0x27,
    "s": 0x20,
}


def _hex(text: str) -> int | None:
    if text and all(c in "0123456789abcdefABCDEF" for c in text):
        return int(text, 16)
    return None


def _unescape_one(text: str, i: int) -> tuple[str, int]:
    """Decode the C escape whose letter is text[i] (systemd's cunescape_one).

    Returns the text it stands for and how many characters it used. A byte
    escape (``\\x..``, octal) of 0x80 or more becomes a surrogateescape
    character, so that escaped UTF-8 sequences can be joined afterwards.
    """
    c = text[i]
    if c in _SIMPLE_ESCAPES:
        return chr(_SIMPLE_ESCAPES[c]), 1
    if c == "x":
        digits = text[i + 1 : i + 3]
        n = _hex(digits)
        if n is None or len(digits) != 2 or n == 0:
            raise ValueError("invalid \\x escape")
        return _byte(n), 3
    if c in "uU":
        width = 4 if c == "u" else 8
        digits = text[i + 1 : i + 1 + width]
        n = _hex(digits)
        if n is None or len(digits) != width or n == 0 or n > 0x10FFFF or 0xD800 <= n <= 0xDFFF:
            raise ValueError(f"invalid \\{c} escape")
        return chr(n), 1 + width
    if c in "01234567":
        digits = text[i : i + 3]
        if len(digits) != 3 or any(d not in "01234567" for d in digits):
            raise ValueError("invalid octal escape")
        n = int(digits, 8)
        if n == 0 or n > 255:
            raise ValueError("invalid octal escape")
        return _byte(n), 3
    raise ValueError(f"unknown escape \\{c}")


def _byte(n: int) -> str:
    return chr(n) if n < 0x80 else chr(0xDC00 + n)


def _join_bytes(text: str) -> str:
    """Turn runs of escaped bytes that form UTF-8 back into characters."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text


def _words(value: str) -> Iterator[str]:
    """systemd's extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE), repeated.

    Raises ValueError at the first syntax error, after yielding the words before it.
    """
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in _BLANKS:
            i += 1
        if i >= n:
            return
        word: list[str] = []
        quote = ""
        while i < n:
            c = value[i]
            if c == "\\":
                if i + 1 >= n:
                    raise ValueError("trailing backslash")
                text, used = _unescape_one(value, i + 1)
                word.append(text)
                i += 1 + used
            elif quote:
                if c != quote:
                    word.append(c)
                else:
                    quote = ""
                i += 1
            elif c in "'\"":
                quote = c
                i += 1
            elif c in _BLANKS:
                break
            else:
                word.append(c)
                i += 1
        if quote:
            raise ValueError("unbalanced quote")
        yield _join_bytes("".join(word))


def split_words(value: str) -> list[str]:
    """Split like systemd does for Environment=, ExecStart= and friends.

    Blanks separate words; "..." and '...' group them (quotes may start
    mid-word and are removed); C escapes (``\\n``, ``\\"``, ``\\x41``,
    ``\\s``, ...) are decoded inside and outside quotes. Raises
    UnitSyntaxError for an unbalanced quote or an invalid escape.
    """
    words: list[str] = []
    try:
        for word in _words(value):
            words.append(word)
    except ValueError as exc:
        raise UnitSyntaxError(
            f'cannot split {_show(value)} into words: {exc}; quote with "..." and escape '
            "backslashes as \\\\"
        ) from None
    return words


def _expand_percent(value: str) -> str:
    # Only %% is known without a unit context; other specifiers stay as written.
    return value.replace("%%", "%")


def parse_environment(values: Sequence[str]) -> dict[str, str]:
    """The environment that ``Environment=`` values (in order) set.

    Later assignments win; an empty value resets everything before it. As in
    systemd, a value with a syntax error keeps the words before the error,
    and words that are not ``NAME=value`` are ignored.
    """
    env: dict[str, str] = {}
    for raw in values:
        if raw == "":
            env.clear()
            continue
        try:
            for word in _words(_expand_percent(raw)):
                name, eq, val = word.partition("=")
                if eq and _ENV_NAME.fullmatch(name):
                    env[name] = val
        except ValueError:
            continue
    return env
