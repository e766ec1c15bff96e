"""systemd.syntax(7) parser and renderer, and the effective unit.

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
value it accepts, ``parse(render(...))`` gives back exactly that value.

``load_effective`` reproduces how systemd assembles a system unit from its
fragment and drop-ins under a root directory. Aliases (other names of the
unit made by symlinks) are not followed.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ollama_ops.errors import ConfigError, OpsError, UnitSyntaxError, UnsafeValueError

__all__ = [
    "Assignment",
    "EffectiveUnit",
    "Section",
    "UnitFile",
    "UnitReadError",
    "escape_specifiers",
    "load_effective",
    "parse",
    "parse_environment",
    "quote_environment",
    "render",
    "split_words",
    "unit_search_path",
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


_PLAIN_PATH_RE = re.compile(r"^/[A-Za-z0-9._/@+-]*$")


def is_plain_path(text: str) -> bool:
    """An absolute path that stands as one word in any directive: no spaces,
    quotes, '%' specifiers, control characters, '..' or '//'."""
    return bool(_PLAIN_PATH_RE.match(text)) and "/../" not in f"{text}/" and "//" not in text


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


# ---------------------------------------------------------- effective unit

# Dependencies cannot be reset by an empty assignment: systemd ignores it.
_NO_RESET = frozenset(
    {
        ("Unit", k)
        for k in (
            "After",
            "Before",
            "Wants",
            "Requires",
            "Requisite",
            "BindsTo",
            "BindTo",
            "PartOf",
            "Upholds",
            "Conflicts",
            "OnFailure",
            "OnSuccess",
            "PropagatesReloadTo",
            "ReloadPropagatedFrom",
            "PropagatesStopTo",
            "StopPropagatedFrom",
            "JoinsNamespaceOf",
        )
    }
)


@dataclass(frozen=True)
class EffectiveUnit:
    """A unit as systemd assembles it: the fragment, then its drop-ins."""

    name: str
    fragment: str | None  # path inside the root, e.g. /etc/systemd/system/ollama.service
    dropins: tuple[str, ...]  # drop-in paths (inside the root) in application order
    assignments: tuple[Assignment, ...]  # fragment then drop-ins, in application order
    masked: bool

    def values(self, section: str, key: str) -> list[Assignment]:
        """List semantics: every assignment in order, an empty one resetting the list.

        The resetting assignment itself is not returned. For dependency keys
        in [Unit] (After=, Wants=, ...) systemd ignores an empty assignment,
        and so does this.
        """
        out: list[Assignment] = []
        resettable = (section, key) not in _NO_RESET
        for a in self.assignments:
            if a.section != section or a.key != key:
                continue
            if a.value == "":
                if resettable:
                    out.clear()
                continue
            out.append(a)
        return out

    def last(self, section: str, key: str) -> Assignment | None:
        """Single-value semantics: the last assignment wins; None if it is empty or absent."""
        found: Assignment | None = None
        for a in self.assignments:
            if a.section == section and a.key == key:
                found = a
        if found is None or found.value == "":
            return None
        return found


_SEARCH_DIRS = (
    "etc/systemd/system.control",
    "run/systemd/system.control",
    "run/systemd/transient",
    "run/systemd/generator.early",
    "etc/systemd/system",
    "etc/systemd/system.attached",
    "run/systemd/system",
    "run/systemd/system.attached",
    "run/systemd/generator",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
    "run/systemd/generator.late",
)

_MAX_LINKS = 40


def _inside(root: Path, path: str) -> Path:
    """The host path of ``path`` (absolute, as seen inside root), symlinks resolved within root.

    Absolute link targets are taken relative to the root, as systemd does
    with --root; ``..`` never climbs above it. Missing components are kept
    as they are.
    """
    parts = list(PurePosixPath(path).parts[1:])
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        current = root.joinpath(*resolved, part)
        if current.is_symlink():
            links += 1
            if links > _MAX_LINKS:
                raise UnitReadError(f"{path}: too many levels of symbolic links under {root}")
            target = os.readlink(current)
            if target.startswith("/"):
                resolved = []
            parts = list(PurePosixPath(target).parts) + parts
            if parts and parts[0] == "/":
                parts.pop(0)
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def unit_search_path(root: Path) -> list[Path]:
    """systemd's system unit search path under ``root``, highest priority first.

    Directories that resolve (within the root) to one listed earlier are left
    out, e.g. lib/systemd/system when /lib links to usr/lib.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for rel in _SEARCH_DIRS:
        resolved = _inside(root, "/" + rel)
        if resolved in seen:
            continue
        seen.add(resolved)
        out.append(root / rel)
    return out


def _as_inside(root: Path, host: Path) -> str:
    return "/" + host.relative_to(root).as_posix()


def _is_mask(root: Path, inside: str) -> bool:
    """A symlink to /dev/null or an empty file masks (systemd's null_or_empty)."""
    host = _inside(root, inside)
    if host == root / "dev" / "null":
        return True
    try:
        return host.is_file() and host.stat().st_size == 0
    except OSError as exc:
        raise UnitReadError(f"cannot read {inside} (under {root}): {exc.strerror}") from None


