"""The grammar of each directive's value: what words systemd will read from it.

A value that passes the line checks of ``syntax.render`` can still mean more
than it says: ``IPAddressAllow=fe80::1%x any`` is two words to systemd, and
the second one allows every address. Every directive in the table carries
one of these grammars, and ``syntax.render`` refuses a value that does not
parse as exactly that: for word lists, every word must be a word of that
list (an address, a device and its access, a CPU range, a path, a group, an
address family, ...), with no quotes, backslashes or ``%`` specifiers that
would let systemd split or expand it into something else. Pure.

``problem(grammar, value)`` returns None for a value the grammar accepts,
otherwise a short reason for the one-line error.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from enum import Enum

from ollama_ops.errors import OpsError
from ollama_ops.unitfile.paths import is_plain_path, writable_problem

# The largest NR_CPUS a Linux kernel can be built with (x86 MAXSMP, powerpc):
# no CPU number is 8192 or higher, so a list naming one is wrong, not big.
MAX_CPUS = 8192


class Grammar(str, Enum):
    """How systemd reads a directive's value."""

    TEXT = "text"  # free text on one line (Description=, OnCalendar=)
    WORD = "word"  # one word: an enum value, an identifier
    WORDS = "words"  # words of the same characters
    BOOL = "bool"
    UINT = "uint"  # 0 .. 2^32-1
    INT = "int"  # a signed number (Nice=, OOMScoreAdjust=)
    WEIGHT = "weight"  # 1 .. 10000 or idle (CPUWeight=, IOWeight=)
    PERCENT = "percent"  # CPUQuota=
    OCTAL = "octal"  # UMask=, StateDirectoryMode=
    TIMESPAN = "timespan"
    SIZE = "size"  # bytes with K/M/G/T/P/E, a share of RAM, infinity
    TASKS = "tasks"  # TasksMax=: a number, a share, infinity
    LIMIT = "limit"  # resource limits: soft[:hard], each a number, size or infinity
    UNITS = "units"  # unit names
    URLS = "urls"
    COMMAND = "command"  # ExecStart=: an absolute program and plain arguments
    PATH = "path"  # one absolute path, with the directive's prefix characters
    PATHS = "paths"  # absolute paths, each with optional '-' / '+'
    WRITABLE_PATHS = "writable-paths"  # ReadWritePaths=: PATHS, none of them a system directory
    BIND_PATHS = "bind-paths"  # BindPaths=: source[:destination[:options]]
    MOUNT_PATHS = "mount-paths"  # TemporaryFileSystem=: path[:options]
    RELATIVE_PATHS = "relative-paths"  # StateDirectory=: below /var/lib and friends
    NAME = "name"  # a user or group
    NAMES = "names"
    ENVIRONMENT = "environment"  # NAME=value assignments, quoted as systemd splits them
    ADDRESSES = "addresses"  # IPAddressAllow=: prefixes and the four special names
    DEVICE = "device"  # DeviceAllow=: a node or class, then an access mode
    CPUS = "cpus"  # AllowedCPUs=: numbers and ranges below MAX_CPUS
    FAMILIES = "families"  # RestrictAddressFamilies=
    SYSCALLS = "syscalls"  # SystemCallFilter=
    CAPABILITIES = "capabilities"
    NAMESPACES = "namespaces"  # RestrictNamespaces=: a boolean or namespace names
    EXIT_STATUSES = "exit-statuses"


