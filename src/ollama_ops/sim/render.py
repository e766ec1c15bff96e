"""Response bodies in Ollama's exact shapes, with per-token bytes pre-encoded.

A token is one filler word (a leading space after the first), one NDJSON
line or one SSE event: counting chunks counts tokens. The words cycle through
a fixed vocabulary from an offset derived from the prompt (or the ``seed``
option), so the same request gets the same text.

Field order and omission follow the Go structs (api.GenerateResponse,
api.ChatResponse, openai.ChatCompletionChunk, ...): timing fields are
nanoseconds and are left out when zero, as ``omitempty`` does.
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

from .engine import Renderer, Sequence

VOCAB = [
    "The",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "a",
    "simulated",
    "model",
    "keeps",
    "talking",
    "about",
    "nothing",
    "in",
    "particular",
    "so",
    "that",
    "every",
    "stream",
    "has",
    "words",
    "to",
    "carry",
    "and",
    "clients",
    "have",
    "tokens",
    "to",
    "count",
    "until",
    "the",
    "last",
    "chunk",
    "says",
    "it",
    "is",
    "done",
    "with",
    "timing",
    "fields",
    "measured",
    "in",
    "nanoseconds",
    "for",
    "tuners",
    "benchmarks",
    "health",
    "checks",
    "and",
    "operators",
    "who",
    "want",
    "predictable",
    "replies",
]
N_VOCAB = len(VOCAB)

_ts_cache: list[object] = [-1, "", b""]
_sec_cache = [-1, b""]


def created_at() -> str:
    """time.Now().UTC() as Go's JSON encodes it (RFC 3339, trailing zeros trimmed)."""
    t = time.time()
    ms = int(t * 1000)
    if ms != _ts_cache[0]:
        frac = f"{ms % 1000:03d}".rstrip("0")
        base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
        text = base + ("." + frac if frac else "") + "Z"
        _ts_cache[0] = ms
        _ts_cache[1] = text
        _ts_cache[2] = text.encode()
    return str(_ts_cache[1])


def _created_at_b() -> bytes:
    created_at()
    b = _ts_cache[2]
    assert isinstance(b, bytes)
    return b


def _unix_b() -> bytes:
    s = int(time.time())
    if s != _sec_cache[0]:
        _sec_cache[0] = s
        _sec_cache[1] = str(s).encode()
    b = _sec_cache[1]
    assert isinstance(b, bytes)
    return b


def word_offset(prompt: str, seed: int | None) -> int:
    if seed is not None and seed >= 0:
        return seed % N_VOCAB
    return zlib.crc32(prompt.encode("utf-8", "replace")) % N_VOCAB


def text_of(offset: int, n: int) -> str:
    if n <= 0:
        return ""
    words = [VOCAB[(offset + i) % N_VOCAB] for i in range(n)]
    return words[0] + "".join(" " + w for w in words[1:])


def _word_tables(pre: bytes, post: bytes, offset: int) -> tuple[list[bytes], list[bytes]]:
    """Pre-encoded ``pre + word + post`` for the first token and the others."""
    first = []
    rest = []
    for i in range(N_VOCAB):
        w = VOCAB[(offset + i) % N_VOCAB]
        first.append(pre + w.encode() + post)
        rest.append(pre + b" " + w.encode() + post)
    return first, rest


def metrics(seq: Sequence) -> dict[str, int]:
    """The api.Metrics fields, nanoseconds, zeros left out."""
    out = {
        "total_duration": int(seq.total_s * 1e9),
        "load_duration": int(seq.load_s * 1e9),
        "prompt_eval_count": seq.prompt_tokens,
        "prompt_eval_duration": int(seq.prompt_s * 1e9),
        "eval_count": seq.emitted,
        "eval_duration": int(seq.eval_s * 1e9),
    }
    return {k: v for k, v in out.items() if v}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class NativeRenderer(Renderer):
    """/api/generate and /api/chat, streamed (NDJSON) or not (one JSON)."""

    def __init__(self, kind: str, model: str, offset: int, stream: bool, raw: bool = False) -> None:
        self.kind = kind  # "generate" or "chat"
        self.model = model
        self.offset = offset
        self.stream = stream
        self.raw = raw
        m = json.dumps(model, ensure_ascii=False).encode()
        self._prefix = b'{"model":' + m + b',"created_at":"'
        if stream:
            if kind == "generate":
                pre, post = b'","response":"', b'","done":false}\n'
            else:
                pre = b'","message":{"role":"assistant","content":"'
                post = b'"},"done":false}\n'
            self._first, self._rest = _word_tables(pre, post, offset)

    def token(self, i: int) -> bytes | None:
        if not self.stream:
            return None
        table = self._rest if i else self._first
        return self._prefix + _created_at_b() + table[i % N_VOCAB]

    def _head(self, content: str) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "created_at": created_at()}
        if self.kind == "generate":
            out["response"] = content
        else:
            out["message"] = {"role": "assistant", "content": content}
        return out

    def result(self, seq: Sequence) -> dict[str, Any]:
        content = "" if self.stream else text_of(self.offset, seq.emitted)
        out = self._head(content)
        out["done"] = True
        out["done_reason"] = seq.done_reason
        if self.kind == "generate" and not self.raw:
            n = seq.prompt_tokens + seq.emitted
            out["context"] = [(self.offset * 7919 + i * 104729) % 128000 for i in range(n)]
        out.update(metrics(seq))
        return out

    def final(self, seq: Sequence) -> bytes | None:
        if not self.stream:
            return None
        return _dumps(self.result(seq)) + b"\n"

    def body(self, seq: Sequence) -> bytes:
        return _dumps(self.result(seq))

    def error_chunk(self, message: str) -> bytes | None:
        return _dumps({"error": message}) + b"\n"

    def empty(self, reason: str) -> bytes:
        """The load/unload reply: done with no content."""
        out = self._head("")
        out["done"] = True
        out["done_reason"] = reason
        return _dumps(out)


