"""A small asyncio HTTP/1.1 client made for timing token streams.

Why it is written by hand instead of using aiohttp or httpx: a load generator
must cost less CPU than the server it measures and must not distort what it
measures. aiohttp parses in C, but hands every chunk to a ``StreamReader``
and wakes the reading coroutine once per chunk (a future, a task step, an
``async for`` turn): at thousands of tokens per second that wake-up is most of
the client's cost, and each wake-up waits its turn in the event loop before
the arrival is timestamped. Here, ``Protocol.data_received`` does everything
in one callback: it takes the arrival time, decodes the chunked body, splits
NDJSON or SSE lines (slicing only when a read holds more or less than one
line) and hands each line to the request's :class:`Exchange`, which appends
the timestamp of a token line without parsing it. The coroutine that sent a
request is woken once, when the response has ended.

Supported: ``http://`` and ``https://`` (asyncio's TLS transport, default
certificate checks), keep-alive connections reused from a pool (a request on
a connection the server closed while idle is retried once on a new one),
``Content-Length``, ``Transfer-Encoding: chunked`` (extensions and trailers
skipped), and bodies read until the connection closes. Not supported, and
reported as a one-line error: other URL schemes, proxies, HTTP/2,
``Content-Encoding`` (no ``Accept-Encoding`` is sent, so servers do not use
it), informational (1xx) answers other than ``100 Continue``, and other
transfer codings.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import BenchError

clock = time.perf_counter

_HEAD, _CHUNKED, _LENGTH, _EOF, _TRAILER, _IDLE = range(6)
_MAX_HEAD = 64 * 1024
_MAX_LINE = 16 * 1024 * 1024


class HttpError(Exception):
    """The exchange failed below HTTP (connection, protocol, timeout)."""


class Exchange:
    """One request and its response; subclasses decide what a line of the body means.

    ``on_line`` gets every non-blank line of a 2xx body with its newline (and
    at most one blank line after it) and the time the read that completed it
    arrived; other answers are collected in ``body``.
    """

    __slots__ = (
        "body",
        "end",
        "error",
        "future",
        "headers",
        "partial",
        "received",
        "sent",
        "status",
    )

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.partial = b""
        self.received = 0
        self.error: str | None = None
        self.sent = 0.0
        self.end = 0.0
        self.future: asyncio.Future[None] | None = None

    def on_line(self, line: bytes, now: float) -> None:
        """One line of a successful body (subclasses override)."""
        self.body += line

    def feed(self, piece: bytes, now: float) -> None:
        """Split a piece of a 2xx body into lines; blank lines are skipped.

        The common cases cost one call and no slicing: a piece that is one NDJSON
        line, or one SSE ``data:`` line and the blank line ending its event (the
        line is then passed with both newlines).
        """
        if self.partial:
            piece = self.partial + piece
            self.partial = b""
        j = piece.find(b"\n")
        last = len(piece) - 1
        if j == last or (j == last - 1 and piece[last] == 10):
            if j > 1 or (j == 1 and piece[0] != 13):
                self.on_line(piece, now)
            return
        start = 0
        while j >= 0:
            if j - start > 1 or (j - start == 1 and piece[start] != 13):
                self.on_line(piece[start : j + 1], now)
            start = j + 1
            j = piece.find(b"\n", start)
        if start <= last:
            if last - start > _MAX_LINE:
                raise HttpError(f"a line of the response is longer than {_MAX_LINE} bytes")
            self.partial = piece[start:]

    def feed_other(self, piece: bytes, now: float) -> None:
        del now
        if len(self.body) < _MAX_LINE:
            self.body += piece

    def finish(self, now: float, error: str | None) -> None:
        if self.partial and error is None and 200 <= self.status < 300:
            line, self.partial = self.partial, b""
            self.on_line(line, now)
        self.end = now
        if error is not None and self.error is None:
            self.error = error
        fut = self.future
        if fut is not None and not fut.done():
            fut.set_result(None)


@dataclass(frozen=True)
class Url:
    scheme: str
    host: str
    port: int
    prefix: str  # path prefix without a trailing slash

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.prefix}"


def parse_url(text: str) -> Url:
    """``http://host:port[/prefix]``; a bare ``host:port`` means http."""
    raw = text if "://" in text else "http://" + text
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise BenchError(f"--url {text!r}: {exc}; e.g. http://127.0.0.1:11434") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"--url {text!r}: give http://HOST:PORT or https://HOST:PORT")
    if parts.query or parts.fragment or parts.username:
        raise BenchError(f"--url {text!r}: no query, fragment or user; e.g. http://host:11434")
    default = 443 if parts.scheme == "https" else 80
    return Url(parts.scheme, parts.hostname, port or default, parts.path.rstrip("/"))


