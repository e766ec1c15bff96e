"""The OpenAI-compatible routes: ``POST /v1/chat/completions``, ``POST /v1/completions``,
``GET /v1/models`` and ``GET /v1/models/{model}``."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .api import ApiError, bind_request, error_response, json_response
from .inference import Inference, InferenceCore, Prompt, make_inference
from .render import OpenAIRenderer, word_offset

if TYPE_CHECKING:
    from .server import SimServer

_OAI_COMMON_SCHEMA = {  # the fields both OpenAI requests share, in their order
    "stream": "bool",
    "stream_options": "object",
    "max_tokens": "int",
    "seed": "int",
    "temperature": "float",
    "top_p": "float",
}
OAI_CHAT_SCHEMA = {
    "model": "string",
    "messages": "[]object",
    **_OAI_COMMON_SCHEMA,
    "frequency_penalty": "float",
    "presence_penalty": "float",
}
OAI_COMPLETION_SCHEMA = {
    "model": "string",
    "prompt": "string",
    **_OAI_COMMON_SCHEMA,
    "suffix": "string",
}


def _owner(name: str) -> str:
    parts = name.split("/")
    return parts[-2] if len(parts) >= 2 else "library"


def _oai_options(req: dict[str, Any]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if req.get("max_tokens") is not None:
        opts["num_predict"] = int(req["max_tokens"])
    if req.get("seed") is not None:
        opts["seed"] = int(req["seed"])
    for key in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        if req.get(key) is not None:
            opts[key] = float(req[key])
    stop = req.get("stop")
    if isinstance(stop, str):
        opts["stop"] = [stop]
    elif isinstance(stop, list):
        opts["stop"] = [s for s in stop if isinstance(s, str)]
    return opts


class OpenAIRoutes:
    def __init__(self, server: SimServer, core: InferenceCore) -> None:
        self.server = server
        self.core = core

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/chat/completions", self.h_chat)
        router.add_post("/v1/completions", self.h_completions)
        router.add_get("/v1/models", self.h_models, allow_head=False)
        router.add_get("/v1/models/{model:.+}", self.h_model, allow_head=False)

    async def h_chat(self, request: web.Request) -> web.StreamResponse:
        return await self.core.run(request, "openai", self.parse_chat)

    async def h_completions(self, request: web.Request) -> web.StreamResponse:
        return await self.core.run(request, "openai", self.parse_completion)

    async def h_models(self, request: web.Request) -> web.Response:
        del request
        created = int(self.server.started_wall.timestamp())
        data = [
            {"id": m.name, "object": "model", "created": created, "owned_by": _owner(m.name)}
            for m in self.server.models()
        ]
        return json_response({"object": "list", "data": data or None})

    async def h_model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        m = self.server.lookup(name)
        if m is None:
            return error_response("openai", 404, f"model '{name}' not found")
        created = int(self.server.started_wall.timestamp())
        return json_response(
            {"id": name, "object": "model", "created": created, "owned_by": _owner(name)}
        )

    def parse_chat(self, raw: bytes) -> Inference:
        req = bind_request(raw, "ChatCompletionRequest", OAI_CHAT_SCHEMA)
        messages = req.get("messages") or []
        if not messages:
            raise ApiError(400, "[] is too short - 'messages'", stage="bind")
        parts: list[str] = []
        for msg in messages:
            content = msg.get("content") if isinstance(msg, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                for c in content:
                    if not isinstance(c, dict) or c.get("type") not in ("text", "image_url"):
                        raise ApiError(400, "invalid message format", stage="bind")
                    if c.get("type") == "text":
                        if not isinstance(c.get("text"), str):
                            raise ApiError(400, "invalid message format", stage="bind")
                        parts.append(c["text"])
            elif not (isinstance(msg, dict) and msg.get("tool_calls")):
                kind = "<nil>" if content is None else type(content).__name__
                raise ApiError(400, f"invalid message content type: {kind}", stage="bind")
        text = "".join(parts)
        read = Prompt(text=text, offset_text=text, overhead=4 + 4 * len(messages), load_only=False)
        return self._openai("chat", "chatcmpl", req, read)

    def parse_completion(self, raw: bytes) -> Inference:
        req = bind_request(raw, "CompletionRequest", OAI_COMPLETION_SCHEMA)
        prompt = req.get("prompt") or ""
        read = Prompt(text=prompt, offset_text=prompt, overhead=10, load_only=prompt == "")
        return self._openai("completion", "cmpl", req, read)

    def _openai(self, kind: str, id_prefix: str, req: dict[str, Any], read: Prompt) -> Inference:
        """/v1/chat/completions and /v1/completions past their own checks."""
        target = self.core.target(req)
        opts = _oai_options(req)
        stream = bool(req.get("stream"))
        so = req.get("stream_options")
        renderer = OpenAIRenderer(
            kind,
            target.name,
            offset=word_offset(read.offset_text, opts.get("seed")),
            stream=stream,
            include_usage=bool(isinstance(so, dict) and so.get("include_usage")),
            ident=f"{id_prefix}-{random.randint(0, 998)}",
        )
        return make_inference(
            "openai", target, read, options=opts, stream=stream, renderer=renderer
        )
