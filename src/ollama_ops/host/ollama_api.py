"""The Ollama HTTP client: small, with a timeout on every call."""

from __future__ import annotations

RUNNING_TEXT = "Ollama is running"


def is_up(base_url: str, timeout: float = 2.0) -> bool:
    """Liveness: `GET /` answers 200 "Ollama is running"."""
    import httpx  # imported here: `plan` never needs it, and it costs 40 ms to load

    try:
        reply = httpx.get(base_url + "/", timeout=timeout)
    except httpx.HTTPError:
        return False
    return reply.status_code == 200 and RUNNING_TEXT in reply.text


def version(base_url: str, timeout: float = 2.0) -> str | None:
    import httpx

    try:
        reply = httpx.get(base_url + "/api/version", timeout=timeout)
        reply.raise_for_status()
        value = reply.json().get("version")
    except (httpx.HTTPError, ValueError):
        return None
    return value if isinstance(value, str) else None
