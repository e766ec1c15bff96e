"""Log lines in Ollama's shapes, byte for byte where the format is Go's.

* Server messages go to stderr as Go ``log/slog`` TextHandler records
  (``AddSource`` with the file's base name, as Ollama configures it)::

      time=2025-01-02T15:04:05.000+01:00 level=INFO source=routes.go:1318 msg="server config" env=...

  The time is RFC 3339 with milliseconds (``Z`` when the offset is zero); a
  value is quoted with Go's ``strconv.Quote`` only when slog's
  ``needsQuoting`` says so (empty, a space, ``=``, ``"``, a control or
  non-printable character).
* Request lines go to stdout in gin's ``defaultLogFormatter`` without colours
  (stdout is not a terminal under systemd)::

      [GIN] 2025/01/02 - 15:04:05 | 200 |    1.234567ms |       127.0.0.1 | POST     "/api/generate"

  i.e. ``"[GIN] %v |%s %3d %s| %13v | %15s |%s %-7s %s %#v\\n%s"`` with the
  colour strings empty: the status right-aligned in 3, the latency as a Go
  ``time.Duration`` right-aligned in 13, the client right-aligned in 15, the
  method left-aligned in 7 followed by two spaces, the path Go-quoted.
* Output of the (simulated) runner child, such as ``CUDA error`` lines, goes
  to stderr unformatted, as the runner's own stderr reaches the journal.

``source=`` names the Ollama file and line that logs the same message, so a
log scraper written against the real server finds what it expects.
"""

from __future__ import annotations

import decimal
import math
import sys
import threading
import time
from typing import TextIO

from .envconfig import format_go_duration

LEVELS = {"DEBUG": -4, "INFO": 0, "WARN": 4, "ERROR": 8}

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n"}
_ESCAPES.update({"\r": "\\r", "\t": "\\t", "\v": "\\v"})


def _printable(ch: str) -> bool:
    """Go's strconv.IsPrint: printable, and of the spaces only U+0020."""
    return ch == " " or (ch.isprintable() and not ch.isspace() and not 0xD800 <= ord(ch) <= 0xDFFF)


def go_quote(s: str) -> str:
    """strconv.Quote."""
    out = ['"']
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif _printable(ch):
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def needs_quoting(s: str) -> bool:
    """slog's needsQuoting: empty, space, '=', or what a JSON string would escape (not '\\')."""
    if not s:
        return True
    for ch in s:
        if ch == "\\":
            continue
        if ch in ' ="' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            return True
        if ord(ch) >= 0x80 and (ch.isspace() or not _printable(ch)):
            return True
    return False


def go_float(v: float) -> str:
    """strconv.FormatFloat(v, 'g', -1, 64): shortest digits, exponent from 1e6 or below 1e-4."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    d = decimal.Decimal(repr(v))
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    text = "".join(map(str, digits)).rstrip("0") or "0"
    point = len(digits) + exp  # position of the decimal point in ``text``
    x = point - 1  # the decimal exponent
    if x < -4 or x >= 6:  # Go decides with precision 6 when the digits are the shortest
        mant = text[0] + ("." + text[1:] if len(text) > 1 else "")
        body = f"{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"
    elif point <= 0:
        body = "0." + "0" * -point + text
    elif point >= len(text):
        body = text + "0" * (point - len(text))
    else:
        body = text[:point] + "." + text[point:]
    return ("-" if sign else "") + body


def slog_value(v: object) -> str:
    """A value as slog's TextHandler writes it."""
    if isinstance(v, bool):
        s = "true" if v else "false"
    elif isinstance(v, float):
        s = go_float(v)
    else:
        s = str(v)
    return go_quote(s) if needs_quoting(s) else s


def slog_time(t: float) -> str:
    """RFC 3339 with milliseconds, local time, ``Z`` for a zero offset."""
    lt = time.localtime(t)
    off = lt.tm_gmtoff or 0
    ms = int((t % 1) * 1000)
    if off == 0:
        tz = "Z"
    else:
        sign = "+" if off > 0 else "-"
        tz = f"{sign}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", lt) + f".{ms:03d}" + tz


def gin_line(
    stamp: float, status: int, latency: float, *, client: str, method: str, path: str
) -> str:
    """gin's defaultLogFormatter without colours (one line, newline included)."""
    when = time.strftime("%Y/%m/%d - %H:%M:%S", time.localtime(stamp))
    lat = format_go_duration(max(latency, 0.0))
    return (
        f"[GIN] {when} | {status:3d} | {lat:>13} | {client:>15} | {method:<7}  {go_quote(path)}\n"
    )


class Logger:
    """A tiny slog-alike. Thread-safe, line-buffered."""

    def __init__(
        self,
        stream: TextIO | None = None,
        access_stream: TextIO | None = None,
        debug: bool = False,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.access_stream = access_stream if access_stream is not None else sys.stdout
        self.min_level = LEVELS["DEBUG"] if debug else LEVELS["INFO"]
        self._lock = threading.Lock()

    def log(self, level: str, msg: str, src: str = "server.go:1", **attrs: object) -> None:
        if LEVELS[level] < self.min_level:
            return
        parts = [
            "time=" + slog_time(time.time()),
            "level=" + level,
            "source=" + src,
            "msg=" + slog_value(msg),
        ]
        parts.extend(f"{k}={slog_value(v)}" for k, v in attrs.items())
        self._write(self.stream, " ".join(parts) + "\n")

    def debug(self, msg: str, src: str = "server.go:1", **attrs: object) -> None:
        self.log("DEBUG", msg, src, **attrs)

    def info(self, msg: str, src: str = "server.go:1", **attrs: object) -> None:
        self.log("INFO", msg, src, **attrs)

    def warn(self, msg: str, src: str = "server.go:1", **attrs: object) -> None:
        self.log("WARN", msg, src, **attrs)

    def error(self, msg: str, src: str = "server.go:1", **attrs: object) -> None:
        self.log("ERROR", msg, src, **attrs)

    def raw(self, text: str) -> None:
        """Lines a child process writes to its stderr (no slog record)."""
        self._write(self.stream, text if text.endswith("\n") else text + "\n")

    def access(self, status: int, latency: float, client: str, method: str, path: str) -> None:
        """One gin access-log line, stamped now (the request's end, as gin does it)."""
        line = gin_line(time.time(), status, latency, client=client, method=method, path=path)
        self._write(self.access_stream, line)

    def _write(self, stream: TextIO, line: str) -> None:
        with self._lock:
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):
                pass


def human_bytes2(n: int) -> str:
    """format.HumanBytes2: binary units with one decimal ("23.5 GiB")."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    v = float(n)
    for u in units:
        if v < 1024 or u == units[-1]:
            return f"{int(v)} {u}" if u == "B" else f"{v:.1f} {u}"
        v /= 1024
    return f"{n} B"


def human_bytes(n: int) -> str:
    """format.HumanBytes: decimal units, no decimals from 10 up ("2.1 MB", "291 MB")."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            value = n / size
            if value >= 10 or value == int(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{n} B"
