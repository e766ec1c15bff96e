"""Hostile request bodies (issue 7, item 12): no input makes the simulator answer an
unhandled 500 or anything but valid JSON/NDJSON/SSE.

Each regression below failed before the fix (a 500 from a Python exception, or
``NaN`` in a JSON answer); the property tests send generated bodies to every
route and check the shape of whatever comes back.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ollama_ops.sim.envconfig import MAX_DURATION_S, request_keep_alive
from ollama_ops.sim.faults import FAULTS, FaultError, parse_fault
from ollama_ops.sim.gojson import OPTION_KINDS, BindError, decode_body
from ollama_ops.sim.routes_generate import CHAT_SCHEMA, GENERATE_SCHEMA
from ollama_ops.sim.routes_models import SHOW_SCHEMA
from ollama_ops.sim.routes_openai import OAI_CHAT_SCHEMA, OAI_COMPLETION_SCHEMA
from tests.sim_helpers import TEST_PROFILE, SimThread

#: The test profile without "slow:1b", whose answer takes half an hour.
FAST_PROFILE: dict[str, Any] = {
    **TEST_PROFILE,
    "models": [m for m in TEST_PROFILE["models"] if m["name"] != "slow:1b"],
}

POST_ROUTES = (
    "/api/generate",
    "/api/chat",
    "/api/show",
    "/api/pull",
    "/v1/chat/completions",
    "/v1/completions",
)
GET_ROUTES = ("/", "/api/version", "/api/tags", "/api/ps", "/v1/models", "/v1/models/tiny")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    with SimThread(profile=FAST_PROFILE) as s:
        yield s


@pytest.fixture(scope="module")
def http(sim: SimThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=30) as c:
        yield c


def _strict_json(text: str) -> Any:
    """json.loads that refuses NaN/Infinity, which are not JSON."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in an answer: not valid JSON")

    return json.loads(text, parse_constant=refuse)


def check_answer(r: httpx.Response) -> None:
    """A well-formed answer: a status Ollama uses, and a body that parses as it claims."""
    ctype = r.headers.get("content-type", "")
    assert r.status_code in (200, 400, 404, 405, 413, 500, 503), r.status_code
    if ctype.startswith("application/json"):
        body = _strict_json(r.text)
        if r.status_code >= 400:
            err = body["error"]
            message = err["message"] if isinstance(err, dict) else err
            assert isinstance(message, str) and message
            if r.status_code == 500:
                # The only 500s Ollama gives for a request body: api.Options.FromMap,
                # and a failed pull (this simulator has no registry).
                assert message.startswith(('option "', "pull model manifest: ")), message
    elif ctype.startswith("application/x-ndjson"):
        assert r.status_code == 200
        lines = [_strict_json(line) for line in r.text.splitlines() if line]
        assert lines and (lines[-1].get("done") is True or "error" in lines[-1])
    elif ctype.startswith("text/event-stream"):
        assert r.status_code == 200
        for line in r.text.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                _strict_json(line[len("data: ") :])
    else:
        assert ctype.startswith("text/plain"), ctype
        assert r.status_code in (200, 404, 405)


# ----------------------------------------------------------------- regressions


def test_huge_keep_alive_is_forever_and_ps_answers(http: httpx.Client) -> None:
    for keep in (1e308, 1.7976931348623157e308, 9.3e9, 10**300):
        r = http.post("/api/generate", json={"model": "tiny", "prompt": "", "keep_alive": keep})
        assert r.status_code == 200, r.text
        ps = http.get("/api/ps")
        assert ps.status_code == 200, ps.text
        (row,) = [m for m in ps.json()["models"] if m["name"] == "tiny:latest"]
        year = datetime.datetime.fromisoformat(row["expires_at"]).year
        assert year > 2262  # now + MaxInt64 ns: Go's "forever"
    http.post("/api/generate", json={"model": "tiny", "prompt": "", "keep_alive": "5m"})


