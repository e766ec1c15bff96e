"""The HTTP surface in Ollama's exact shapes: bodies, status codes, errors, bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.sim_helpers import SimThread, ndjson, wait_until

NOT_FOUND = 'model "{}" not found, try pulling it first'


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    with SimThread() as s:
        yield s


@pytest.fixture
def http(sim: SimThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=30) as c:
        yield c


def test_root_and_version(http: httpx.Client) -> None:
    r = http.get("/")
    assert r.status_code == 200
    assert r.text == "Ollama is running"
    assert r.headers["content-type"].startswith("text/plain")
    h = http.head("/")
    assert h.status_code == 200
    assert h.text == ""
    assert http.get("/api/version").json() == {"version": "0.33.0-sim"}


def test_unknown_route_and_method(http: httpx.Client) -> None:
    r = http.get("/api/nothing")
    assert r.status_code == 404
    assert r.text == "404 page not found"
    r = http.get("/api/generate")
    assert r.status_code == 405
    assert r.text == "405 method not allowed"


def test_generate_chunks_are_tokens(http: httpx.Client) -> None:
    r = http.post("/api/generate", json={"model": "tiny", "prompt": "count me"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(r.text)
    tokens = lines[:-1]
    final = lines[-1]
    assert all(set(t) == {"model", "created_at", "response", "done"} for t in tokens)
    assert all(t["done"] is False and t["model"] == "tiny" for t in tokens)
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["eval_count"] == len(tokens) == 8
    for key in ("total_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int)
        assert final[key] > 0
    assert final["created_at"].endswith("Z")
    assert final["response"] == ""


def test_load_and_unload(sim: SimThread, http: httpx.Client) -> None:
    r = http.post("/api/generate", json={"model": "other:1b", "prompt": ""})
    body = r.json()
    assert body["done"] is True
    assert body["done_reason"] == "load"
    assert body["response"] == ""
    # Timing fields are omitted when zero, as Go's omitempty does.
    assert "eval_count" not in body
    assert "total_duration" not in body
    assert "other:1b" in [m["name"] for m in http.get("/api/ps").json()["models"]]
    r = http.post("/api/generate", json={"model": "other:1b", "prompt": "", "keep_alive": 0})
    assert r.json()["done_reason"] == "unload"
    wait_until(
        lambda: "other:1b" not in [m["name"] for m in http.get("/api/ps").json()["models"]],
        what="the unload",
    )
    r = http.post("/api/chat", json={"model": "other:1b", "messages": []})
    body = r.json()
    assert body["done_reason"] == "load"
    assert body["message"] == {"role": "assistant", "content": ""}
    r = http.post("/api/chat", json={"model": "other:1b", "keep_alive": "0s"})
    assert r.json()["done_reason"] == "unload"


def test_keep_alive_forever_in_ps(http: httpx.Client) -> None:
    http.post("/api/generate", json={"model": "tiny", "prompt": "", "keep_alive": -1})
    models = {m["name"]: m for m in http.get("/api/ps").json()["models"]}
    assert int(models["tiny:latest"]["expires_at"][:4]) > 2300
    http.post("/api/generate", json={"model": "tiny", "prompt": "", "keep_alive": "5m"})


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"", 400, "missing request body"),
        (b"   ", 400, "missing request body"),
        (b'{"model":', 400, "unexpected EOF"),
        (b"xyz", 400, "invalid character 'x' looking for beginning of value"),
        (b'{"model" "tiny"}', 400, "invalid character '\"' after object key"),
        (
            b'{model: "tiny"}',
            400,
            "invalid character 'm' looking for beginning of object key string",
        ),
        (
            b'{"model": "tiny", "prompt": 5}',
            400,
            "json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string",
        ),
        (
            b"[1, 2]",
            400,
            "json: cannot unmarshal array into Go value of type api.GenerateRequest",
        ),
        (b'{"prompt": "x"}', 400, "model is required"),
        (b'{"model": "ghost", "prompt": "x"}', 404, NOT_FOUND.format("ghost")),
        (
            b'{"model": "tiny", "prompt": "x", "keep_alive": "5"}',
            400,
            'time: missing unit in duration "5"',
        ),
        (
            b'{"model": "tiny", "prompt": "x", "keep_alive": "5d"}',
            400,
            'time: unknown unit "d" in duration "5d"',
        ),
        (
            b'{"model": "tiny", "prompt": "x", "keep_alive": true}',
            400,
            "Unsupported type: 'bool'",
        ),
        (
            b'{"model": "tiny", "prompt": "x", "options": {"num_predict": "lots"}}',
            500,
            'option "num_predict" must be of type integer',
        ),
        (
            b'{"model": "tiny", "prompt": "x", "options": {"stop": [1]}}',
            500,
            'option "stop" must be of an array of strings',
        ),
        (
            b'{"model": "tiny", "prompt": "x", "think": true}',
            400,
            '"tiny" does not support thinking',
        ),
        (
            b'{"model": "tiny", "prompt": "x", "raw": true, "system": "s"}',
            400,
            "raw mode does not support template, system, or context",
        ),
    ],
)
def test_generate_errors(http: httpx.Client, body: bytes, status: int, error: str) -> None:
    r = http.post("/api/generate", content=body)
    assert r.status_code == status
    assert r.json() == {"error": error}
    assert r.headers["content-type"] == "application/json; charset=utf-8"


def test_trailing_data_after_body_is_ignored(http: httpx.Client) -> None:
    r = http.post("/api/generate", content=b'{"model":"tiny","prompt":"a","stream":false} trailing')
    assert r.status_code == 200
    assert r.json()["done"] is True


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": ["x"]}]}',
            400,
            "json: cannot unmarshal array into Go struct field ChatRequest.messages.content"
            " of type string",
        ),
        (b'{"model": "ghost", "messages": []}', 404, NOT_FOUND.format("ghost")),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}],'
            b' "tools": [{"type": "function"}]}',
            400,
            "registry.ollama.ai/library/tiny:latest does not support tools",
        ),
    ],
)
def test_chat_errors(http: httpx.Client, body: bytes, status: int, error: str) -> None:
    r = http.post("/api/chat", content=body)
    assert r.status_code == status
    assert r.json() == {"error": error}


def test_unknown_options_warn_and_are_ignored(sim: SimThread, http: httpx.Client) -> None:
    r = http.post(
        "/api/generate",
        json={"model": "tiny", "prompt": "x", "stream": False, "options": {"mirostat_x": 3}},
    )
    assert r.status_code == 200
    assert 'msg="invalid option provided" option=mirostat_x' in sim.logs()


def test_negative_num_predict_means_no_limit(http: httpx.Client) -> None:
    r = http.post(
        "/api/generate",
        json={"model": "tiny", "prompt": "x", "stream": False, "options": {"num_predict": -5}},
    )
    assert r.status_code == 200
    assert r.json()["eval_count"] == 8
    assert r.json()["done_reason"] == "stop"


def test_huge_prompt_is_truncated_to_the_context(sim: SimThread, http: httpx.Client) -> None:
    prompt = "word " * 400_000  # 2 MB
    r = http.post("/api/generate", json={"model": "tiny", "prompt": prompt, "stream": False})
    assert r.status_code == 200
    body = r.json()
    assert body["prompt_eval_count"] == 4096
    assert 'msg="truncating input prompt" limit=4096' in sim.logs()
    r = http.post(
        "/api/generate",
        json={"model": "tiny", "prompt": prompt, "stream": False, "truncate": False},
    )
    assert r.status_code == 400
    assert r.json() == {"error": "input length exceeds the context length"}
    assert http.get("/").status_code == 200


def test_body_too_large(http: httpx.Client) -> None:
    r = http.post("/api/generate", content=b"x" * (65 * 1024 * 1024))
    assert r.status_code == 413
    assert http.get("/").status_code == 200


def test_openai_stream_shape(http: httpx.Client) -> None:
    r = http.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "max_tokens": 2,
        },
    )
    assert r.headers["content-type"] == "text/event-stream"
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-")


def test_openai_bind_errors(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", content=b"{")
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "unexpected EOF",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    r = http.post("/v1/completions", json={"model": "tiny", "prompt": ["a", "b"]})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == (
        "json: cannot unmarshal array into Go struct field CompletionRequest.prompt of type string"
    )
    r = http.get("/v1/models/ghost:1b")
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "model 'ghost:1b' not found"


def test_access_log_is_gin_shaped(sim: SimThread, http: httpx.Client) -> None:
    http.get("/api/version")
    lines = [ln for ln in sim.access_buf.getvalue().splitlines() if '"/api/version"' in ln]
    assert lines
    assert lines[-1].startswith("[GIN] ")
    assert "| 200 |" in lines[-1]
    assert '| GET      "/api/version"' in lines[-1]  # %-7s, then two spaces (empty colours)
