"""The OS side of ``ollama serve``: home, identity key, model store, memory, socket.

Every failure here is a ``ServeError`` whose text is what Ollama prints after
``Error: `` before exiting 1 (cobra's CheckErr), e.g.
``mkdir /usr/share/ollama/.ollama/models/blobs: permission denied``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import selectors
import socket
import sys
from collections.abc import Mapping
from typing import TextIO

from .keys import new_keypair


class ServeError(Exception):
    """``serve`` cannot go on; ``str(err)`` follows ``Error: ``."""


def go_errno_text(e: OSError) -> str:
    """Go's syscall.Errno text: strerror with a lower-case first letter."""
    text = e.strerror or os.strerror(e.errno or 0)
    return text[:1].lower() + text[1:]


def home_dir(env: Mapping[str, str]) -> str:
    """os.UserHomeDir on Unix: $HOME, or an error."""
    home = env.get("HOME", "")
    if not home:
        raise ServeError("$HOME is not defined")
    return home


def ensure_keypair(home: str, out: TextIO | None = None) -> bool:
    """initializeKeypair: create ~/.ollama/id_ed25519 (0600) and .pub if missing.

    Returns True when a key was created. Only a missing private key triggers
    creation, as in Ollama (any other stat error is ignored).
    """
    out = out if out is not None else sys.stdout
    directory = os.path.join(home, ".ollama")
    priv_path = os.path.join(directory, "id_ed25519")
    pub_path = priv_path + ".pub"
    try:
        os.stat(priv_path)
        return False
    except FileNotFoundError:
        pass
    except OSError:
        return False
    out.write(f"Couldn't find '{priv_path}'. Generating new private key.\n")
    out.flush()
    priv, pub = new_keypair()
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    except OSError as e:
        raise ServeError(
            f"could not create directory mkdir {e.filename or directory}: {go_errno_text(e)}"
        ) from None
    _write_file(priv_path, priv, 0o600)
    _write_file(pub_path, pub, 0o644)
    out.write("Your new public key is: \n\n" + pub.decode() + "\n")
    out.flush()
    return True


def _write_file(path: str, data: bytes, mode: int) -> None:
    """os.WriteFile: O_WRONLY|O_CREATE|O_TRUNC with ``mode`` (umask applies)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    except OSError as e:
        raise ServeError(f"open {path}: {go_errno_text(e)}") from None
    try:
        os.write(fd, data)
    except OSError as e:
        raise ServeError(f"write {path}: {go_errno_text(e)}") from None
    finally:
        os.close(fd)


def ensure_models_dir(models: str) -> int:
    """Create <models>/blobs and <models>/manifests (MkdirAll 0755).

    Returns the number of blobs found (logged as "total blobs").
    """
    if not models:
        raise ServeError("$HOME is not defined")
    for sub in ("blobs", "manifests"):
        path = os.path.join(models, sub)
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except OSError as e:
            raise ServeError(f"mkdir {e.filename or path}: {go_errno_text(e)}") from None
        if not os.path.isdir(path):
            raise ServeError(f"mkdir {path}: not a directory")
    try:
        return len(os.listdir(os.path.join(models, "blobs")))
    except OSError:
        return 0


def read_meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    """MemTotal, MemAvailable, MemFree, SwapFree in bytes. Raises OSError."""
    values: dict[str, int] = {}
    with open(path, encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                mult = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
                values[key.strip()] = int(parts[0]) * mult
    if "MemTotal" not in values:
        raise OSError(errno.EINVAL, "no MemTotal in " + path)
    return values


def listen_socket(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """net.Listen("tcp", host:port) with Go's error texts."""
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror:
        raise ServeError(f"listen tcp: lookup {host}: no such host") from None
    if not host:
        infos.sort(key=lambda i: 0 if i[0] == socket.AF_INET6 else 1)
    family, stype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, stype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and not host:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise ServeError(f"listen tcp {addr}: bind: {go_errno_text(e)}") from None
    sock.setblocking(False)
    return sock


class PreciseEpollSelector(selectors.EpollSelector):
    """An epoll selector that waits with microsecond, not millisecond, timeouts.

    epoll_wait takes whole milliseconds and Python rounds a timeout *up*, so
    an asyncio timer fires up to 1 ms late. Here the wait itself is a
    select() on the epoll descriptor (readable when events are pending),
    whose timeout has microsecond resolution; the events are then collected
    with a zero-timeout epoll_wait. No busy polling.
    """

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            fd = self.fileno()
            if fd < 1024:
                select.select([fd], [], [], timeout)
                timeout = 0
        return super().select(timeout)


def reduce_timer_slack() -> None:
    """Ask Linux for 1 us timer slack (default 50 us): timers fire closer to due."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError, TypeError):
        pass


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A selector event loop with the precise epoll selector where available."""
    if hasattr(selectors, "EpollSelector"):
        return asyncio.SelectorEventLoop(PreciseEpollSelector())
    return asyncio.new_event_loop()