def _is_unit_file(root: Path, inside: str) -> bool:
    """A regular file (through symlinks, within root) or a mask."""
    host = _inside(root, inside)
    return host == root / "dev" / "null" or host.is_file()


def _read(root: Path, inside: str) -> UnitFile:
    host = _inside(root, inside)
    try:
        data = host.read_bytes()
    except OSError as exc:
        raise UnitReadError(
            f"cannot read {inside} (under {root}): {exc.strerror}; check it exists and is readable"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnitSyntaxError(
            f"{inside}: not valid UTF-8 at byte {exc.start}; re-save the file as UTF-8"
        ) from None
    return parse(text, inside)


_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.[a-z]+")


def _split_name(unit_name: str) -> tuple[str, str, str | None]:
    """(prefix, type, instance) of a unit name; instance None if not instantiated."""
    if not _UNIT_NAME.fullmatch(unit_name) or unit_name.startswith("."):
        raise ConfigError(
            f"{unit_name!r} is not a valid unit name; expected e.g. ollama.service "
            "or ollama@gpu0.service"
        )
    stem, _, kind = unit_name.rpartition(".")
    prefix, at, instance = stem.partition("@")
    return prefix, kind, (instance if at else None)


def _dash_prefixes(prefix: str) -> list[str]:
    """foo-bar-baz -> [foo-bar-, foo-]: systemd's unit_file_find_dirs() recursion."""
    out: list[str] = []
    current = prefix
    while True:
        chopped = False
        while True:
            dash = current.rfind("-")
            if dash <= 0:
                return out
            if dash + 1 < len(current) or chopped:
                current = current[: dash + 1]
                break
            current = current[:dash]  # a trailing dash: chop it off, once
            chopped = True
        out.append(current)


def _dropin_names(unit_name: str) -> list[str]:
    """Names whose ``.d`` directories hold drop-ins for ``unit_name``, in systemd's order.

    The unit itself, its template, then the dash-prefix names
    (foo-bar-baz.service -> foo-bar-.service, foo-.service); the type-level
    ``service.d`` directories are added by the caller after all search dirs.
    """
    prefix, kind, instance = _split_name(unit_name)
    names = [unit_name]
    if instance is not None:
        names.append(f"{prefix}@.{kind}")
    names.extend(f"{p}.{kind}" for p in _dash_prefixes(prefix))
    return names


def _conf_files(root: Path, directory: Path) -> list[str]:
    host = _inside(root, _as_inside(root, directory))
    if not host.is_dir():
        return []
    try:
        entries = sorted(os.listdir(host))
    except OSError as exc:
        raise UnitReadError(f"cannot list {_as_inside(root, directory)}: {exc.strerror}") from None
    return [e for e in entries if e.endswith(".conf") and not e.startswith(".")]


def load_effective(root: Path, unit_name: str) -> EffectiveUnit:
    """Assemble ``unit_name`` from its fragment and drop-ins under ``root``.

    The fragment is the first file of that name in the search path (for an
    instance, else its template); a symlink to /dev/null or an empty file
    masks the unit. Drop-ins are ``*.conf`` in ``<name>.d/`` for the unit,
    its template and its dash prefixes in every search directory, then in
    ``<type>.d/``; a file name seen in a higher-priority directory hides
    the same name further down, and the survivors apply sorted by name.
    Masking drop-ins (empty, or linked to /dev/null) hide and add nothing.
    """
    prefix, kind, instance = _split_name(unit_name)
    search = unit_search_path(root)

    fragment: str | None = None
    candidates = [unit_name] if instance is None else [unit_name, f"{prefix}@.{kind}"]
    for name in candidates:
        for directory in search:
            inside = _as_inside(root, directory / name)
            if _is_unit_file(root, inside):
                fragment = inside
                break
        if fragment is not None:
            break

    if fragment is not None and _is_mask(root, fragment):
        return EffectiveUnit(unit_name, fragment, (), (), masked=True)

    dirs: list[Path] = []
    names = _dropin_names(unit_name)
    for directory in search:
        dirs.extend(directory / f"{name}.d" for name in names)
    dirs.extend(directory / f"{kind}.d" for directory in search)

    chosen: dict[str, str] = {}
    for directory in dirs:
        for entry in _conf_files(root, directory):
            inside = _as_inside(root, directory / entry)
            if entry not in chosen and _is_unit_file(root, inside):
                chosen[entry] = inside

    dropins: list[str] = []
    assignments: list[Assignment] = []
    if fragment is not None:
        assignments.extend(_read(root, fragment).assignments)
    for entry in sorted(chosen):
        inside = chosen[entry]
        if _is_mask(root, inside):
            continue
        dropins.append(inside)
        assignments.extend(_read(root, inside).assignments)
    return EffectiveUnit(unit_name, fragment, tuple(dropins), tuple(assignments), masked=False)
