"""The Ollama endpoints this package uses, over httpx; every failure is one CommandError line.

- ``POST /api/pull`` streamed (NDJSON progress, see progress.py);
- ``GET /api/tags``: the models in the store (``name`` as Ollama shows it);
- ``GET /api/ps``: the loaded models;
- ``POST /api/generate`` with no prompt: load a model (``done_reason: "load"``)
  and keep it for ``keep_alive``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ollama_ops.errors import CommandError

CONNECT_TIMEOUT_S = 10.0
# A pull that sends nothing for this long is stalled (Ollama reports every 60 ms
# while bytes arrive, and at each step).
PULL_STALL_S = 300.0
# A load may read gigabytes from disk into VRAM.
LOAD_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Loaded:
    """One row of /api/ps."""

    name: str
    expires_at: str


class ModelApi(Protocol):
    """What pull and the [models] step need of a running Ollama; tests may pass a fake."""

    url: str

    def version(self) -> str: ...
    def pull(self, model: str) -> Iterator[object]: ...
    def tags(self) -> list[str]: ...
    def ps(self) -> list[Loaded]: ...
    def load(self, model: str, keep_alive: int | str) -> str: ...


def _error_text(reply: httpx.Response) -> str:
    try:
        data = reply.json()
    except ValueError:
        return reply.text.strip()[:200] or reply.reason_phrase
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])[:300]
    return reply.text.strip()[:200]


class HttpModelApi:
    """The live client for one Ollama base URL (``http://127.0.0.1:11434``)."""

    def __init__(self, url: str, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(60.0, connect=CONNECT_TIMEOUT_S),
            transport=transport,
            trust_env=False,  # the API is local: never through an HTTP(S)_PROXY
        )

    def _fail(self, what: str, exc: httpx.HTTPError) -> CommandError:
        return CommandError(
            f"{what} on {self.url} failed ({type(exc).__name__}: {exc}); "
            "is the service up? check `systemctl status` and --url"
        )

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._fail(f"{method} {path}", exc) from exc
        if reply.status_code != 200:
            raise CommandError(
                f"{method} {path} on {self.url}: {reply.status_code} {_error_text(reply)}"
            )
        try:
            return reply.json()
        except ValueError as exc:
            raise CommandError(f"{method} {path} on {self.url} did not answer JSON") from exc

    def version(self) -> str:
        data = self._json("GET", "/api/version")
        value = data.get("version") if isinstance(data, dict) else None
        return value if isinstance(value, str) else "?"

    def pull(self, model: str) -> Iterator[object]:
        """The decoded progress lines of one pull, as they come."""
        timeout = httpx.Timeout(PULL_STALL_S, connect=CONNECT_TIMEOUT_S)
        body = {"model": model, "stream": True}
        try:
            with self._client.stream("POST", "/api/pull", json=body, timeout=timeout) as reply:
                if reply.status_code != 200:
                    reply.read()
                    raise CommandError(
                        f"POST /api/pull {model} on {self.url}: "
                        f"{reply.status_code} {_error_text(reply)}"
                    )
                for line in reply.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line)
                    except ValueError as exc:
                        raise CommandError(
                            f"POST /api/pull {model} on {self.url}: a line is not JSON: "
                            f"{line[:80]!r}"
                        ) from exc
        except httpx.HTTPError as exc:
            raise self._fail(f"POST /api/pull {model}", exc) from exc

    def tags(self) -> list[str]:
        data = self._json("GET", "/api/tags")
        rows = data.get("models") if isinstance(data, dict) else None
        return [str(r["name"]) for r in rows or [] if isinstance(r, dict) and "name" in r]

    def ps(self) -> list[Loaded]:
        data = self._json("GET", "/api/ps")
        rows = data.get("models") if isinstance(data, dict) else None
        return [
            Loaded(str(r["name"]), str(r.get("expires_at", "")))
            for r in rows or []
            if isinstance(r, dict) and "name" in r
        ]

    def load(self, model: str, keep_alive: int | str) -> str:
        """Load ``model`` and keep it; the done_reason Ollama answers ("load")."""
        body = {"model": model, "keep_alive": keep_alive, "stream": False}
        data = self._json("POST", "/api/generate", json=body, timeout=LOAD_TIMEOUT_S)
        reason = data.get("done_reason") if isinstance(data, dict) else None
        return reason if isinstance(reason, str) else ""

    def close(self) -> None:
        self._client.close()