_WORD_CHARS = r"[A-Za-z0-9_.:+@/=,-]+"
_WORD = re.compile(_WORD_CHARS)
_BOOLS = frozenset({"1", "yes", "y", "true", "t", "on", "0", "no", "n", "false", "f", "off"})
_UINT32 = 2**32 - 1
_SPECIAL_ADDRESSES = frozenset({"any", "localhost", "link-local", "multicast"})
_NAMESPACE_NAMES = frozenset({"cgroup", "ipc", "net", "mnt", "pid", "user", "uts", "time"})
_SIZE = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,9})?[KMGTPE]?")
_SHARE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,9})?(?:%|‰|‱)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10}")
_UNIT = re.compile(
    r"[A-Za-z0-9:_.@-]+\."
    r"(?:service|socket|target|device|mount|automount|swap|timer|path|slice|scope)"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CPU_ITEM = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")
_DEVICE_CLASS = re.compile(r"(?:char|block)-[A-Za-z0-9_.*+-]+")
_ACCESS = re.compile(r"(?=[rwm]{1,3}\Z)(?!.*(.).*\1)[rwm]+")
_RELATIVE = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*(?:/[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*)*")
_SHARES = "%‰‱"  # literal in the values of directives that expand no specifiers
_OCTAL = re.compile(r"[0-7]{3,4}")
_PERCENT = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,3})?%")
_URL = re.compile(r"(?:https?|file|info|man):[A-Za-z0-9_.~:/?#@!&*+,;=()\[\]-]+")
_COMMAND_ARG = re.compile(r"[A-Za-z0-9_.,:=/@+-]+")
_AF = re.compile(r"AF_[A-Z0-9]+|none")
_SYSCALL = re.compile(r"@?[a-z0-9_-]+(?::[A-Za-z0-9]+)?")
_CAP = re.compile(r"CAP_[A-Z_]+")
_EXIT = re.compile(r"[0-9]{1,3}|SIG[A-Z0-9]+")

Check = Callable[[str], str | None]


def _words(value: str, allow: str = "") -> tuple[list[str], str | None]:
    """Blank-separated words of a value that systemd cannot split any other way.

    Quotes, backslashes and '%' would let systemd unquote, unescape or expand
    a word into something else; only printable ASCII is accepted, and the
    characters in ``allow`` (the '%' of a percentage, for directives that
    expand no specifiers).
    """
    for ch in value:
        if ch in allow:
            continue
        if not " " <= ch <= "~":
            return [], f"contains {ch!r}, which is not a plain ASCII character"
        if ch in "\"'\\%":
            return [], f"contains {ch!r}, which systemd would unquote or expand"
    return value.split(), None


