"""Bounded HTTP for the probes: a total deadline, a size cap, every failure classified.

httpx's timeouts bound each network operation, not the whole exchange: a
server that trickles bytes (or a stream that never closes) would hold a probe
forever. Here the body is read chunk by chunk against a total deadline, so an
exchange ends within the deadline, or within twice it when a server sends its
headers just before the deadline and then nothing.
"""

from __future__ import annotations

import json as jsonlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from ollama_ops.errors import ConfigError
from ollama_ops.health.model import Failure, HttpResult

MAX_BODY = 4 * 1024 * 1024
_NAME_ERRORS = ("name resolution", "Name or service not known", "nodename nor servname")


def check_url(url: str) -> str:
    """``url`` without a trailing slash; ConfigError for anything but http(s)://host[:port]."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url {url!r} is not an http:// URL; write e.g. http://127.0.0.1:11434")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(
            f"--url {url!r} has a bad port; write e.g. http://127.0.0.1:11434"
        ) from exc
    if parts.query or parts.fragment:
        raise ConfigError(f"--url {url!r} has a query or fragment; give only scheme, host and port")
    return url.strip().rstrip("/")


def probe_address(url: str) -> str | None:
    """A loopback source address of the checker's own, so its requests are told apart in
    Ollama's access log: 127.0.0.2 for a server on 127.0.0.1 or localhost (None otherwise)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.startswith("127."):
        return "127.0.0.3" if host == "127.0.0.2" else "127.0.0.2"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


class Http:
    """One keep-alive client for one Ollama URL; every call returns an HttpResult."""

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        local_address: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # No proxy from the environment: the API is reached directly, as clients on the host do.
        transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
        self.client = client or httpx.Client(
            trust_env=False, follow_redirects=False, transport=transport
        )
        self.clock = clock

    def close(self) -> None:
        self.client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        deadline: float,
        body: Any = None,
        max_bytes: int = MAX_BODY,
    ) -> HttpResult:
        t0 = self.clock()

        def result(failure: Failure | None, detail: str, status: int | None = None) -> HttpResult:
            return HttpResult(
                ok=failure is None,
                status=status,
                body="",
                latency_s=self.clock() - t0,
                failure=failure,
                detail=detail,
            )

        timeout = httpx.Timeout(deadline, connect=min(deadline, 3.0))
        content = None if body is None else jsonlib.dumps(body).encode()
        try:
            with self.client.stream(
                method, self.base_url + path, content=content, timeout=timeout
            ) as reply:
                chunks: list[bytes] = []
                size = 0
                for chunk in reply.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        return result(
                            Failure.NOT_OLLAMA,
                            f"answer larger than {max_bytes} bytes",
                            reply.status_code,
                        )
                    chunks.append(chunk)
                    if self.clock() - t0 > deadline:
                        return result(
                            Failure.TIMEOUT,
                            f"answer still streaming after {deadline:g}s",
                            reply.status_code,
                        )
                text = b"".join(chunks).decode("utf-8", errors="replace")
                return HttpResult(
                    ok=True,
                    status=reply.status_code,
                    body=text,
                    latency_s=self.clock() - t0,
                )
        except httpx.ConnectTimeout:
            return result(Failure.REFUSED, f"no connection within {min(deadline, 3.0):g}s")
        except httpx.TimeoutException:
            return result(Failure.TIMEOUT, f"no answer within {deadline:g}s")
        except httpx.ConnectError as exc:
            text = _first_line(exc)
            if any(m in text for m in _NAME_ERRORS):  # the checker's own input is wrong
                return result(Failure.BAD_URL, f"host name not resolved ({text})")
            return result(Failure.REFUSED, text)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return result(Failure.BAD_URL, _first_line(exc))
        except httpx.RemoteProtocolError as exc:
            return result(Failure.NOT_OLLAMA, f"not an HTTP answer ({_first_line(exc)})")
        except (httpx.HTTPError, OSError) as exc:
            return result(Failure.REFUSED, _first_line(exc))
