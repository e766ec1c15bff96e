"""Clients nobody here wrote (the official ``ollama`` and ``openai`` packages)
talk to the simulator and parse every answer."""

from __future__ import annotations

from collections.abc import Iterator

import ollama
import openai
import pytest

from tests.sim_helpers import SimThread


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    with SimThread() as s:
        yield s


@pytest.fixture
def client(sim: SimThread) -> ollama.Client:
    return ollama.Client(host=sim.url, timeout=30)


@pytest.fixture
def oai(sim: SimThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url + "/v1", api_key="ollama", timeout=30, max_retries=0)


def test_list_show_ps(client: ollama.Client) -> None:
    listed = client.list()
    names = [m.model for m in listed.models]
    assert names == ["tiny:latest", "other:1b", "slow:1b"]
    tiny = listed.models[0]
    assert tiny.size == 100_000_000
    assert tiny.digest and len(tiny.digest) == 64
    assert tiny.modified_at is not None
    assert tiny.details is not None
    assert tiny.details.family == "llama"
    assert tiny.details.parameter_size == "100M"
    assert tiny.details.quantization_level == "Q8_0"

    shown = client.show("tiny")
    assert shown.details is not None
    assert shown.details.format == "gguf"
    assert shown.capabilities == ["completion"]
    assert shown.modelinfo is not None
    assert shown.modelinfo["llama.context_length"] == 8192
    assert shown.modelfile is not None
    assert "FROM" in shown.modelfile

    client.generate(model="tiny", prompt="")  # load
    ps = client.ps()
    loaded = {m.model: m for m in ps.models}
    assert "tiny:latest" in loaded
    m = loaded["tiny:latest"]
    assert m.size is not None
    assert m.size_vram == m.size
    assert m.expires_at is not None
    assert m.context_length == 4096


def test_show_unknown_model(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        client.show("missing:7b")
    assert e.value.status_code == 404
    assert e.value.error == "model 'missing:7b' not found"


def test_generate_not_streamed(client: ollama.Client) -> None:
    r = client.generate(model="tiny", prompt="Why is the sky blue?")
    assert r.done is True
    assert r.done_reason == "stop"
    assert r.eval_count == 8
    assert r.response is not None
    assert len(r.response.split()) == 8
    assert r.prompt_eval_count is not None
    assert r.prompt_eval_count > 0
    assert r.total_duration is not None
    assert r.total_duration > 0
    assert r.eval_duration is not None
    assert r.eval_duration > 0
    assert r.context is not None
    # Same request, same text.
    assert client.generate(model="tiny", prompt="Why is the sky blue?").response == r.response


def test_generate_streamed(client: ollama.Client) -> None:
    parts = list(
        client.generate(model="tiny", prompt="hello", stream=True, options={"num_predict": 5})
    )
    tokens = [p for p in parts if not p.done]
    assert len(tokens) == 5
    assert all(p.response for p in tokens)
    last = parts[-1]
    assert last.done is True
    assert last.done_reason == "length"
    assert last.eval_count == 5
    assert last.response == ""


def test_chat(client: ollama.Client) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    r = client.chat(model="tiny", messages=msgs)
    assert r.message.role == "assistant"
    assert r.message.content is not None
    assert len(r.message.content.split()) == 8
    assert r.done_reason == "stop"
    chunks = list(client.chat(model="tiny", messages=msgs, stream=True))
    assert [c.done for c in chunks].count(True) == 1
    assert "".join(c.message.content or "" for c in chunks) == r.message.content
    assert chunks[-1].eval_count == 8


def test_unknown_model_generate(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model="nope:1b", prompt="x")
    assert e.value.status_code == 404
    assert e.value.error == 'model "nope:1b" not found, try pulling it first'


def test_openai_chat(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert r.object == "chat.completion"
    assert r.system_fingerprint == "fp_ollama"
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content is not None
    assert len(r.choices[0].message.content.split()) == 4
    assert r.usage is not None
    assert r.usage.completion_tokens == 4
    assert r.usage.total_tokens == r.usage.prompt_tokens + 4


def test_openai_chat_stream_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 8
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert finals[0].choices[0].finish_reason == "stop"
    usage = chunks[-1]
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens == 8


def test_openai_completions(oai: openai.OpenAI) -> None:
    r = oai.completions.create(model="tiny", prompt="Say", max_tokens=3)
    assert r.object == "text_completion"
    assert r.choices[0].finish_reason == "length"
    assert len(r.choices[0].text.split()) == 3
    assert r.usage is not None
    assert r.usage.completion_tokens == 3
    chunks = list(
        oai.completions.create(
            model="tiny", prompt="Say", stream=True, stream_options={"include_usage": True}
        )
    )
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len(texts) == 8
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8


def test_openai_models(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert ids == ["tiny:latest", "other:1b", "slow:1b"]
    m = oai.models.retrieve("tiny:latest")
    assert m.id == "tiny:latest"
    assert m.owned_by == "library"


def test_openai_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    body = e.value.body
    assert isinstance(body, dict)
    assert body["message"] == 'model "nope" not found, try pulling it first'
    assert body["type"] == "api_error"
    with pytest.raises(openai.BadRequestError) as e2:
        oai.chat.completions.create(model="tiny", messages=[])
    body2 = e2.value.body
    assert isinstance(body2, dict)
    assert body2["message"] == "[] is too short - 'messages'"
    assert body2["type"] == "invalid_request_error"
