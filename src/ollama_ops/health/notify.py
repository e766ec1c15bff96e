"""Talking to systemd without a library: sd_notify(3) and journald's native protocol.

Both are one datagram on a Unix socket, documented by systemd as stable
interfaces (sd_notify(3) "NOTES", systemd.journal-fields(7) and the native
protocol page), so no binding is needed. Outside systemd both are no-ops
(records go to stderr as one JSON line instead).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from collections.abc import Mapping
from typing import TextIO

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "ollama-ops-watch"


def _address(path: str) -> str | bytes:
    return b"\0" + path[1:].encode() if path.startswith("@") else path


def sd_notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. "READY=1", "WATCHDOG=1") to $NOTIFY_SOCKET; False when there is none."""
    path = (env if env is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not path or path[0] not in "/@":
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), _address(path))
    except OSError:
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec=), or None when not asked for."""
    env = env if env is not None else os.environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def encode_fields(fields: Mapping[str, str]) -> bytes:
    """journald's native format: KEY=value lines, the length-prefixed form for multi-line values."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", errors="replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class Journal:
    """Structured records: MESSAGE plus OLLAMA_OPS_* fields, to journald or to ``fallback``."""

    def __init__(self, socket_path: str = JOURNAL_SOCKET, fallback: TextIO | None = None) -> None:
        self.socket_path = socket_path
        self.fallback = fallback if fallback is not None else sys.stderr
        self._sock: socket.socket | None = None

    def send(self, message: str, priority: int, fields: Mapping[str, str]) -> None:
        record = {"MESSAGE": message, "PRIORITY": str(priority), "SYSLOG_IDENTIFIER": IDENTIFIER}
        record.update({f"OLLAMA_OPS_{k.upper()}": v for k, v in fields.items()})
        if os.path.exists(self.socket_path):
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(encode_fields(record), self.socket_path)
                return
            except OSError:
                pass  # too large, or journald restarting: fall back to a line on stderr
        self.fallback.write(json.dumps(record, sort_keys=True) + "\n")
        self.fallback.flush()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
