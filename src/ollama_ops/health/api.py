"""The Ollama API probes: liveness (`GET /`), loaded models (`/api/ps`), a one-token generation.

Parsing is pure (``parse_ps``, ``parse_rfc3339``); the probes go through
:class:`~ollama_ops.health.http.Http`, which bounds every exchange.
"""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import replace

from ollama_ops.health.http import Http
from ollama_ops.health.model import (
    DeepOutcome,
    Failure,
    HttpResult,
    LoadedModel,
)

RUNNING_TEXT = "Ollama is running"
_RFC3339 = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:?\d\d)$"
)


def parse_rfc3339(text: str) -> float | None:
    """Seconds since the epoch for Go's RFC 3339 (nanoseconds, any offset); None if not one."""
    match = _RFC3339.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, sec = (int(match.group(i)) for i in range(1, 7))
    try:
        base = calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    frac = float("0." + match.group(7)) if match.group(7) else 0.0
    zone = match.group(8)
    offset = 0
    if zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return base + frac - offset


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_ps(text: str, wall_now: float) -> tuple[LoadedModel, ...]:
    """`/api/ps` JSON -> the loaded models; ValueError when it is not that shape."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ValueError('no "models" list')
    models = []
    for row in data["models"]:
        if not isinstance(row, dict) or not isinstance(row.get("name", row.get("model")), str):
            raise ValueError("a model entry without a name")
        expires = row.get("expires_at")
        at = parse_rfc3339(expires) if isinstance(expires, str) else None
        # Go's zero time (year 1) means "not set": treat as unknown, not as long past.
        expires_in = at - wall_now if at is not None and at > 0 else None
        ctx = row.get("context_length")
        models.append(
            LoadedModel(
                name=str(row.get("name") or row.get("model")),
                size=_int(row.get("size")),
                size_vram=_int(row.get("size_vram")),
                expires_in_s=expires_in,
                context_length=ctx if isinstance(ctx, int) and not isinstance(ctx, bool) else None,
            )
        )
    return tuple(models)


def liveness(http: Http, deadline: float) -> HttpResult:
    """`GET /`: ok only for 200 "Ollama is running"."""
    reply = http.request("GET", "/", deadline=deadline, max_bytes=64 * 1024)
    if not reply.ok:
        return reply
    if reply.status == 200 and RUNNING_TEXT in reply.body:
        return reply
    snippet = " ".join(reply.body.split())[:60]
    return replace(
        reply,
        ok=False,
        failure=Failure.NOT_OLLAMA,
        detail=f"HTTP {reply.status} {snippet!r} is not Ollama's answer to GET /",
    )


def loaded(
    http: Http, wall_now: float, deadline: float
) -> tuple[tuple[LoadedModel, ...] | None, str]:
    """The models in `/api/ps`, or None and why not."""
    reply = http.request("GET", "/api/ps", deadline=deadline)
    if not reply.ok:
        return None, f"/api/ps: {reply.detail}"
    if reply.status != 200:
        return None, f"/api/ps answered HTTP {reply.status}"
    try:
        return parse_ps(reply.body, wall_now), ""
    except ValueError as exc:
        return None, f"/api/ps is not Ollama's answer ({str(exc).splitlines()[0][:80]})"


def _error_text(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return " ".join(body.split())[:160]
    error = data.get("error") if isinstance(data, dict) else None
    return error[:200] if isinstance(error, str) else " ".join(body.split())[:160]


def generate_one(http: Http, model: str, deadline: float) -> tuple[DeepOutcome, float, str]:
    """A one-token generation on a loaded model, without changing its keep-alive.

    ``keep_alive`` is left out on purpose: a value would replace the model's
    session duration for every later request that sends none.
    """
    body = {
        "model": model,
        "prompt": "Reply with one word: ok",
        "stream": False,
        "options": {"num_predict": 1, "temperature": 0},
    }
    reply = http.request("POST", "/api/generate", deadline=deadline, body=body)
    if not reply.ok:
        if reply.failure is Failure.TIMEOUT:
            return DeepOutcome.TIMEOUT, reply.latency_s, reply.detail
        return DeepOutcome.ERROR, reply.latency_s, reply.detail
    if reply.status == 200:
        try:
            data = json.loads(reply.body)
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("done") is True:
            return DeepOutcome.OK, reply.latency_s, ""
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return DeepOutcome.ERROR, reply.latency_s, data["error"][:200]
        return DeepOutcome.ERROR, reply.latency_s, "the answer is not a finished generation"
    text = _error_text(reply.body)
    if reply.status == 503:
        return DeepOutcome.BUSY, reply.latency_s, f"HTTP 503 {text}"
    return DeepOutcome.ERROR, reply.latency_s, f"HTTP {reply.status} {text}"


def unload(http: Http, model: str, deadline: float) -> HttpResult:
    """Ask Ollama to unload ``model`` (an empty prompt with keep_alive 0)."""
    return http.request(
        "POST", "/api/generate", deadline=deadline, body={"model": model, "keep_alive": 0}
    )
