"""Journal records from `journalctl -o json` lines or the default short text. Pure parsing.

A :class:`Record` keeps what the classifiers need: the time, the message,
who wrote it (systemd about the unit, or the service itself) and systemd's
structured result fields where present. `journalctl -o json` is what
``ollama-ops logs`` reads; the short text form (``Aug 21 10:00:00 host
ollama[123]: ...``) is what people paste into bug reports and what
``--input`` also accepts.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ollama_ops.errors import OpsError

# The journal fields `logs` asks journalctl for (plus the ones it always prints).
FIELDS = (
    "MESSAGE",
    "PRIORITY",
    "SYSLOG_IDENTIFIER",
    "_COMM",
    "_PID",
    "_SYSTEMD_UNIT",
    "UNIT",
    "MESSAGE_ID",
    "UNIT_RESULT",
    "EXIT_CODE",
    "EXIT_STATUS",
    "_SYSTEMD_INVOCATION_ID",
    "INVOCATION_ID",
)


@dataclass(frozen=True)
class Record:
    time: float  # seconds since the epoch (0.0 when unknown)
    message: str
    identifier: str = ""  # SYSLOG_IDENTIFIER: "systemd" for the manager's lines about the unit
    pid: int | None = None
    unit: str = ""  # the unit the line is from or about
    result: str = ""  # UNIT_RESULT of systemd's "Failed with result" line

    @property
    def from_systemd(self) -> bool:
        return self.identifier in ("systemd", "init") or self.pid == 1


def _message(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) for b in value):
        return bytes(b & 0xFF for b in value).decode("utf-8", errors="replace")
    return ""


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def from_json(data: dict[str, object]) -> Record:
    """One `journalctl -o json` object."""
    realtime = _int(data.get("__REALTIME_TIMESTAMP"))
    identifier = data.get("SYSLOG_IDENTIFIER") or data.get("_COMM") or ""
    return Record(
        time=realtime / 1e6 if realtime else 0.0,
        message=_message(data.get("MESSAGE")).rstrip("\n"),
        identifier=str(identifier),
        pid=_int(data.get("_PID")),
        unit=str(data.get("UNIT") or data.get("_SYSTEMD_UNIT") or ""),
        result=str(data.get("UNIT_RESULT") or ""),
    )


def parse_json_lines(lines: Iterable[str], source: str) -> Iterator[Record]:
    """`journalctl -o json` output, one object per line; OpsError (one line) on junk."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise OpsError(
                f"{source}: line {number} is not journal JSON ({exc.msg}); write it with "
                "`journalctl -o json`"
            ) from exc
        if isinstance(data, dict):
            yield from_json(data)


# "Aug 21 10:00:00 host ollama[1234]: message" (journalctl's default short format).
_SHORT = re.compile(
    r"^(?P<month>\S+) +(?P<day>\d{1,2}) (?P<clock>\d\d:\d\d:\d\d)(?:\.\d+)? "
    r"(?P<host>\S+) (?P<ident>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<message>.*)$"
)


def parse_short_lines(lines: Iterable[str], year: int) -> Iterator[Record]:
    """journalctl's default text; lines that are not journal lines are skipped."""
    for line in lines:
        match = _SHORT.match(line.rstrip("\n"))
        if not match:
            continue
        stamp = f"{year} {match['month']} {match['day']} {match['clock']}"
        try:
            when = float(calendar.timegm(time.strptime(stamp, "%Y %b %d %H:%M:%S")))
        except ValueError:
            when = 0.0
        ident = match["ident"]
        message = match["message"]
        unit = ""
        if ident == "systemd":
            unit = message.split(":", 1)[0] if message.split(":", 1)[0].endswith(".service") else ""
        yield Record(
            time=when,
            message=message,
            identifier=ident,
            pid=int(match["pid"]) if match["pid"] else None,
            unit=unit,
        )


_SLOG_TIME = re.compile(r"^time=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")
_GIN_TIME = re.compile(r"^\[GIN\] (\d{4}/\d\d/\d\d - \d\d:\d\d:\d\d)")


def _raw_time(line: str) -> float:
    for pattern, layout in ((_SLOG_TIME, "%Y-%m-%dT%H:%M:%S"), (_GIN_TIME, "%Y/%m/%d - %H:%M:%S")):
        match = pattern.match(line)
        if match:
            return float(calendar.timegm(time.strptime(match[1], layout)))
    return 0.0


def parse_raw_lines(lines: Iterable[str]) -> Iterator[Record]:
    """`ollama serve` output as a terminal or `docker logs` shows it: every line Ollama's."""
    for line in lines:
        text = line.rstrip("\n")
        if text.strip():
            yield Record(time=_raw_time(text), message=text, identifier="ollama")


def parse_any(text: str, source: str, year: int) -> list[Record]:
    """`journalctl -o json`, journalctl's short text, or raw `ollama serve` output.

    Lines starting with "#" are comments. The form is taken from the first line.
    """
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        return []
    if lines[0].lstrip().startswith("{"):
        return list(parse_json_lines(lines, source))
    if _SHORT.match(lines[0]):
        return list(parse_short_lines(lines, year))
    return list(parse_raw_lines(lines))