def test_keep_alive_saturates() -> None:
    assert request_keep_alive(1e308) == float("inf")
    assert request_keep_alive(10**400) == float("inf")
    assert request_keep_alive(-(10**400)) == float("inf")
    assert request_keep_alive(MAX_DURATION_S) == float("inf")
    assert request_keep_alive(3600) == 3600.0
    assert request_keep_alive(-1) == float("inf")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"model":"tiny","prompt":"x","options":{"num_predict":NaN}}', "invalid character 'N' looking for beginning of value"),
        (b'{"model":"tiny","prompt":"x","keep_alive":Infinity}', "invalid character 'I' looking for beginning of value"),
        (b'{"model":"tiny","prompt":"x","keep_alive":-Infinity}', "invalid character 'I' in numeric literal"),
        (b'{"model":"tiny","prompt":"x","options":{"temperature":1e400}}', "json: cannot unmarshal number 1e400 into Go value of type float64"),
        (b'{"model":"tiny","prompt":"x","seed":1' + b"0" * 400 + b"}", "json: cannot unmarshal number 1" + "0" * 400 + " into Go value of type float64"),
        (b'{"model":"tiny","prompt":"x","options":{"seed":' + b"9" * 5000 + b"}}", "json: cannot unmarshal number " + "9" * 5000 + " into Go value of type float64"),
        (b'{"model":"tiny","prompt":"x","top_logprobs":1e300}', "json: cannot unmarshal number 1e300 into Go struct field GenerateRequest.top_logprobs of type int"),
        (b'{"model":"tiny","prompt":"x","top_logprobs":1.0}', "json: cannot unmarshal number 1.0 into Go struct field GenerateRequest.top_logprobs of type int"),
        (b'{"model":"tiny","prompt":"x","top_logprobs":9223372036854775808}', "json: cannot unmarshal number 9223372036854775808 into Go struct field GenerateRequest.top_logprobs of type int"),
        (b'{"model":"tiny","prompt":"x","context":[1,2.5]}', "json: cannot unmarshal number 2.5 into Go struct field GenerateRequest.context of type int"),
        (b"[" * 100_000, "invalid character '[' exceeded max depth"),
        (b'{"model":"tiny","options":' + b'{"a":' * 50_000, "invalid character '{' exceeded max depth"),
    ],
)  # fmt: skip
def test_numbers_and_nesting_go_refuses_are_400(
    http: httpx.Client, body: bytes, error: str
) -> None:
    r = http.post("/api/generate", content=body)
    assert r.status_code == 400
    assert r.json() == {"error": error}


def test_openai_routes_refuse_them_in_openai_shape(http: httpx.Client) -> None:
    r = http.post(
        "/v1/chat/completions",
        content=b'{"model":"tiny","messages":[{"role":"user","content":"x"}],"temperature":NaN}',
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "invalid character 'N' looking for beginning of value"
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_huge_integer_options_behave_like_go_int64(http: httpx.Client) -> None:
    """Go converts an out-of-range float64 to MinInt64 on amd64: num_predict < 0 = no limit."""
    r = http.post(
        "/api/generate",
        json={"model": "tiny", "prompt": "x", "stream": False, "options": {"num_predict": 1e300}},
    )
    assert r.status_code == 200
    assert r.json()["done_reason"] == "stop"


def test_lone_surrogates_become_replacement_characters(http: httpx.Client) -> None:
    r = http.post("/api/generate", content=b'{"model":"gh\\ud800ost","prompt":"x"}')
    assert r.status_code == 404
    assert r.json() == {"error": 'model "gh\ufffdost" not found, try pulling it first'}
    assert decode_body(b'["\\ud83d\\ude00", {"\\udc00": 1}]') == ["\U0001f600", {"\ufffd": 1}]


def test_decode_body_refuses_what_go_refuses() -> None:
    for raw in (b"NaN", b"[Infinity]", b"-Infinity", b"1e999", b"[" * 5000):
        with pytest.raises(BindError):
            decode_body(raw)
    assert decode_body(b"[1.5, 2, -0.0]") == [1.5, 2, -0.0]


@pytest.mark.parametrize(
    "body",
    [b'{"model":NaN}', b'{"model":1e400}', b"[" * 50_000, b'{"model":"\\ud800"}', b"\xff"],
)
def test_delete_refuses_hostile_bodies(http: httpx.Client, body: bytes) -> None:
    r = http.request("DELETE", "/api/delete", content=body)
    assert r.status_code in (400, 404)
    assert isinstance(_strict_json(r.text)["error"], str)


@pytest.mark.parametrize(
    "spec",
    ["crash:nan", "crash:inf", "crash:-inf", "crash:-1", "crash:1e9", "slow-load:1e308",
     "memory-grow:1e6", "memory-grow:NaN", "slow-start:-0.5"],
)  # fmt: skip
def test_fault_arguments_out_of_range_are_refused(spec: str) -> None:
    with pytest.raises(FaultError, match="must be a number from 0 to"):
        parse_fault(spec)


@pytest.mark.parametrize(
    "body",
    [
        b'{"set":["crash:nan"]}',
        b'{"set":["crash:inf"]}',
        b'{"set":["crash:-5"]}',
        b'{"set":["crash:1e300"]}',
        b'{"set":["memory-grow:1e12"]}',
        b'{"set":5}',
        b'{"set":[["hang"]]}',
        b'{"clear":{"a":1}}',
        b'{"set":NaN}',
        b'{"set":["crash:1"],"clear":["nope"]}',
        b"[1]",
        b"{",
        b"[" * 50_000,
    ],
)
def test_control_api_refuses_bad_bodies_with_json(http: httpx.Client, body: bytes) -> None:
    r = http.post("/_sim/faults", content=body)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(_strict_json(r.text)["error"], str)
    faults = _strict_json(http.get("/_sim/faults").text)
    assert faults["faults"] == {}  # a refused body changed nothing


# ----------------------------------------------------------------- properties

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**330), max_value=10**330),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["tiny", "other:1b", "ghost", "5m", "-1", "0", "\ud800", "1e400"]),
)
_json_any = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=12), inner, max_size=4),
    ),
    max_leaves=12,
)
#: Numbers Go and Python disagree about: NaN, infinities, beyond float64 and int64.
_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**330), max_value=10**330),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 2**63, 2**64, -(2**63) - 1, 5e-324, 0.5, -1, 0]),
)
_durations = _numbers | st.sampled_from(["5m", "-1s", "0", "2562047h47m16s", "1e400s", "5"])
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"])},
    optional={
        "content": st.text(max_size=30) | _json_any,
        "images": st.lists(st.text(max_size=8), max_size=2),
        "tool_calls": _json_any,
    },
)
_option = st.sampled_from([*OPTION_KINDS, "mirostat_x"])
_TYPED = {
    "string": st.text(max_size=30),
    "bool": st.booleans(),
    "int": _numbers,
    "float": _numbers,
    "duration": _durations,
    "object": st.dictionaries(_option, _numbers | _json_any, max_size=4),
    "[]string": st.lists(st.text(max_size=8), max_size=3),
    "[]int": st.lists(_numbers, max_size=3),
    "[]object": st.lists(_message, max_size=3),
    "any": _json_any,
}
_SCHEMAS = {
    "/api/generate": GENERATE_SCHEMA,
    "/api/chat": CHAT_SCHEMA,
    "/api/show": SHOW_SCHEMA,
    "/v1/chat/completions": OAI_CHAT_SCHEMA,
    "/v1/completions": OAI_COMPLETION_SCHEMA,
}


