"""The part of an inference request every endpoint shares: find the model, wait for
a runner (the scheduler), take a slot, stream or collect the tokens.

The route groups (routes_generate.py, routes_openai.py) only turn a request body
into an ``Inference``; ``InferenceCore.run`` does the rest.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from aiohttp import web

from .api import NOT_FOUND, ApiError, error_response, json_bytes, read_body
from .engine import QueueFull, Renderer, Runner, RunnerError, Sequence, Sink, StreamSink
from .envconfig import DurationError, request_keep_alive
from .gojson import OptionError, parse_options
from .profile import ModelProfile

#: How much of the prompt names a request in /_sim/first-tokens.
FIRST_TOKEN_LABEL = 80

if TYPE_CHECKING:
    from .server import SimServer

STREAM_CONTENT_TYPES = {"native": "application/x-ndjson", "openai": "text/event-stream"}


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


class Target(NamedTuple):
    """The model a request names, and its keep-alive (``InferenceCore.target``)."""

    name: str
    model: ModelProfile
    keep_alive: float | None


class Prompt(NamedTuple):
    """What an inference request asks the model to read."""

    text: str  # counted as prompt tokens
    offset_text: str  # picks the reply's first word (``word_offset``)
    overhead: int  # template tokens around it
    load_only: bool  # nothing to generate: only load (or unload) the model


def make_inference(
    api: str,
    target: Target,
    read: Prompt,
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


def estimate_tokens(text: str) -> int:
    """About four characters per token."""
    return (len(text) + 3) // 4


class InferenceCore:
    """Runs parsed inference requests against one server's scheduler."""

    def __init__(self, server: SimServer) -> None:
        self.server = server

    # ---- parsing helpers shared by the route groups

    def target(self, req: dict[str, Any], need_model_msg: str = "model is required") -> Target:
        name = req.get("model") or ""
        if not name:
            raise ApiError(400, need_model_msg)
        m = self.server.lookup(name)
        if m is None:
            raise ApiError(404, NOT_FOUND.format(name))
        keep: float | None = None
        if req.get("keep_alive") is not None:
            try:
                keep = request_keep_alive(req["keep_alive"])
            except DurationError as e:
                raise ApiError(400, str(e), stage="bind") from None
        return Target(name, m, keep)

    def options(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            return {}
        try:
            opts, unknown = parse_options(raw)
        except OptionError as e:
            raise ApiError(500, str(e)) from None
        for key in unknown:
            self.server.log.warn("invalid option provided", src="types.go:512", option=key)
        return opts

    # ---- running

    async def run(
        self,
        request: web.Request,
        api: str,
        parse: Callable[[bytes], Inference],
        unload_check: bool = False,
    ) -> web.StreamResponse:
        t_request = time.monotonic()
        try:
            spec = parse(await read_body(request))
        except ApiError as e:
            return error_response(api, e.status, e.message, e.stage)
        srv = self.server
        sched = srv.sched
        assert sched is not None
        srv.stats.requests += 1
        if unload_check and spec.load_only and spec.keep_alive == 0:
            sched.expire_model(spec.model)
            return json_bytes(spec.renderer.empty("unload"))
        while srv.faults.is_set("generate-hang"):
            await srv.faults.wait_change()
        num_ctx = int(spec.options.get("num_ctx") or sched.default_num_ctx)
        num_ctx = max(num_ctx, 4)
        try:
            runner = await sched.get_runner(spec.model, num_ctx, spec.keep_alive)
        except (QueueFull, RunnerError) as e:
            return self._sched_error(api, e)
        try:
            t_loaded = time.monotonic()
            if spec.load_only:
                return json_bytes(spec.renderer.empty("load"))
            return await self._generate(request, spec, runner, t_request, t_loaded)
        finally:
            sched.release(runner)

    @staticmethod
    def _sched_error(api: str, e: QueueFull | RunnerError) -> web.Response:
        """503 for a full queue, 500 for a failed load or a dead runner."""
        return error_response(api, 503 if isinstance(e, QueueFull) else 500, str(e))

    def _lengths(self, spec: Inference, runner: Runner) -> tuple[int, int, str]:
        """(prompt tokens, tokens to generate, done_reason)."""
        prompt_tokens = estimate_tokens(spec.prompt_text) + spec.prompt_overhead
        ctx = runner.num_ctx
        if prompt_tokens > ctx:
            if not spec.truncate:
                raise ApiError(400, "input length exceeds the context length")
            self.server.log.warn(
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
            return error_response(api, e.status, e.message)
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
            label=spec.prompt_text[:FIRST_TOKEN_LABEL],
        )
        try:
            runner.start(seq)
            if not spec.stream:
                try:
                    await seq.done
                except RunnerError as e:
                    return error_response(api, 500, str(e))
                return json_bytes(spec.renderer.body(seq))
            assert seq.first is not None
            try:
                due0 = await seq.first  # or the end's error, when it ends before its first token
            except (RunnerError, ConnectionError) as exc:
                return error_response(api, 500, str(exc) or "unexpected end of generation")
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
                runner.finish(seq, ConnectionResetError("client went away"))
            runner.release_slot()