class Connection(asyncio.Protocol):
    """One keep-alive connection; parses the response inside ``data_received``."""

    def __init__(self, on_idle: Callable[[Connection], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.ex: Exchange | None = None
        self.state = _IDLE
        self.buf = b""
        self.left = -1  # chunked: bytes of chunk data left; -1 size line next; -2 CRLF next
        self.keep_alive = True
        self.closed = False
        self.used = 0
        self.sink: Callable[[bytes, float], None] = _drop
        self.on_idle = on_idle
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.ex
        if ex is None:
            return
        if self.state == _EOF:
            self._end(clock(), None)
        else:
            why = f"connection lost ({exc})" if exc else "the server closed the connection"
            self._end(clock(), why)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost ends the exchange

    def data_received(self, data: bytes) -> None:
        now = clock()
        ex = self.ex
        if ex is None:
            self.abort()
            return
        ex.received += len(data)
        if self.buf:
            data = self.buf + data
            self.buf = b""
        try:
            state = self.state
            if state == _HEAD:
                i = data.find(b"\r\n\r\n")
                if i < 0:
                    if len(data) > _MAX_HEAD:
                        raise HttpError(f"response head longer than {_MAX_HEAD} bytes")
                    self.buf = data
                    return
                self._head(data[:i], ex)
                data = data[i + 4 :]
                state = self.state
                if state == _HEAD:  # 100 Continue: another head follows
                    if data:
                        self.data_received(data)
                    return
                if not data and state != _LENGTH:
                    return
            if state == _CHUNKED:
                self._chunked(data, now)
            elif state == _LENGTH:
                self._length(data, now)
            elif state == _EOF:
                self.sink(data, now)
            elif state == _TRAILER:
                self._trailer(data, now)
        except HttpError as exc:
            self._end(now, str(exc))
            self.abort()

    # -- parsing

    def _head(self, head: bytes, ex: Exchange) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"not an HTTP/1.x response: {lines[0][:60]!r}")
        status = int(parts[1])
        if status == 100:
            return
        if 100 < status < 200:
            raise HttpError(f"unsupported informational response {status}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        ex.status = status
        ex.headers = headers
        self.sink = ex.feed if 200 <= status < 300 else ex.feed_other
        if headers.get("content-encoding", "identity").lower() != "identity":
            raise HttpError(f"unsupported Content-Encoding {headers['content-encoding']!r}")
        conn = headers.get("connection", "").lower()
        self.keep_alive = parts[0] != "HTTP/1.0" and "close" not in conn
        te = headers.get("transfer-encoding", "").lower()
        if te:
            if te != "chunked":
                raise HttpError(f"unsupported Transfer-Encoding {te!r}")
            self.state, self.left = _CHUNKED, -1
        elif "content-length" in headers:
            try:
                self.left = int(headers["content-length"])
            except ValueError:
                raise HttpError(f"bad Content-Length {headers['content-length']!r}") from None
            self.state = _LENGTH
        elif status in (204, 304):
            self.state, self.left = _LENGTH, 0
        else:
            self.state, self.keep_alive = _EOF, False

    def _chunked(self, data: bytes, now: float) -> None:
        pos = 0
        n = len(data)
        left = self.left
        sink = self.sink
        while pos < n:
            if left > 0:
                end = pos + left
                if end <= n:
                    sink(data if pos == 0 and end == n else data[pos:end], now)
                    pos, left = end, -2
                else:
                    sink(data[pos:] if pos else data, now)
                    left -= n - pos
                    pos = n
            elif left == -2:
                if n - pos < 2:
                    self.buf = data[pos:]
                    break
                if not data.startswith(b"\r\n", pos):
                    raise HttpError("bad chunked encoding: no CRLF after a chunk")
                pos, left = pos + 2, -1
            else:
                j = data.find(b"\r\n", pos)
                if j < 0:
                    if n - pos > 1024:
                        raise HttpError("bad chunked encoding: chunk size line too long")
                    self.buf = data[pos:]
                    break
                try:
                    size = int(data[pos:j], 16)
                except ValueError:
                    size = _chunk_size(data[pos:j])
                if size < 0:
                    raise HttpError(f"bad chunk size {data[pos:j][:20]!r}")
                pos = j + 2
                if size == 0:
                    self.state = _TRAILER
                    self.left = -1
                    self._trailer(data[pos:], now)
                    return
                left = size
        self.left = left

    def _trailer(self, data: bytes, now: float) -> None:
        if data.startswith(b"\r\n") or b"\r\n\r\n" in data:
            self._end(now, None)
        elif len(data) > _MAX_HEAD:
            raise HttpError("trailer too long")
        else:
            self.buf = data

    def _length(self, data: bytes, now: float) -> None:
        n = len(data)
        if n >= self.left:
            if self.left:
                self.sink(data[: self.left] if n > self.left else data, now)
            self.left = 0
            self._end(now, None)
        else:
            self.sink(data, now)
            self.left -= n

    # -- request lifecycle

    def send(self, request: bytes, ex: Exchange, timeout: float | None) -> None:
        """Write ``request`` now; ``ex.future`` resolves when the response ends."""
        transport = self.transport
        assert transport is not None
        self.ex = ex
        self.state = _HEAD
        self.buf = b""
        self.used += 1
        if timeout is not None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(timeout, self._timeout, timeout)
        transport.write(request)

    def _timeout(self, seconds: float) -> None:
        self.timer = None
        self._end(clock(), f"no complete answer within {seconds:g} s (--timeout)")
        self.abort()

    def _end(self, now: float, error: str | None) -> None:
        ex = self.ex
        if ex is None:
            return
        self.ex = None
        self.sink = _drop
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        ok = error is None and self.keep_alive and not self.closed
        self.state = _IDLE if ok else self.state
        try:
            ex.finish(now, error)
        except HttpError as exc:
            ex.error = str(exc)
        if ok:
            self.on_idle(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _chunk_size(field: bytes) -> int:
    """A chunk size line with an extension (``1a;name=value``)."""
    digits = field.split(b";", 1)[0].strip()
    try:
        return int(digits, 16)
    except ValueError:
        raise HttpError(f"bad chunk size {field[:20]!r}") from None


def _drop(data: bytes, now: float) -> None:
    del data, now


class Client:
    """A pool of keep-alive connections to one server."""

    def __init__(self, url: Url, timeout: float | None = 300.0) -> None:
        self.url = url
        self.timeout = timeout
        self.idle: list[Connection] = []
        self.conns: set[Connection] = set()
        self.stopped: str | None = None  # set by abort_all: no new exchanges, no retries
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if url.scheme == "https" else None
        )
        host = url.host if ":" not in url.host else f"[{url.host}]"
        default = 443 if url.scheme == "https" else 80
        self._host = host if url.port == default else f"{host}:{url.port}"

    def _release(self, conn: Connection) -> None:
        self.idle.append(conn)

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(
            lambda: Connection(self._release), self.url.host, self.url.port, ssl=self.ssl
        )
        self.conns.add(proto)
        return proto

    def request_bytes(self, method: str, path: str, body: bytes | None) -> bytes:
        head = f"{method} {self.url.prefix}{path} HTTP/1.1\r\nHost: {self._host}\r\n"
        head += "User-Agent: ollama-ops-bench\r\nAccept: */*\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return head.encode("latin-1") + b"\r\n" + (body or b"")

    def _idle_conn(self) -> Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
            self.conns.discard(conn)
        return None

    async def exchange(self, request: bytes, ex: Exchange, timeout: float | None = None) -> None:
        """Send ``request`` and wait for the whole response; failures land in ``ex.error``.

        ``ex.sent`` is the time the request was handed to the socket.
        """
        for attempt in (0, 1):
            if self.stopped is not None:
                ex.sent = clock()
                ex.finish(ex.sent, self.stopped)
                return
            conn = self._idle_conn()
            reused = conn is not None
            if conn is None:
                try:
                    conn = await self.connect()
                except (OSError, ssl.SSLError) as exc:
                    ex.sent = clock()
                    ex.finish(ex.sent, f"cannot connect to {self.url.base}: {_why(exc)}")
                    return
                why = self.stop_reason()  # abort_all may have run while connecting
                if why is not None:
                    conn.abort()
                    ex.sent = clock()
                    ex.finish(ex.sent, why)
                    return
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            ex.future = fut
            ex.sent = clock()
            conn.send(request, ex, timeout or self.timeout)
            try:
                await fut
            except asyncio.CancelledError:
                conn.abort()
                raise
            stale = reused and ex.received == 0 and ex.error is not None and attempt == 0
            if conn.closed:
                self.conns.discard(conn)
            if not stale:
                return
            ex.error = None  # the server closed the idle connection: once more, fresh

    def stop_reason(self) -> str | None:
        return self.stopped

    def abort_all(self, why: str) -> None:
        """End every open exchange with ``why``, close every connection, start no more."""
        self.stopped = why
        for conn in list(self.conns):
            if conn.ex is not None:
                conn._end(clock(), why)
            conn.abort()
        self.conns.clear()
        self.idle.clear()

    def close(self) -> None:
        for conn in list(self.conns):
            conn.abort()
        self.conns.clear()
        self.idle.clear()


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class BodyExchange(Exchange):
    """Collects the whole body (for small control requests)."""

    __slots__ = ()


async def fetch(
    client: Client, method: str, path: str, body: bytes | None = None, timeout: float = 10.0
) -> BodyExchange:
    """One small request; the answer's status and body are in the returned exchange."""
    ex = BodyExchange()
    await client.exchange(client.request_bytes(method, path, body), ex, timeout)
    return ex
