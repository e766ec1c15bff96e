"""The two streaming APIs: request bodies and what each response line means.

Ollama's native API (``/api/generate``, ``/api/chat``) streams NDJSON: one
``{"...","done":false}`` line per token, then a final ``"done":true`` line
with ``eval_count``, ``prompt_eval_count`` and the durations in nanoseconds.
The OpenAI layer (``/v1/chat/completions``) streams SSE events: one
``"finish_reason":null`` chunk per token, a chunk with the finish reason,
with ``stream_options.include_usage`` a chunk with ``usage``, then
``data: [DONE]``. Token lines are recognised by a byte search and only
timestamped; the few other lines are parsed as JSON. Token counts always come
from the server: no tokenizer.
"""

from __future__ import annotations

import enum
import json
from array import array
from typing import Any

from .client import Exchange


class Api(enum.Enum):
    GENERATE = "ollama"  # /api/generate
    CHAT = "ollama-chat"  # /api/chat
    OPENAI = "openai"  # /v1/chat/completions

    @property
    def path(self) -> str:
        return {
            Api.GENERATE: "/api/generate",
            Api.CHAT: "/api/chat",
            Api.OPENAI: "/v1/chat/completions",
        }[self]


def body(api: Api, model: str, prompt: str, max_tokens: int | None) -> bytes:
    """The request body: ``num_predict`` natively, ``max_tokens`` on /v1."""
    req: dict[str, Any] = {"model": model, "stream": True}
    if api is Api.OPENAI:
        req["messages"] = [{"role": "user", "content": prompt}]
        req["stream_options"] = {"include_usage": True}
        if max_tokens is not None:
            req["max_tokens"] = max_tokens
    else:
        if api is Api.CHAT:
            req["messages"] = [{"role": "user", "content": prompt}]
        else:
            req["prompt"] = prompt
        if max_tokens is not None:
            req["options"] = {"num_predict": max_tokens}
    return json.dumps(req, separators=(",", ":")).encode()


class StreamExchange(Exchange):
    """A streamed generation: the arrival time of every token chunk and the server's figures."""

    __slots__ = (
        "done_reason",
        "eval_count",
        "eval_s",
        "load_s",
        "prompt_eval_s",
        "prompt_tokens",
        "stream_error",
        "times",
        "total_s",
    )

    def __init__(self) -> None:
        super().__init__()
        self.times = array("d")
        self.prompt_tokens: int | None = None
        self.eval_count: int | None = None
        self.load_s: float | None = None
        self.prompt_eval_s: float | None = None
        self.eval_s: float | None = None
        self.total_s: float | None = None
        self.done_reason = ""
        self.stream_error: str | None = None

    def complete(self) -> bool:
        """Did the stream end the way the API says a finished stream ends?"""
        raise NotImplementedError

    def failure(self) -> str | None:
        """Why this exchange failed, or None."""
        if self.error is not None:
            return self.error
        if not 200 <= self.status < 300:
            return error_text(self.status, bytes(self.body))
        if self.stream_error is not None:
            return self.stream_error
        if not self.complete():
            return "the stream ended without its final chunk"
        return None


class NativeExchange(StreamExchange):
    __slots__ = ()

    def on_line(self, line: bytes, now: float) -> None:
        if b'"done":false' in line:
            self.times.append(now)
        elif line.strip():
            self._other(line)

    def _other(self, line: bytes) -> None:
        try:
            obj = json.loads(line)
        except ValueError:
            self.stream_error = f"a line that is not JSON: {line[:80]!r}"
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj:
            self.stream_error = str(obj["error"])
        elif obj.get("done"):
            self.done_reason = str(obj.get("done_reason") or "")
            self.prompt_tokens = int(obj.get("prompt_eval_count") or 0)
            self.eval_count = int(obj.get("eval_count") or 0)
            self.load_s = int(obj.get("load_duration") or 0) / 1e9
            self.prompt_eval_s = int(obj.get("prompt_eval_duration") or 0) / 1e9
            self.eval_s = int(obj.get("eval_duration") or 0) / 1e9
            self.total_s = int(obj.get("total_duration") or 0) / 1e9

    def complete(self) -> bool:
        return self.eval_count is not None


class OpenAIExchange(StreamExchange):
    __slots__ = ("saw_done",)

    def __init__(self) -> None:
        super().__init__()
        self.saw_done = False

    def on_line(self, line: bytes, now: float) -> None:
        if b'"finish_reason":null' in line:
            self.times.append(now)
        elif line.startswith(b"data:"):
            self._event(line[5:].strip(), now)

    def _event(self, payload: bytes, now: float) -> None:
        if payload == b"[DONE]":
            self.saw_done = True
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            self.stream_error = f"an event that is not JSON: {payload[:80]!r}"
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj:
            err = obj["error"]
            self.stream_error = str(err.get("message", err) if isinstance(err, dict) else err)
            return
        for choice in obj.get("choices") or ():
            if choice.get("finish_reason"):
                self.done_reason = str(choice["finish_reason"])
            delta = choice.get("delta") or {}
            if delta.get("content"):  # a token in the chunk that ends the stream
                self.times.append(now)
        usage = obj.get("usage")
        if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.eval_count = int(usage["completion_tokens"])

    def complete(self) -> bool:
        return self.saw_done


def exchange_for(api: Api) -> StreamExchange:
    return OpenAIExchange() if api is Api.OPENAI else NativeExchange()


def error_text(status: int, raw: bytes) -> str:
    """``503 server busy, ...`` from Ollama's ``{"error": ...}`` body (or the text)."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "error" in obj:
        err = obj["error"]
        text = str(err.get("message", err) if isinstance(err, dict) else err)
    return f"{status} {' '.join(text.split())[:200]}".strip()