class OpenAIRenderer(Renderer):
    """/v1/chat/completions and /v1/completions (openai/openai.go shapes)."""

    def __init__(
        self, kind: str, model: str, *, offset: int, stream: bool, include_usage: bool, ident: str
    ) -> None:
        self.kind = kind  # "chat" or "completion"
        self.model = model
        self.offset = offset
        self.stream = stream
        self.include_usage = include_usage
        self.ident = ident
        m = json.dumps(model, ensure_ascii=False).encode()
        ident_b = json.dumps(ident).encode()
        if kind == "chat":
            self._prefix = (
                b'data: {"id":' + ident_b + b',"object":"chat.completion.chunk","created":'
            )
            pre = (
                b',"model":' + m + b',"system_fingerprint":"fp_ollama","choices":[{"index":0,'
                b'"delta":{"role":"assistant","content":"'
            )
            post = b'"},"finish_reason":null}]}\n\n'
        else:
            self._prefix = b'data: {"id":' + ident_b + b',"object":"text_completion","created":'
            pre = b',"choices":[{"text":"'
            usage = b',"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}'
            post = (
                b'","index":0,"finish_reason":null}],"model":'
                + m
                + b',"system_fingerprint":"fp_ollama"'
                + (usage if include_usage else b"")
                + b"}\n\n"
            )
        if stream:
            self._first, self._rest = _word_tables(pre, post, offset)

    def token(self, i: int) -> bytes | None:
        if not self.stream:
            return None
        table = self._rest if i else self._first
        return self._prefix + _unix_b() + table[i % N_VOCAB]

    def _usage(self, seq: Sequence) -> dict[str, int]:
        return {
            "prompt_tokens": seq.prompt_tokens,
            "completion_tokens": seq.emitted,
            "total_tokens": seq.prompt_tokens + seq.emitted,
        }

    def _chunk(self, content: str, finish: str | None) -> dict[str, Any]:
        if self.kind == "chat":
            return {
                "id": self.ident,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.model,
                "system_fingerprint": "fp_ollama",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": content},
                        "finish_reason": finish,
                    }
                ],
            }
        out: dict[str, Any] = {
            "id": self.ident,
            "object": "text_completion",
            "created": int(time.time()),
            "choices": [{"text": content, "index": 0, "finish_reason": finish}],
            "model": self.model,
            "system_fingerprint": "fp_ollama",
        }
        if self.include_usage:
            out["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return out

    def final(self, seq: Sequence) -> bytes | None:
        if not self.stream:
            return None
        c = self._chunk("", seq.done_reason or None)
        out = b"data: " + _dumps(c) + b"\n\n"
        if self.include_usage:
            c["choices"] = []
            c["usage"] = self._usage(seq)
            out += b"data: " + _dumps(c) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def body(self, seq: Sequence) -> bytes:
        text = text_of(self.offset, seq.emitted)
        reason = seq.done_reason or None
        if self.kind == "chat":
            return _dumps(
                {
                    "id": self.ident,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": self.model,
                    "system_fingerprint": "fp_ollama",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": reason,
                        }
                    ],
                    "usage": self._usage(seq),
                }
            )
        return _dumps(
            {
                "id": self.ident,
                "object": "text_completion",
                "created": int(time.time()),
                "model": self.model,
                "system_fingerprint": "fp_ollama",
                "choices": [{"text": text, "index": 0, "finish_reason": reason}],
                "usage": self._usage(seq),
            }
        )

    def error_chunk(self, message: str) -> bytes | None:
        # Ollama's OpenAI writer decodes the {"error":...} line as an empty
        # response and forwards it as an empty chunk; the stream then ends
        # without "data: [DONE]".
        del message
        c = self._chunk("", None)
        c["model"] = ""
        return b"data: " + _dumps(c) + b"\n\n"

    def empty(self, reason: str) -> bytes:
        """A load reply (empty prompt) as the OpenAI writer converts it."""
        if self.kind == "chat":
            body = self._chunk("", reason)
            body["object"] = "chat.completion"
            body["choices"] = [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ""},
                    "finish_reason": reason,
                }
            ]
        else:
            body = self._chunk("", reason)
            body.pop("usage", None)
        body["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return _dumps(body)
