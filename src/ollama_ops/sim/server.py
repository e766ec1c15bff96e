"""The aiohttp application: Ollama's native and OpenAI-compatible endpoints,
the optional control API, and the fault hooks.

Endpoints (server/routes.go): ``GET|HEAD /``, ``GET|HEAD /api/version``,
``GET|HEAD /api/tags``, ``GET /api/ps``, ``POST /api/show``,
``POST /api/generate``, ``POST /api/chat``, ``POST /v1/chat/completions``,
``POST /v1/completions``, ``GET /v1/models``, ``GET /v1/models/{model}``.
Anything else answers gin's ``404 page not found`` / ``405 method not allowed``.

Control API (only with ``--control``): ``GET|POST /_sim/faults``,
``GET /_sim/state``, ``GET /_sim/stats``, ``POST /_sim/stats/reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
import json
import math
import os
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiohttp import web

from . import VERSION
from .engine import (
    QueueFull,
    Renderer,
    Runner,
    RunnerError,
    Scheduler,
    Sequence,
    Sink,
    Stats,
    StreamSink,
)
from .envconfig import DurationError, ServerEnv, request_keep_alive
from .faults import FAULTS, FaultError, FaultState
from .gojson import BindError, OptionError, bind, check_messages, parse_options
from .logs import Logger
from .profile import ModelProfile, Profile
from .render import NativeRenderer, OpenAIRenderer, word_offset

CLIENT_MAX_SIZE = 64 * 1024 * 1024
NOT_FOUND = 'model "{}" not found, try pulling it first'
STREAM_CONTENT_TYPES = {"native": "application/x-ndjson", "openai": "text/event-stream"}

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
SHOW_SCHEMA = {"model": "string", "name": "string", "verbose": "bool", "system": "string"}
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


@dataclass
class SimConfig:
    """Everything ``serve`` decided before the HTTP server starts."""

    env: ServerEnv
    profile: Profile
    faults: list[tuple[str, float | None]] = field(default_factory=list)
    control: bool = False
    queue_mode: str = "ollama"
    sigusr1_faults: list[str] = field(default_factory=lambda: ["hang"])


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


def _param_count(size: str) -> int:
    m = re.fullmatch(r"([0-9.]+)\s*([KMBT]?)", size.strip().upper())
    if not m:
        return 0
    mult = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2)]
    return int(float(m.group(1)) * mult)


def _estimate_tokens(text: str) -> int:
    """About four characters per token."""
    return (len(text) + 3) // 4


class ApiError(Exception):
    def __init__(self, status: int, message: str, stage: str = "handler") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.stage = stage  # "bind" errors of the OpenAI middleware differ in type


@dataclass
class Inference:
    """A parsed inference request, whatever endpoint it came from."""

    api: str  # "native" or "openai"
    model_name: str
    model: ModelProfile
    stream: bool
    keep_alive: float | None
    options: dict[str, Any]
    prompt_text: str
    prompt_overhead: int
    load_only: bool
    renderer: Any
    content_type: str
    truncate: bool = True


class _Target(NamedTuple):
    """The model a request names, and its keep-alive (``_common``)."""

    name: str
    model: ModelProfile
    keep_alive: float | None


class _Prompt(NamedTuple):
    """What an inference request asks the model to read."""

    text: str  # counted as prompt tokens
    offset_text: str  # picks the reply's first word (``word_offset``)
    overhead: int  # template tokens around it
    load_only: bool  # nothing to generate: only load (or unload) the model


def _bind(
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


def _inference(
    api: str,
    target: _Target,
    read: _Prompt,
    *,
    options: dict[str, Any],
    stream: bool,
    renderer: Renderer,
    truncate: bool = True,
) -> Inference:
    return Inference(
        api=api,
        model_name=target.name,
        model=target.model,
        stream=stream,
        keep_alive=target.keep_alive,
        options=options,
        prompt_text=read.text,
        prompt_overhead=read.overhead,
        load_only=read.load_only,
        renderer=renderer,
        content_type=STREAM_CONTENT_TYPES[api] if stream else "application/json",
        truncate=truncate,
    )


class SimServer:
    """One simulated ``ollama serve``: start it on a listening socket, stop it."""

    def __init__(self, config: SimConfig, log: Logger, install_signals: bool = False) -> None:
        self.config = config
        self.log = log
        self.install_signals = install_signals
        self.faults = FaultState()
        self.stats = Stats()
        self.started_wall = datetime.datetime.now().astimezone()
        self.sched: Scheduler | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopped: asyncio.Event | None = None
        self._hang_release = threading.Event()
        self._terminating = False
        self._memory: list[bytes] = []
        self._memory_task: asyncio.Task[None] | None = None
        self._crash_handle: asyncio.TimerHandle | None = None
        self.address: tuple[str, int] = ("", 0)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, sock: socket.socket) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self.sched = Scheduler(
            self.config.env,
            self.config.profile,
            self.faults,
            self.log,
            self.stats,
            queue_mode=self.config.queue_mode,
        )
        self.sched.start()
        self.faults.add_listener(self._on_fault)
        app = self._make_app()
        runner_kw, site_kw = _runner_options()
        runner = web.AppRunner(app, **runner_kw)
        await runner.setup()
        site = web.SockSite(runner, sock, backlog=4096, **site_kw)
        await site.start()
        self._runner = runner
        addr = sock.getsockname()
        self.address = (str(addr[0]), int(addr[1]))
        for name, arg in self.config.faults:
            self.faults.set(name, arg)

    async def wait_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    def request_stop(self) -> None:
        """Thread-safe and signal-safe: ask the server to shut down."""
        self._terminating = True
        self._hang_release.set()
        loop = self.loop
        if loop is not None and self._stopped is not None:
            stopped = self._stopped
            loop.call_soon_threadsafe(stopped.set)

    def release_hang(self) -> None:
        """Thread-safe: end a ``hang`` (the loop then clears the fault itself)."""
        self._hang_release.set()

    async def stop(self) -> None:
        if self._memory_task is not None:
            self._memory_task.cancel()
        if self._crash_handle is not None:
            self._crash_handle.cancel()
        if self.sched is not None:
            await self.sched.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._memory = []

    # ------------------------------------------------------------------ faults

    def _on_fault(self, name: str, on: bool) -> None:
        loop = self.loop
        assert loop is not None
        assert self.sched is not None
        if on:
            self.log.warn("fault injected", src="sim", fault=name, arg=self.faults.arg(name) or "")
        else:
            self.log.info("fault cleared", src="sim", fault=name)
        if name == "hang" and on:
            self._hang_release.clear()
            loop.call_later(0.05, self._hang)
        elif name == "generate-hang":
            self.sched.pause_all(on)
        elif name == "gpu-lost" and on:
            self.sched.gpu_lost()
        elif name == "crash":
            if self._crash_handle is not None:
                self._crash_handle.cancel()
                self._crash_handle = None
            if on:
                delay = float(self.faults.arg("crash") or 0.0)
                self._crash_handle = loop.call_later(delay, self._crash)
        elif name == "memory-grow":
            if self._memory_task is not None:
                self._memory_task.cancel()
                self._memory_task = None
            if on:
                self._memory_task = loop.create_task(self._grow_memory())
            else:
                self._memory = []

    def _hang(self) -> None:
        """Block the event loop: nothing is served until released."""
        while self.faults.is_set("hang") and not self._hang_release.is_set():
            time.sleep(0.02)
        if self.faults.is_set("hang"):
            self.faults.clear("hang")

    def _crash(self) -> None:
        sys.stderr.write(
            "panic: runtime error: invalid memory address or nil pointer dereference "
            '(simulated by the ollama-ops simulator fault "crash")\n'
            "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x0]\n\n"
            "goroutine 1 [running]:\n"
            "github.com/ollama/ollama/server.(*Scheduler).processPending(...)\n"
        )
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(2)

    async def _grow_memory(self) -> None:
        rate = float(self.faults.arg("memory-grow") or 64.0)
        step = int(rate * 1024 * 1024 / 10)
        while True:
            if step > 0:
                self._memory.append(b"\x01" * step)  # allocated and written: resident
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ app

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[self._middleware])
        r = app.router
        r.add_get("/", self.h_root)
        r.add_get("/api/version", self.h_version)
        r.add_get("/api/tags", self.h_tags)
        r.add_get("/api/ps", self.h_ps, allow_head=False)
        r.add_post("/api/show", self.h_show)
        r.add_post("/api/generate", self.h_generate)
        r.add_post("/api/chat", self.h_chat)
        r.add_post("/v1/chat/completions", self.h_oai_chat)
        r.add_post("/v1/completions", self.h_oai_completions)
        r.add_get("/v1/models", self.h_oai_models, allow_head=False)
        r.add_get("/v1/models/{model:.+}", self.h_oai_model, allow_head=False)
        if self.config.control:
            r.add_get("/_sim/faults", self.h_faults_get, allow_head=False)
            r.add_post("/_sim/faults", self.h_faults_post)
            r.add_get("/_sim/state", self.h_state, allow_head=False)
            r.add_get("/_sim/stats", self.h_stats, allow_head=False)
            r.add_post("/_sim/stats/reset", self.h_stats_reset)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        t0 = time.monotonic()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPNotFound:
            status = 404
            return web.Response(status=404, text="404 page not found", content_type="text/plain")
        except web.HTTPMethodNotAllowed:
            status = 405
            return web.Response(
                status=405, text="405 method not allowed", content_type="text/plain"
            )
        except web.HTTPException as e:
            status = e.status
            raise
        except asyncio.CancelledError:
            status = 499
            raise
        finally:
            peer = request.remote or ""
            self.log.access(status, time.monotonic() - t0, peer, request.method, request.path)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _json_bytes(body: bytes, status: int = 200) -> web.Response:
        return web.Response(
            status=status, body=body, content_type="application/json", charset="utf-8"
        )

    @classmethod
    def _json(cls, obj: Any, status: int = 200) -> web.Response:
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        return cls._json_bytes(body, status)

    def _error(self, api: str, status: int, message: str, stage: str = "handler") -> web.Response:
        if api == "openai":
            etype = "api_error"
            if stage == "bind":
                etype = {400: "invalid_request_error", 404: "not_found_error"}.get(
                    status, "api_error"
                )
            body = {"error": {"message": message, "type": etype, "param": None, "code": None}}
            return self._json(body, status)
        return self._json({"error": message}, status)

    def _details(self, m: ModelProfile) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": m.family,
            "families": [m.family],
            "parameter_size": m.parameter_size,
            "quantization_level": m.quantization_level,
        }

    def _models(self) -> list[ModelProfile]:
        p = self.config.profile
        return [p.models[n] for n in p.ordered] if p.ordered else list(p.models.values())

    def _modified_at(self) -> str:
        return self.started_wall.isoformat()

    async def _body(self, request: web.Request) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "http: request body too large") from None

    # ------------------------------------------------------------------ plain endpoints

    async def h_root(self, request: web.Request) -> web.Response:
        del request
        return web.Response(text="Ollama is running", content_type="text/plain", charset="utf-8")

    async def h_version(self, request: web.Request) -> web.Response:
        del request
        return self._json({"version": VERSION})

    async def h_tags(self, request: web.Request) -> web.Response:
        del request
        models = [
            {
                "name": m.name,
                "model": m.name,
                "modified_at": self._modified_at(),
                "size": m.size,
                "digest": m.digest,
                "details": self._details(m),
            }
            for m in self._models()
        ]
        return self._json({"models": models})

    async def h_ps(self, request: web.Request) -> web.Response:
        del request
        assert self.sched is not None
        now = time.time()
        rows = []
        for r in self.sched.loaded.values():
            exp = now + r.session if r.expires_at is None else r.expires_at
            exp_s = _expires_iso(exp)
            rows.append(
                (
                    exp,
                    {
                        "name": r.model.name,
                        "model": r.model.name,
                        "size": r.size,
                        "digest": r.model.digest,
                        "details": self._details(r.model),
                        "expires_at": exp_s,
                        "size_vram": r.size_vram,
                        "context_length": r.num_ctx,
                    },
                )
            )
        rows.sort(key=lambda x: -x[0] if not math.isinf(x[0]) else -math.inf)
        return self._json({"models": [row for _, row in rows]})

    async def h_show(self, request: web.Request) -> web.Response:
        try:
            req = bind(await self._body(request), "ShowRequest", SHOW_SCHEMA)
        except BindError as e:
            return self._error("native", 400, str(e))
        except ApiError as e:
            return self._error("native", e.status, e.message)
        name = req.get("model") or req.get("name") or ""
        if not name:
            return self._error("native", 400, "model is required")
        m = self.config.profile.lookup(name)
        if m is None:
            return self._error("native", 404, f"model '{name}' not found")
        return self._json(self._show(m))

    def _show(self, m: ModelProfile) -> dict[str, Any]:
        template = "{{ .Prompt }}"
        modelfile = (
            '# Modelfile generated by "ollama show"\n'
            "# To build a new Modelfile based on this, replace FROM with:\n"
            f"# FROM {m.name}\n\n"
            f"FROM /simulated/blobs/sha256-{m.digest}\n"
            f'TEMPLATE "{template}"\n'
        )
        return {
            "license": "",
            "modelfile": modelfile,
            "parameters": "",
            "template": template,
            "details": self._details(m),
            "model_info": {
                "general.architecture": m.family,
                "general.parameter_count": _param_count(m.parameter_size),
                f"{m.family}.context_length": m.context_length,
            },
            "capabilities": list(m.capabilities),
            "modified_at": self._modified_at(),
        }

    async def h_oai_models(self, request: web.Request) -> web.Response:
        del request
        created = int(self.started_wall.timestamp())
        data = [
            {"id": m.name, "object": "model", "created": created, "owned_by": _owner(m.name)}
            for m in self._models()
        ]
        return self._json({"object": "list", "data": data or None})

    async def h_oai_model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        m = self.config.profile.lookup(name)
        if m is None:
            return self._error("openai", 404, f"model '{name}' not found")
        created = int(self.started_wall.timestamp())
        return self._json(
            {"id": name, "object": "model", "created": created, "owned_by": _owner(name)}
        )

    # ------------------------------------------------------------------ inference parsing

    def _common(
        self, api: str, req: dict[str, Any], need_model_msg: str = "model is required"
    ) -> _Target:
        name = req.get("model") or ""
        if not name:
            raise ApiError(400, need_model_msg)
        m = self.config.profile.lookup(name)
        if m is None:
            raise ApiError(404, NOT_FOUND.format(name))
        keep: float | None = None
        if req.get("keep_alive") is not None:
            try:
                keep = request_keep_alive(req["keep_alive"])
            except DurationError as e:
                raise ApiError(400, str(e), stage="bind") from None
        del api
        return _Target(name, m, keep)

    def _options(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            return {}
        try:
            opts, unknown = parse_options(raw)
        except OptionError as e:
            raise ApiError(500, str(e)) from None
        for key in unknown:
            self.log.warn("invalid option provided", src="types.go:512", option=key)
        return opts

    def _parse_generate(self, raw: bytes) -> Inference:
        req = _bind(raw, "GenerateRequest", GENERATE_SCHEMA)
        target = self._common("native", req)
        prompt = req.get("prompt") or ""
        raw_mode = bool(req.get("raw"))
        if raw_mode and (req.get("template") or req.get("system") or req.get("context")):
            raise ApiError(400, "raw mode does not support template, system, or context")
        text = (req.get("system") or "") + prompt
        read = _Prompt(
            text=text, offset_text=prompt, overhead=0 if raw_mode else 10, load_only=prompt == ""
        )
        return self._native(
            "generate", req, target, read, feature=("suffix", "insert"), raw=raw_mode
        )

    def _parse_chat(self, raw: bytes) -> Inference:
        req = _bind(raw, "ChatRequest", CHAT_SCHEMA, messages=True)
        target = self._common("native", req)
        messages = [x for x in (req.get("messages") or []) if isinstance(x, dict)]
        text = "".join(str(x.get("content") or "") for x in messages)
        read = _Prompt(
            text=text, offset_text=text, overhead=4 + 4 * len(messages), load_only=not messages
        )
        return self._native("chat", req, target, read, feature=("tools", "tools"))

    def _native(
        self,
        kind: str,
        req: dict[str, Any],
        target: _Target,
        read: _Prompt,
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
        opts = self._options(req.get("options"))
        stream = req.get("stream") is not False
        offset = word_offset(read.offset_text, opts.get("seed"))
        renderer = NativeRenderer(kind, name, offset, stream, raw=raw)
        return _inference(
            "native",
            target,
            read,
            options=opts,
            stream=stream,
            renderer=renderer,
            truncate=req.get("truncate") is not False,
        )

    def _oai_options(self, req: dict[str, Any]) -> dict[str, Any]:
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

    def _parse_oai_chat(self, raw: bytes) -> Inference:
        req = _bind(raw, "ChatCompletionRequest", OAI_CHAT_SCHEMA)
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
        read = _Prompt(text=text, offset_text=text, overhead=4 + 4 * len(messages), load_only=False)
        return self._openai("chat", "chatcmpl", req, read)

    def _parse_oai_completion(self, raw: bytes) -> Inference:
        req = _bind(raw, "CompletionRequest", OAI_COMPLETION_SCHEMA)
        prompt = req.get("prompt") or ""
        read = _Prompt(text=prompt, offset_text=prompt, overhead=10, load_only=prompt == "")
        return self._openai("completion", "cmpl", req, read)

    def _openai(self, kind: str, id_prefix: str, req: dict[str, Any], read: _Prompt) -> Inference:
        """/v1/chat/completions and /v1/completions past their own checks."""
        target = self._common("openai", req)
        opts = self._oai_options(req)
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
        return _inference("openai", target, read, options=opts, stream=stream, renderer=renderer)

    # ------------------------------------------------------------------ inference endpoints

    async def h_generate(self, request: web.Request) -> web.StreamResponse:
        return await self._infer(request, "native", self._parse_generate, unload_check=True)

    async def h_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._infer(request, "native", self._parse_chat, unload_check=True)

    async def h_oai_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._infer(request, "openai", self._parse_oai_chat)

    async def h_oai_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._infer(request, "openai", self._parse_oai_completion)

    async def _infer(
        self,
        request: web.Request,
        api: str,
        parse: Callable[[bytes], Inference],
        unload_check: bool = False,
    ) -> web.StreamResponse:
        t_request = time.monotonic()
        try:
            spec = parse(await self._body(request))
        except ApiError as e:
            return self._error(api, e.status, e.message, e.stage)
        sched = self.sched
        assert sched is not None
        self.stats.requests += 1
        if unload_check and spec.load_only and spec.keep_alive == 0:
            sched.expire_model(spec.model)
            return self._json_bytes(spec.renderer.empty("unload"))
        while self.faults.is_set("generate-hang"):
            await self.faults.wait_change()
        num_ctx = int(spec.options.get("num_ctx") or sched.default_num_ctx)
        num_ctx = max(num_ctx, 4)
        try:
            runner = await sched.get_runner(spec.model, num_ctx, spec.keep_alive)
        except (QueueFull, RunnerError) as e:
            return self._sched_error(api, e)
        try:
            t_loaded = time.monotonic()
            if spec.load_only:
                return self._json_bytes(spec.renderer.empty("load"))
            return await self._generate(request, spec, runner, t_request, t_loaded)
        finally:
            sched.release(runner)

    def _sched_error(self, api: str, e: QueueFull | RunnerError) -> web.Response:
        """503 for a full queue, 500 for a failed load or a dead runner."""
        return self._error(api, 503 if isinstance(e, QueueFull) else 500, str(e))

    def _lengths(self, spec: Inference, runner: Runner) -> tuple[int, int, str]:
        """(prompt tokens, tokens to generate, done_reason)."""
        prompt_tokens = _estimate_tokens(spec.prompt_text) + spec.prompt_overhead
        ctx = runner.num_ctx
        if prompt_tokens > ctx:
            if not spec.truncate:
                raise ApiError(400, "input length exceeds the context length")
            self.log.warn(
                "truncating input prompt",
                src="runner.go:129",
                limit=ctx,
                prompt=prompt_tokens,
                keep=4,
                new=ctx,
            )
            prompt_tokens = ctx
        natural = spec.model.response_tokens
        num_predict = int(spec.options.get("num_predict", -1))
        if num_predict < 0 or num_predict > 10 * ctx:
            num_predict = 10 * ctx
        if 0 < num_predict <= natural:
            return prompt_tokens, num_predict, "length"
        return prompt_tokens, natural, "stop"

    async def _generate(
        self,
        request: web.Request,
        spec: Inference,
        runner: Runner,
        t_request: float,
        t_loaded: float,
    ) -> web.StreamResponse:
        api = spec.api
        try:
            prompt_tokens, n_tokens, reason = self._lengths(spec, runner)
        except ApiError as e:
            return self._error(api, e.status, e.message)
        try:
            await runner.acquire_slot()
        except (QueueFull, RunnerError) as e:
            return self._sched_error(api, e)
        renderer: Renderer = spec.renderer
        seq = Sequence(
            renderer=renderer,
            sink=Sink(),
            n_tokens=n_tokens,
            done_reason=reason,
            prompt_tokens=prompt_tokens,
            t_request=t_request,
            load_s=t_loaded - t_request,
            lazy=spec.stream,
        )
        try:
            runner.start(seq)
            if not spec.stream:
                try:
                    await seq.done
                except RunnerError as e:
                    return self._error(api, 500, str(e))
                return self._json_bytes(spec.renderer.body(seq))
            assert seq.first is not None
            waits: list[asyncio.Future[Any]] = [seq.first, seq.done]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if seq.done.done() and not seq.first.done():
                exc = seq.done.exception()
                return self._error(api, 500, str(exc) if exc else "unexpected end of generation")
            due0 = seq.first.result()
            resp = web.StreamResponse(status=200, headers={"Content-Type": spec.content_type})
            await resp.prepare(request)
            sink = StreamSink(resp)
            seq.sink = sink
            runner.emit_first(seq, due0)
            try:
                await seq.done
            except RunnerError as e:
                if seq.emitted == 0:
                    seq.write_error(str(e))
            except ConnectionError:
                pass
            await sink.flush()
            if not sink.broken:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await resp.write_eof()
            return resp
        finally:
            if not seq.finished:
                self.log.info(
                    "aborting completion request due to client closing the connection",
                    src="server.go:1046",
                )
                runner.finish(seq, ConnectionResetError("client went away"))
            runner.release_slot()

    # ------------------------------------------------------------------ control API

    async def h_faults_get(self, request: web.Request) -> web.Response:
        del request
        return self._json({"faults": self.faults.snapshot(), "known": sorted(FAULTS)})

    async def h_faults_post(self, request: web.Request) -> web.Response:
        try:
            body = json.loads((await request.read()) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            set_specs = body.get("set") or []
            clear = body.get("clear") or []
            if isinstance(set_specs, str):
                set_specs = [set_specs]
            if isinstance(clear, str):
                clear = [clear]
            self.faults.apply([str(s) for s in set_specs], [str(c) for c in clear])
        except (ValueError, FaultError) as e:
            return self._json({"error": str(e)}, 400)
        return self._json({"faults": self.faults.snapshot()})

    async def h_state(self, request: web.Request) -> web.Response:
        del request
        assert self.sched is not None
        state = self.sched.describe()
        state["faults"] = self.faults.snapshot()
        state["version"] = VERSION
        state["pid"] = os.getpid()
        return self._json(state)

    async def h_stats(self, request: web.Request) -> web.Response:
        del request
        return self._json(self.stats.snapshot())

    async def h_stats_reset(self, request: web.Request) -> web.Response:
        del request
        self.stats.reset()
        return self._json(self.stats.snapshot())


def _runner_options() -> tuple[dict[str, Any], dict[str, Any]]:
    """AppRunner / SockSite keywords for the installed aiohttp (3.7 to 3.14)."""
    from aiohttp import web_runner, web_server

    runner_kw: dict[str, Any] = {"access_log": None, "handle_signals": False}
    site_kw: dict[str, Any] = {}
    if "handler_cancellation" in inspect.signature(web_server.Server.__init__).parameters:
        # aiohttp >= 3.9 no longer cancels a handler whose client went away
        # unless asked; older versions always do.
        runner_kw["handler_cancellation"] = True
    if "shutdown_timeout" in inspect.signature(web_runner.BaseRunner.__init__).parameters:
        runner_kw["shutdown_timeout"] = 1.0
    else:
        site_kw["shutdown_timeout"] = 1.0
    return runner_kw, site_kw


def _check_think(req: dict[str, Any], name: str, m: ModelProfile) -> None:
    think = req.get("think")
    if think not in (None, False, "") and "thinking" not in m.capabilities:
        raise ApiError(400, f'"{name}" does not support thinking')


def _owner(name: str) -> str:
    parts = name.split("/")
    return parts[-2] if len(parts) >= 2 else "library"


def _expires_iso(t: float) -> str:
    """time.Time JSON of an expiry; forever is now + MaxInt64 ns, as in Go."""
    tz = datetime.datetime.now().astimezone().tzinfo
    if math.isinf(t):
        now = datetime.datetime.now(tz)
        return (now + datetime.timedelta(microseconds=(2**63 - 1) // 1000)).isoformat()
    return datetime.datetime.fromtimestamp(t, tz).isoformat()