def _request(route: str) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies of the right shape for ``route``, each field usually of its type."""
    schema = _SCHEMAS[route]
    fields = {
        k: st.one_of(_TYPED[code], _TYPED[code], _TYPED[code], _json_any)
        for k, code in schema.items()
        if k != "model"
    }
    if route in ("/api/generate", "/api/chat"):
        fields["think"] = _json_any
    model = st.sampled_from(["tiny", "other:1b", "tiny:latest", "ghost", ""]) | _json_any
    return st.fixed_dictionaries({"model": model}, optional=fields)


#: A valid body per route, into which one hostile number is put.
_VALID: dict[str, dict[str, Any]] = {
    "/api/generate": {"model": "tiny", "prompt": "hi", "stream": False},
    "/api/chat": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
    "/api/show": {"model": "tiny"},
    "/v1/chat/completions": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "tiny", "prompt": "hi", "stream": True},
}
_hostile = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 1.0, -0.0]),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**308, 10**309, -(10**400), 10**4000]),
    st.integers(min_value=-(10**320), max_value=10**320),
)


@st.composite
def _one_hostile_number(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    route = draw(st.sampled_from(sorted(_VALID)))
    body = json.loads(json.dumps(_VALID[route]))
    value = draw(_hostile)
    numeric = [k for k, c in _SCHEMAS[route].items() if c in ("int", "float", "duration")]
    where = draw(st.sampled_from([*numeric, "options", "context", "keep_alive"]))
    if where == "options":
        body["options"] = {draw(_option): value}
    elif where == "context":
        body["context"] = [1, value]
    else:
        body[where] = value
    return route, body


_requests = st.sampled_from(sorted(_SCHEMAS)).flatmap(
    lambda route: st.tuples(st.just(route), _request(route))
)


def _dump(value: Any) -> bytes:
    # allow_nan: NaN/Infinity literals are part of the attack.
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


_PROPERTY = settings(
    max_examples=300,
    database=None,  # no .hypothesis/ left in the worktree
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_PROPERTY
@given(request=_requests)
def test_any_request_like_body_answers_well_formed(
    http: httpx.Client, request: tuple[str, dict[str, Any]]
) -> None:
    route, body = request
    check_answer(http.post(route, content=_dump(body)))


@_PROPERTY
@given(request=_one_hostile_number())
def test_one_hostile_number_anywhere_answers_well_formed(
    http: httpx.Client, request: tuple[str, dict[str, Any]]
) -> None:
    route, body = request
    check_answer(http.post(route, content=_dump(body)))


@_PROPERTY
@given(
    route=st.sampled_from(POST_ROUTES + GET_ROUTES),
    body=_json_any.map(_dump) | st.binary(max_size=64),
)
def test_any_body_to_any_route_answers_well_formed(
    http: httpx.Client, route: str, body: bytes
) -> None:
    method = "GET" if route in GET_ROUTES else "POST"
    check_answer(http.request(method, route, content=body))


@_PROPERTY
@given(body=_json_any.map(_dump) | st.binary(max_size=64))
def test_any_body_to_the_control_api_answers_json(http: httpx.Client, body: bytes) -> None:
    text = body.decode("utf-8", "replace").lower()
    assume(not any(name in text for name in FAULTS))  # never really inject a fault
    r = http.post("/_sim/faults", content=body)
    assert r.status_code in (200, 400)
    assert r.headers["content-type"].startswith("application/json")
    _strict_json(r.text)
    assert _strict_json(http.get("/_sim/faults").text)["faults"] == {}
