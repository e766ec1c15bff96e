"""What every route group shares: the API error, JSON answers, body binding, model details.

Ollama answers errors as ``{"error": "..."}``; the OpenAI-compatible routes as
``{"error": {"message", "type", "param", "code"}}`` (openai/openai.go).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .gojson import BindError, bind, check_messages
from .profile import ModelProfile

CLIENT_MAX_SIZE = 64 * 1024 * 1024
NOT_FOUND = 'model "{}" not found, try pulling it first'


class ApiError(Exception):
    def __init__(self, status: int, message: str, stage: str = "handler") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.stage = stage  # "bind" errors of the OpenAI middleware differ in type


def json_bytes(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8")


def json_response(obj: Any, status: int = 200) -> web.Response:
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return json_bytes(body, status)


def error_response(api: str, status: int, message: str, stage: str = "handler") -> web.Response:
    """Ollama's error body, or the OpenAI middleware's for ``api == "openai"``."""
    if api == "openai":
        etype = "api_error"
        if stage == "bind":
            etype = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        body = {"error": {"message": message, "type": etype, "param": None, "code": None}}
        return json_response(body, status)
    return json_response({"error": message}, status)


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "http: request body too large") from None


def bind_request(
    raw: bytes, struct: str, schema: dict[str, str], messages: bool = False
) -> dict[str, Any]:
    """``bind`` (and ``check_messages``), a refusal being a 400 of the bind stage."""
    try:
        req = bind(raw, struct, schema)
        if messages:
            check_messages(req.get("messages"))
    except BindError as e:
        raise ApiError(400, str(e), stage="bind") from None
    return req


def details(m: ModelProfile) -> dict[str, Any]:
    """The ``details`` object of /api/tags, /api/ps and /api/show."""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": m.family,
        "families": [m.family],
        "parameter_size": m.parameter_size,
        "quantization_level": m.quantization_level,
    }


def full_name(name: str) -> str:
    """registry.ollama.ai/library/name:tag, as capability errors print it."""
    base = name
    if ":" not in base.rsplit("/", 1)[-1]:
        base += ":latest"
    parts = base.split("/")
    if len(parts) == 1:
        parts = ["registry.ollama.ai", "library", *parts]
    elif len(parts) == 2:
        parts = ["registry.ollama.ai", *parts]
    return "/".join(parts)
