"""Log lines in Ollama's shapes.

* Server messages go to stderr as Go ``log/slog`` text records:
  ``time=2025-01-02T15:04:05.000+00:00 level=INFO source=routes.go:1318 msg="..." k=v``.
* Request lines go to stdout in gin's default logger format:
  ``[GIN] 2025/01/02 - 15:04:05 | 200 |    1.234567ms |       127.0.0.1 | POST     "/api/generate"``.

``source=`` names the Ollama file and line that logs the same message, so a
log scraper written against the real server finds what it expects.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import TextIO

from .envconfig import format_go_duration

LEVELS = {"DEBUG": -4, "INFO": 0, "WARN": 4, "ERROR": 8}


def _needs_quote(s: str) -> bool:
    if not s:
        return True
    return any(c in ' ="\\' or not c.isprintable() for c in s)


def _value(v: object) -> str:
    if isinstance(v, bool):
        s = "true" if v else "false"
    elif isinstance(v, float):
        s = f"{v:g}"
    else:
        s = str(v)
    return json.dumps(s, ensure_ascii=False) if _needs_quote(s) else s


def _now_rfc3339_ms() -> str:
    t = time.time()
    lt = time.localtime(t)
    off = lt.tm_gmtoff or 0
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    ms = int((t % 1) * 1000)
    tz = f"{sign}{off // 3600:02d}:{off % 3600 // 60:02d}"
    if tz == "+00:00" and time.strftime("%Z", lt) == "UTC":
        tz = "Z"
    return time.strftime("%Y-%m-%dT%H:%M:%S", lt) + f".{ms:03d}" + tz


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
            "time=" + _now_rfc3339_ms(),
            "level=" + level,
            "source=" + src,
            "msg=" + _value(msg),
        ]
        parts.extend(f"{k}={_value(v)}" for k, v in attrs.items())
        line = " ".join(parts) + "\n"
        self._write(self.stream, line)

    def debug(self, msg: str, src: str = "server.go:1", **attrs: object) -> None:
        self.log("DEBUG", msg, src, **attrs)

    def info(self, msg: str, src: str = "server.go:1", **attrs: object) -> None:
        self.log("INFO", msg, src, **attrs)

    def warn(self, msg: str, src: str = "server.go:1", **attrs: object) -> None:
        self.log("WARN", msg, src, **attrs)

    def error(self, msg: str, src: str = "server.go:1", **attrs: object) -> None:
        self.log("ERROR", msg, src, **attrs)

    def access(self, status: int, latency: float, client: str, method: str, path: str) -> None:
        """gin's LoggerWithFormatter default line (no colours: not a terminal)."""
        stamp = time.strftime("%Y/%m/%d - %H:%M:%S")
        lat = format_go_duration(max(latency, 0.0))
        line = (
            f"[GIN] {stamp} | {status:3d} | {lat:>13} | {client:>15} | "
            f"{method:<7} {json.dumps(path)}\n"
        )
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