def _matches(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda word: pattern.fullmatch(word) is not None


def _each(ok: Callable[[str], bool], what: str, *, tilde: bool = False, allow: str = "") -> Check:
    """Every blank-separated word satisfies ``ok`` (after one leading '~' if ``tilde``)."""

    def check(value: str) -> str | None:
        words, bad = _words(value, allow)
        if bad:
            return bad
        if tilde and words and words[0].startswith("~"):
            words[0] = words[0][1:]
        if not words or not words[0]:
            return f"has no {what}"
        for word in words:
            if not ok(word):
                return f"has the word {word!r}, which is not {what}"
        return None

    return check


def _one(ok: Callable[[str], bool], what: str, allow: str = "") -> Check:
    """Exactly one word, satisfying ``ok``."""
    each = _each(ok, what, allow=allow)

    def check(value: str) -> str | None:
        bad = each(value)
        if bad is None and len(value.split()) != 1:
            return f"is {len(value.split())} words where systemd expects one {what}"
        return bad

    return check


def _address(word: str) -> bool:
    if word in _SPECIAL_ADDRESSES:
        return True
    if not re.fullmatch(r"[0-9A-Fa-f:.]+(?:/[0-9]{1,3})?", word):
        return False
    try:
        ipaddress.ip_network(word, strict=False)
    except ValueError:
        return False
    return True


def _uint(word: str) -> bool:
    return re.fullmatch(r"[0-9]{1,10}", word) is not None and int(word) <= _UINT32


def _int(word: str) -> bool:
    return re.fullmatch(r"-?[0-9]{1,10}", word) is not None and abs(int(word)) <= _UINT32


def _weight(word: str) -> bool:
    return word == "idle" or (
        re.fullmatch(r"[0-9]{1,5}", word) is not None and 1 <= int(word) <= 10000
    )


def _size(word: str) -> bool:
    return word == "infinity" or bool(_SIZE.fullmatch(word) or _SHARE.fullmatch(word))


def _tasks(word: str) -> bool:
    return word == "infinity" or bool(re.fullmatch(r"[0-9]{1,10}", word) or _SHARE.fullmatch(word))


def _limit_part(text: str) -> bool:
    return text == "infinity" or _SIZE.fullmatch(text) is not None


def _limit(word: str) -> bool:
    soft, sep, hard = word.partition(":")
    return _limit_part(soft) and (not sep or _limit_part(hard))


def _plain(word: str, prefixes: str) -> bool:
    return is_plain_path(word.lstrip(prefixes))


def _path(prefixes: str) -> Callable[[str], bool]:
    return lambda word: _plain(word, prefixes)


def _writable(word: str) -> bool:
    path = word.lstrip("-+")
    return is_plain_path(path) and writable_problem(path) is None


def _bind_path(word: str) -> bool:
    parts = word.lstrip("-").split(":")
    return (
        1 <= len(parts) <= 3
        and all(is_plain_path(p) for p in parts[:2])
        and (len(parts) < 3 or parts[2] in ("rbind", "norbind"))
    )


def _mount_path(word: str) -> bool:
    path, _sep, options = word.partition(":")
    return is_plain_path(path) and re.fullmatch(r"[A-Za-z0-9_=,.-]*", options) is not None


def _relative(word: str) -> bool:
    return _RELATIVE.fullmatch(word) is not None and all(
        part not in (".", "..") for part in word.split("/")
    )


def cpu_ranges(text: str) -> list[tuple[int, int]] | None:
    """The (first, last) ranges of a CPU list ("0-3,8 10-11"), or None if it is not one.

    Numbers are ASCII digits, each below MAX_CPUS; a range runs upwards.
    """
    items = [w for w in re.split(r"[ ,]", text) if w]
    if not items or any(not ("0" <= c <= "9" or c in "-, ") for c in text):
        return None
    ranges: list[tuple[int, int]] = []
    for item in items:
        match = _CPU_ITEM.fullmatch(item)
        if match is None:
            return None
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first or last >= MAX_CPUS:
            return None
        ranges.append((first, last))
    return ranges


def _cpus(value: str) -> str | None:
    if cpu_ranges(value) is None:
        return (
            f"is not a CPU list of numbers and ranges below {MAX_CPUS} (the kernel's "
            'largest NR_CPUS), e.g. "0-15,32-47"'
        )
    return None


def _device(value: str) -> str | None:
    words, bad = _words(value)
    if bad:
        return bad
    if not 1 <= len(words) <= 2:
        return "must be a device node or class followed by an access mode such as rw"
    node = words[0]
    if not (
        (is_plain_path(node) and node.startswith(("/dev/", "/sys/")))
        or _DEVICE_CLASS.fullmatch(node)
    ):
        return f"names {node!r}, which is neither a /dev node nor a char-/block- class"
    if len(words) == 2 and _ACCESS.fullmatch(words[1]) is None:
        return f"has the access mode {words[1]!r}; write r, w, m or a combination such as rw"
    return None


def _environment(value: str) -> str | None:
    from ollama_ops.unitfile.syntax import split_words  # syntax imports this module

    if "%" in value.replace("%%", ""):
        return "has a '%' specifier that systemd would expand; double it as %%"
    try:
        words = split_words(value.replace("%%", "%"))
    except OpsError as exc:
        return str(exc)
    for word in words:
        name, eq, _rest = word.partition("=")
        if not eq or _ENV_NAME.fullmatch(name) is None:
            return f"has the word {word[:40]!r}, which is not NAME=value"
    return None


def _command(value: str) -> str | None:
    words, bad = _words(value)
    if bad:
        return bad
    if not words:
        return "has no program"
    if not is_plain_path(words[0].lstrip("-@:+!")):
        return f"runs {words[0]!r}, which is not an absolute path"
    for word in words[1:]:
        if _COMMAND_ARG.fullmatch(word) is None:
            return f"has the argument {word!r}, which is not a plain word"
    return None


def _bool(word: str) -> bool:
    return word.lower() in _BOOLS


def _namespaces(value: str) -> str | None:
    if _bool(value):
        return None
    return _each(lambda w: w in _NAMESPACE_NAMES, "a namespace name", tilde=True)(value)


_TIME_PART = re.compile(r" *([0-9]{1,12}(?:\.[0-9]{0,9})?|\.[0-9]{1,9}) *([A-Za-zµ]*)")
_TIME_UNITS = frozenset(
    [
        "usec",
        "us",
        "µs",
        "msec",
        "ms",
        "seconds",
        "second",
        "sec",
        "s",
        "minutes",
        "minute",
        "min",
        "m",
        "hours",
        "hour",
        "hr",
        "h",
        "days",
        "day",
        "d",
        "weeks",
        "week",
        "w",
        "months",
        "month",
        "M",
        "years",
        "year",
        "y",
    ]
)


def _timespan(value: str) -> str | None:
    """systemd's parse_sec(): numbers each with an optional unit, or infinity."""
    if value == "infinity":
        return None
    pos = 0
    while pos < len(value):
        match = _TIME_PART.match(value, pos)
        if match is None or match.end() == pos or match.group(2) not in _TIME_UNITS | {""}:
            return "is not a time span such as 30, 5min or 1h 30s"
        pos = match.end()
    return None


_CHECKS: dict[Grammar, Check] = {
    Grammar.TEXT: lambda value: None,
    Grammar.WORD: _one(_matches(_WORD), "word"),
    Grammar.WORDS: _each(_matches(_WORD), "a plain word"),
    Grammar.BOOL: _one(_bool, "boolean (yes or no)"),
    Grammar.UINT: _one(_uint, f"whole number from 0 to {_UINT32}"),
    Grammar.INT: _one(_int, "whole number"),
    Grammar.WEIGHT: _one(_weight, "weight from 1 to 10000"),
    Grammar.PERCENT: _one(_matches(_PERCENT), "percentage such as 200%", _SHARES),
    Grammar.OCTAL: _one(_matches(_OCTAL), "octal mode such as 0077"),
    Grammar.TIMESPAN: _timespan,
    Grammar.SIZE: _one(_size, "size such as 48G, 80% or infinity", _SHARES),
    Grammar.TASKS: _one(_tasks, "number, percentage or infinity", _SHARES),
    Grammar.LIMIT: _one(_limit, "limit such as 65536, 8M or infinity"),
    Grammar.UNITS: _each(_matches(_UNIT), "a unit name"),
    Grammar.URLS: _each(_matches(_URL), "a URL"),
    Grammar.COMMAND: _command,
    Grammar.PATH: _one(_path("-!|"), "absolute path"),
    Grammar.PATHS: _each(_path("-+"), "an absolute path"),
    Grammar.WRITABLE_PATHS: _each(_writable, "an absolute path outside the system directories"),
    Grammar.BIND_PATHS: _each(_bind_path, "source[:destination[:options]]"),
    Grammar.MOUNT_PATHS: _each(_mount_path, "path[:options]"),
    Grammar.RELATIVE_PATHS: _each(_relative, "a relative path without . or .."),
    Grammar.NAME: _one(_matches(_NAME), "user or group name"),
    Grammar.NAMES: _each(_matches(_NAME), "a user or group name"),
    Grammar.ENVIRONMENT: _environment,
    Grammar.ADDRESSES: _each(
        _address, "an IP address, prefix, any, localhost, link-local or multicast"
    ),
    Grammar.DEVICE: _device,
    Grammar.CPUS: _cpus,
    Grammar.FAMILIES: _each(_matches(_AF), "an AF_ address family", tilde=True),
    Grammar.SYSCALLS: _each(_matches(_SYSCALL), "a system call or @group", tilde=True),
    Grammar.CAPABILITIES: _each(_matches(_CAP), "a CAP_ capability", tilde=True),
    Grammar.NAMESPACES: _namespaces,
    Grammar.EXIT_STATUSES: _each(_matches(_EXIT), "an exit status or signal name"),
}


def problem(grammar: Grammar, value: str) -> str | None:
    """Why ``value`` (as written in the file) is not a value of ``grammar``; None if it is.

    An empty value is a reset and always allowed.
    """
    if value == "" or grammar is Grammar.TEXT:
        return None
    return _CHECKS[grammar](value)
