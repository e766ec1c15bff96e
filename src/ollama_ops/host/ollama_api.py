"""The Ollama HTTP client used by apply's health wait: small, a timeout on every call."""

from __future__ import annotations

from typing import Protocol

RUNNING_TEXT = "Ollama is running"


class OllamaApi(Protocol):
    """What apply needs to know of a running Ollama; tests pass a fake."""

    def is_up(self, base_url: str, timeout: float = 2.0) -> bool: ...
    def version(self, base_url: str, timeout: float = 2.0) -> str | None: ...
    def ps(self, base_url: str, timeout: float = 2.0) -> list[dict[str, object]] | None: ...


class HttpOllama:
    """The live client, over httpx (imported on first use: `plan` never needs it)."""

    def is_up(self, base_url: str, timeout: float = 2.0) -> bool:
        """Liveness: `GET /` answers 200 "Ollama is running"."""
        import httpx

        try:
            reply = httpx.get(base_url + "/", timeout=timeout)
        except httpx.HTTPError:
            return False
        return reply.status_code == 200 and RUNNING_TEXT in reply.text

    def version(self, base_url: str, timeout: float = 2.0) -> str | None:
        import httpx

        try:
            reply = httpx.get(base_url + "/api/version", timeout=timeout)
            reply.raise_for_status()
            value = reply.json().get("version")
        except (httpx.HTTPError, ValueError):
            return None
        return value if isinstance(value, str) else None

    def ps(self, base_url: str, timeout: float = 2.0) -> list[dict[str, object]] | None:
        """The loaded models (`GET /api/ps`); None when the API does not answer."""
        import httpx

        try:
            reply = httpx.get(base_url + "/api/ps", timeout=timeout)
            reply.raise_for_status()
            models = reply.json().get("models")
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else None
