"""Ollama's native inference routes: ``POST /api/generate`` and ``POST /api/chat``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .api import ApiError, bind_request, full_name
from .inference import Inference, InferenceCore, Prompt, Target, make_inference
from .profile import ModelProfile
from .render import NativeRenderer, word_offset

GENERATE_SCHEMA = {
    "model": "string",
    "prompt": "string",
    "suffix": "string",
    "system": "string",
    "template": "string",
    "context": "[]int",
    "stream": "bool",
    "raw": "bool",
    "keep_alive": "duration",
    "images": "[]string",
    "options": "object",
    "truncate": "bool",
    "shift": "bool",
    "top_logprobs": "int",
    "logprobs": "bool",
}
CHAT_SCHEMA = {
    "model": "string",
    "messages": "[]object",
    "stream": "bool",
    "keep_alive": "duration",
    "options": "object",
    "tools": "any",
    "truncate": "bool",
    "shift": "bool",
    "top_logprobs": "int",
    "logprobs": "bool",
}


def _check_think(req: dict[str, Any], name: str, m: ModelProfile) -> None:
    think = req.get("think")
    if think not in (None, False, "") and "thinking" not in m.capabilities:
        raise ApiError(400, f'"{name}" does not support thinking')


class GenerateRoutes:
    def __init__(self, core: InferenceCore) -> None:
        self.core = core

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/generate", self.h_generate)
        router.add_post("/api/chat", self.h_chat)

    async def h_generate(self, request: web.Request) -> web.StreamResponse:
        return await self.core.run(request, "native", self.parse_generate, unload_check=True)

    async def h_chat(self, request: web.Request) -> web.StreamResponse:
        return await self.core.run(request, "native", self.parse_chat, unload_check=True)

    def parse_generate(self, raw: bytes) -> Inference:
        req = bind_request(raw, "GenerateRequest", GENERATE_SCHEMA)
        target = self.core.target(req)
        prompt = req.get("prompt") or ""
        raw_mode = bool(req.get("raw"))
        if raw_mode and (req.get("template") or req.get("system") or req.get("context")):
            raise ApiError(400, "raw mode does not support template, system, or context")
        text = (req.get("system") or "") + prompt
        read = Prompt(
            text=text, offset_text=prompt, overhead=0 if raw_mode else 10, load_only=prompt == ""
        )
        return self._native(
            "generate", req, target, read, feature=("suffix", "insert"), raw=raw_mode
        )

    def parse_chat(self, raw: bytes) -> Inference:
        req = bind_request(raw, "ChatRequest", CHAT_SCHEMA, messages=True)
        target = self.core.target(req)
        messages = [x for x in (req.get("messages") or []) if isinstance(x, dict)]
        text = "".join(str(x.get("content") or "") for x in messages)
        read = Prompt(
            text=text, offset_text=text, overhead=4 + 4 * len(messages), load_only=not messages
        )
        return self._native("chat", req, target, read, feature=("tools", "tools"))

    def _native(
        self,
        kind: str,
        req: dict[str, Any],
        target: Target,
        read: Prompt,
        *,
        feature: tuple[str, str],
        raw: bool = False,
    ) -> Inference:
        """/api/generate and /api/chat past their own checks.

        ``feature`` is (request field, model capability it needs).
        """
        name, m = target.name, target.model
        _check_think(req, name, m)
        field, capability = feature
        if req.get(field) and capability not in m.capabilities:
            raise ApiError(400, f"{full_name(m.name)} does not support {capability}")
        opts = self.core.options(req.get("options"))
        stream = req.get("stream") is not False
        offset = word_offset(read.offset_text, opts.get("seed"))
        renderer = NativeRenderer(kind, name, offset, stream, raw=raw)
        return make_inference(
            "native",
            target,
            read,
            options=opts,
            stream=stream,
            renderer=renderer,
            truncate=req.get("truncate") is not False,
        )
