"""EnvironmentFile= contents, read with systemd's own grammar (src/basic/env-file.c).

The same state machine as systemd's ``parse_env_file_internal``, character by
character:

* a line whose first non-blank character is ``#`` or ``;`` is a comment (a
  backslash at its end no longer continues it, as since systemd 254);
* ``KEY=VALUE``: blanks around the key and before the value are dropped, and
  trailing blanks of an unquoted value; a line without ``=`` is ignored;
* outside quotes a backslash takes the next character literally, and a
  backslash before a newline joins the lines;
* ``'...'`` keeps everything literally, newlines included; ``"..."`` too,
  except that ``\\"``, ``\\\\``, ``\\``` and ``\\$`` lose their backslash and a
  backslash-newline is dropped; quoted and unquoted parts join into one
  value (``A="x"y`` is ``xy``);
* the text ends at the first NUL byte, as systemd reads a C string.

Names that are not valid variable names are dropped, as ``strv_env_clean``
does before the service starts; a later assignment of a name wins. Invalid
UTF-8 in a key or value makes systemd refuse the whole file
(``check_utf8ness_and_warn``): ``parse`` raises ``EnvFileError`` then. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, auto

from ollama_ops.errors import OpsError

_WHITESPACE = " \t\n\r"
_NEWLINE = "\n\r"
_COMMENTS = "#;"
_SHELL_NEED_ESCAPE = '"\\`$'
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EnvFileError(OpsError):
    """An environment file systemd would refuse as a whole."""


class _S(Enum):
    PRE_KEY = auto()
    KEY = auto()
    PRE_VALUE = auto()
    VALUE = auto()
    VALUE_ESCAPE = auto()
    SINGLE_QUOTE_VALUE = auto()
    DOUBLE_QUOTE_VALUE = auto()
    DOUBLE_QUOTE_VALUE_ESCAPE = auto()
    COMMENT = auto()
    COMMENT_ESCAPE = auto()


@dataclass
class _Parser:
    """The state of systemd's parser; ``feed`` is one step of its loop."""

    state: _S = _S.PRE_KEY
    line: int = 1  # the current line (counted by LF, for messages)
    start: int = 1  # the line the current key started on
    key: str = ""
    value: str = ""
    key_ws: int | None = None  # where trailing blanks of the key start
    value_ws: int | None = None  # where trailing blanks of an unquoted value start

    def __post_init__(self) -> None:
        self.out: list[tuple[int, str, str]] = []

    def push(self, chomp: bool) -> None:
        key = self.key if self.key_ws is None else self.key[: self.key_ws]
        value = self.value
        if chomp and self.value_ws is not None:
            value = value[: self.value_ws]
        self.out.append((self.start, key, value))
        self.key, self.value = "", ""

    def feed(self, c: str) -> None:
        s = self.state
        if s is _S.PRE_KEY:
            if c in _COMMENTS:
                self.state = _S.COMMENT
            elif c not in _WHITESPACE:
                self.state, self.key_ws, self.key, self.start = _S.KEY, None, c, self.line
        elif s is _S.KEY:
            if c in _NEWLINE:
                self.state, self.key = _S.PRE_KEY, ""
            elif c == "=":
                self.state, self.value_ws = _S.PRE_VALUE, None
            else:
                if c not in _WHITESPACE:
                    self.key_ws = None
                elif self.key_ws is None:
                    self.key_ws = len(self.key)
                self.key += c
        elif s is _S.PRE_VALUE:
            if c in _NEWLINE:
                self.state = _S.PRE_KEY
                self.push(chomp=False)
            elif c == "'":
                self.state = _S.SINGLE_QUOTE_VALUE
            elif c == '"':
                self.state = _S.DOUBLE_QUOTE_VALUE
            elif c == "\\":
                self.state = _S.VALUE_ESCAPE
            elif c not in _WHITESPACE:
                self.state = _S.VALUE
                self.value += c
        elif s is _S.VALUE:
            if c in _NEWLINE:
                self.state = _S.PRE_KEY
                self.push(chomp=True)
            elif c == "\\":
                self.state, self.value_ws = _S.VALUE_ESCAPE, None
            else:
                if c not in _WHITESPACE:
                    self.value_ws = None
                elif self.value_ws is None:
                    self.value_ws = len(self.value)
                self.value += c
        elif s is _S.VALUE_ESCAPE:
            self.state = _S.VALUE
            if c not in _NEWLINE:  # an escaped newline is eaten entirely
                self.value += c
        elif s is _S.SINGLE_QUOTE_VALUE:
            if c == "'":
                self.state = _S.PRE_VALUE
            else:
                self.value += c
        elif s is _S.DOUBLE_QUOTE_VALUE:
            if c == '"':
                self.state = _S.PRE_VALUE
            elif c == "\\":
                self.state = _S.DOUBLE_QUOTE_VALUE_ESCAPE
            else:
                self.value += c
        elif s is _S.DOUBLE_QUOTE_VALUE_ESCAPE:
            self.state = _S.DOUBLE_QUOTE_VALUE
            if c in _SHELL_NEED_ESCAPE:
                self.value += c
            elif c != "\n":
                self.value += "\\" + c
        elif s is _S.COMMENT:
            if c == "\\":
                self.state = _S.COMMENT_ESCAPE
            elif c in _NEWLINE:
                self.state = _S.PRE_KEY
        elif s is _S.COMMENT_ESCAPE:
            self.state = _S.PRE_KEY if c in _NEWLINE else _S.COMMENT
        if c == "\n":
            self.line += 1

    def finish(self) -> None:
        if self.state in (
            _S.PRE_VALUE,
            _S.VALUE,
            _S.VALUE_ESCAPE,
            _S.SINGLE_QUOTE_VALUE,
            _S.DOUBLE_QUOTE_VALUE,
            _S.DOUBLE_QUOTE_VALUE_ESCAPE,
        ):
            self.push(chomp=self.state is _S.VALUE)


def parse(text: str) -> list[tuple[int, str, str]]:
    """(line, NAME, value) for each assignment systemd would keep, in file order.

    ``text`` may hold surrogate escapes (bytes that were not UTF-8, decoded
    with ``surrogateescape``); systemd refuses such a file, and so does this.
    """
    parser = _Parser()
    for c in text.split("\0", 1)[0]:
        parser.feed(c)
    parser.finish()
    out: list[tuple[int, str, str]] = []
    for line, key, value in parser.out:
        for part, what in ((key, "key"), (value, "value")):
            if any("\udc80" <= ch <= "\udcff" for ch in part):
                raise EnvFileError(
                    f"line {line}: invalid UTF-8 in a {what}; systemd refuses the whole file"
                )
        if _NAME.fullmatch(key):
            out.append((line, key, value))
    return out
