"""The pure parts of the benchmark: statistics, shapes, SLOs, workloads, records, compare,
the report's width, and the hand-written HTTP parser fed byte by byte."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
from array import array
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_ops.bench import compare, records, report, shapes, slo, stats, summary, workload
from ollama_ops.bench.client import Connection, Exchange, parse_url
from ollama_ops.bench.errors import BenchError
from ollama_ops.bench.progress import line as progress_line
from ollama_ops.bench.records import Outcome, RequestRecord
from ollama_ops.bench.runner import Result, Snapshot, StageResult, Target
from ollama_ops.bench.wire import Api, NativeExchange, OpenAIExchange, body, error_text

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


# --------------------------------------------------------------------------- statistics


@given(st.lists(finite, min_size=2, max_size=200))
def test_percentile_matches_inclusive_quantiles(values: list[float]) -> None:
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    for q in (1, 10, 50, 90, 99):
        assert stats.percentile(ordered, q) == pytest.approx(cuts[q - 1], rel=1e-9, abs=1e-6)


@given(st.lists(finite, min_size=1, max_size=100), st.floats(0, 100), st.floats(0, 100))
def test_percentile_is_monotone_and_bounded(values: list[float], a: float, b: float) -> None:
    ordered = sorted(values)
    lo, hi = min(a, b), max(a, b)
    pa, pb = stats.percentile(ordered, lo), stats.percentile(ordered, hi)
    assert ordered[0] - 1e-9 <= pa <= pb + 1e-9 <= ordered[-1] + 2e-9


def test_dist_ignores_unknown_values_and_round_trips_json() -> None:
    d = stats.dist([3.0, None, 1.0, 2.0])
    assert d is not None
    assert (d.n, d.median, d.min, d.max, d.mean) == (3, 2.0, 1.0, 3.0, 2.0)
    assert stats.dist_from_json(d.to_json()) == d
    assert stats.dist([None]) is None
    assert stats.dist_from_json({"n": 1}) is None


def test_percentile_refuses_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        stats.percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        stats.percentile([1.0], 101)


def test_cdf_ends_at_one_and_is_sorted() -> None:
    xs, ys = stats.cdf([random.random() for _ in range(1000)], points=50)
    assert xs == sorted(xs)
    assert ys[-1] == 1.0
    assert len(xs) <= 52


# --------------------------------------------------------------------------- shapes


def test_constant_arrivals_are_evenly_spaced() -> None:
    stage = shapes.Stage(rate=4.0, arrival=shapes.Arrival.CONSTANT)
    it = shapes.arrivals(stage, 0)
    assert [next(it) for _ in range(4)] == pytest.approx([0.0, 0.25, 0.5, 0.75])


@pytest.mark.parametrize(
    ("arrival", "burst"),
    [(shapes.Arrival.POISSON, 1.0), (shapes.Arrival.GAMMA, 0.5), (shapes.Arrival.GAMMA, 4.0)],
)
def test_random_arrivals_have_the_asked_mean_rate(arrival: shapes.Arrival, burst: float) -> None:
    stage = shapes.Stage(rate=10.0, arrival=arrival, burstiness=burst)
    it = shapes.arrivals(stage, 7)
    times = [next(it) for _ in range(20_001)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert statistics.fmean(gaps) == pytest.approx(0.1, rel=0.05)
    # burstiness < 1 spreads the gaps more than Poisson (cv 1), > 1 less
    cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
    assert cv == pytest.approx(1 / burst**0.5, rel=0.1)


def test_arrivals_are_reproducible_by_seed() -> None:
    stage = shapes.Stage(rate=3.0)
    a, b, c = shapes.arrivals(stage, 1), shapes.arrivals(stage, 1), shapes.arrivals(stage, 2)
    first = [next(a) for _ in range(5)]
    assert first == [next(b) for _ in range(5)]
    assert first != [next(c) for _ in range(5)]


def test_sequential_preset_is_the_guides_five_requests() -> None:
    shape = shapes.sequential()
    assert shape.stages == (shapes.Stage(concurrency=1),)
    assert shape.stop == shapes.Stop(requests=5)
    assert workload.builtin(guide=True).prompts[0].text == workload.GUIDE_PROMPT


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: shapes.parse_levels("1,x"), "whole numbers"),
        (lambda: shapes.parse_rates("2,inf"), "finite"),
        (lambda: shapes.parse_rates("a"), "requests per second"),
        (lambda: shapes.concurrency_sweep((0,), shapes.Stop(requests=1)), "at least 1"),
        (lambda: shapes.concurrency_sweep((1,), shapes.Stop()), "--duration S or --requests N"),
        (lambda: shapes.concurrency_sweep((1,), shapes.Stop(duration_s=-1)), "above 0"),
        (lambda: shapes.rate_sweep((0.0,), shapes.Stop(requests=1)), "above 0"),
        (lambda: shapes.rate_sweep((1.0,), shapes.Stop(requests=1), burstiness=0), "Poisson"),
        (
            lambda: shapes.rate_sweep((1.0,), shapes.Stop(requests=1), max_concurrency=0),
            "at least 1",
        ),
    ],
)
def test_bad_shapes_are_one_line_errors(call: Any, needle: str) -> None:
    with pytest.raises(BenchError) as info:
        call()
    assert needle in one_line(info.value)


def test_stage_labels_and_levels() -> None:
    assert shapes.Stage(concurrency=8).label == "concurrency 8"
    assert shapes.Stage(rate=2.5, max_concurrency=4).label == "rate 2.5/s cap 4"
    assert shapes.Stage(rate=2.5).level == 2.5
    sweep = shapes.rate_sweep((1.0, 2.0), shapes.Stop(duration_s=1))
    assert sweep.kind == "rate"
    assert sweep.name == "rate sweep"


# --------------------------------------------------------------------------- SLO


def test_slo_parses_units_and_checks_requests() -> None:
    s = slo.parse_slo("ttft=500ms, tpot=50ms,e2e=2s,itl=250us")
    assert dict(s.limits) == pytest.approx({"ttft": 0.5, "tpot": 0.05, "e2e": 2.0, "itl": 250e-6})
    assert s.met({"ttft": 0.4, "tpot": 0.01, "e2e": 1.0, "itl": 1e-4})
    assert not s.met({"ttft": 0.6, "tpot": 0.01, "e2e": 1.0, "itl": 1e-4})
    assert not s.met({"ttft": 0.4, "tpot": None, "e2e": 1.0, "itl": 1e-4})
    assert slo.from_json(s.to_json()) == s
    assert slo.from_json(None) is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("ttft=500", "needs a unit"),
        ("ttft=500ms,ttft=1s", "given twice"),
        ("latency=5ms", "unknown metric"),
        ("ttft<5ms", "cannot read"),
        ("", "cannot read"),
        ("ttft=5h", "needs a unit"),
    ],
)
def test_bad_slo_is_one_line(text: str, needle: str) -> None:
    with pytest.raises(BenchError) as info:
        slo.parse_slo(text)
    msg = one_line(info.value)
    assert needle in msg and "--slo ttft=500ms,tpot=50ms" in msg


@given(
    st.dictionaries(
        st.sampled_from(slo.METRICS), st.integers(1, 100_000).map(lambda n: n / 1000), min_size=1
    )
)
def test_slo_describe_parses_back(limits: dict[str, float]) -> None:
    s = slo.Slo(tuple(limits.items()))
    again = slo.parse_slo(s.describe())
    assert dict(again.limits) == pytest.approx(limits)


# --------------------------------------------------------------------------- workload


def test_output_lengths() -> None:
    rng = random.Random(0)
    assert workload.parse_output_length("128").draw(rng) == 128
    uni = workload.parse_output_length("64-256")
    draws = [uni.draw(rng) for _ in range(500)]
    assert min(draws) >= 64 and max(draws) <= 256 and len(set(draws)) > 50
    norm = workload.parse_output_length("128~32")
    assert statistics.fmean(norm.draw(rng) for _ in range(2000)) == pytest.approx(128, rel=0.05)
    assert norm.describe() == "128~32"
    for bad in ("0", "x", "256-64", "10-2.5", ""):
        with pytest.raises(BenchError) as info:
            workload.parse_output_length(bad)
        assert "--output-tokens" in one_line(info.value)


def test_jsonl_prompts_and_the_bad_line_is_named(tmp_path: Path) -> None:
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "a"}\n\n{"prompt": "b", "max_tokens": 7}\n')
    wl = workload.load_jsonl(str(good), workload.parse_output_length("32"))
    rng = random.Random(0)
    assert wl.pick(0, rng) == ("a", 32)
    assert wl.pick(1, rng) == ("b", 7)
    assert wl.pick(2, rng) == ("a", 32)
    cases = {
        '{"prompt": "a"}\n{"prompt": \n': ":2: not JSON",
        '{"prompt": "a"}\n\n[1]\n': ':3: no "prompt" string',
        '{"prompt": 5}\n': ':1: no "prompt" string',
        '{"prompt": "a", "max_tokens": 0}\n': ':1: "max_tokens" must be',
        '{"prompt": "a", "max_tokens": true}\n': ':1: "max_tokens" must be',
        "\n\n": "no prompts",
    }
    for text, needle in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(BenchError) as info:
            workload.load_jsonl(str(bad))
        assert needle in one_line(info.value), text
    with pytest.raises(BenchError) as info:
        workload.load_jsonl(str(tmp_path / "missing.jsonl"))
    assert "cannot be read" in one_line(info.value)


# --------------------------------------------------------------------------- wire


def test_request_bodies_ask_for_the_length_the_api_reads() -> None:
    native = json.loads(body(Api.GENERATE, "m", "hi", 12))
    assert native == {"model": "m", "stream": True, "prompt": "hi", "options": {"num_predict": 12}}
    chat = json.loads(body(Api.CHAT, "m", "hi", None))
    assert chat["messages"] == [{"role": "user", "content": "hi"}] and "options" not in chat
    oai = json.loads(body(Api.OPENAI, "m", "hi", 12))
    assert oai["max_tokens"] == 12 and oai["stream_options"] == {"include_usage": True}
    assert "max_completion_tokens" not in oai


def test_error_text_reads_ollama_errors() -> None:
    assert error_text(503, b'{"error":"server busy"}') == "503 server busy"
    assert error_text(404, b"404 page not found") == "404 404 page not found"
    assert error_text(500, b'{"error":{"message":"boom"}}') == "500 boom"


# --------------------------------------------------------------------------- the HTTP parser


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True


def chunked(parts: list[bytes], ext: bool = False) -> bytes:
    out = b""
    for p in parts:
        size = f"{len(p):x}".encode()
        out += size + (b";x=y" if ext else b"") + b"\r\n" + p + b"\r\n"
    return out + b"0\r\n\r\n"


def feed_response(
    ex: Exchange, raw: bytes, cuts: list[int]
) -> tuple[Connection, FakeTransport, list[Connection]]:
    idle: list[Connection] = []
    conn = Connection(idle.append)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.ex = ex
    conn.state = 0  # _HEAD
    last = 0
    for c in [*sorted(set(cuts)), len(raw)]:
        if c > last:
            conn.data_received(raw[last:c])
            last = c
    return conn, transport, idle


NDJSON = [
    b'{"model":"m","response":"a","done":false}\n',
    b'{"model":"m","response":" b","done":false}\n',
    b'{"model":"m","response":"","done":true,"done_reason":"length","prompt_eval_count":3,'
    b'"eval_count":2,"eval_duration":2000000,"load_duration":1000,"total_duration":9000000}\n',
]
HEAD_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@settings(max_examples=150)
@given(
    st.lists(st.integers(0, 800), max_size=12),
    st.booleans(),
    st.integers(1, 3),
)
def test_chunked_ndjson_split_anywhere_gives_the_same_stream(
    cuts: list[int], ext: bool, per_chunk: int
) -> None:
    lines = NDJSON
    # the server may put several lines in a chunk or split a line over chunks
    joined = b"".join(lines)
    parts = [joined[i : i + 37 * per_chunk] for i in range(0, len(joined), 37 * per_chunk)]
    raw = HEAD_CHUNKED + chunked(parts, ext)
    ex = NativeExchange()
    conn, transport, idle = feed_response(ex, raw, [c % (len(raw) + 1) for c in cuts])
    assert ex.failure() is None, ex.failure()
    assert len(ex.times) == 2
    assert (ex.eval_count, ex.prompt_tokens, ex.done_reason) == (2, 3, "length")
    assert ex.eval_s == pytest.approx(0.002) and ex.load_s == pytest.approx(1e-6)
    assert idle == [conn] and not transport.aborted  # keep-alive: back to the pool


def test_sse_stream_counts_tokens_and_reads_usage() -> None:
    events = [
        b'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":" b"},"finish_reason":null}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}]}\n\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}\n\n',
        b"data: [DONE]\n\n",
    ]
    raw = HEAD_CHUNKED + chunked(events)
    ex = OpenAIExchange()
    feed_response(ex, raw, list(range(0, len(raw), 5)))
    assert ex.failure() is None
    assert (len(ex.times), ex.eval_count, ex.prompt_tokens, ex.done_reason) == (2, 2, 4, "stop")
    # without [DONE] the stream is cut short: a failure, as Ollama's error path ends it
    ex2 = OpenAIExchange()
    feed_response(ex2, HEAD_CHUNKED + chunked(events[:2]), [])
    assert ex2.failure() == "the stream ended without its final chunk"


def test_error_line_inside_a_native_stream_is_the_failure() -> None:
    raw = HEAD_CHUNKED + chunked([NDJSON[0], b'{"error":"CUDA error: unknown error"}\n'])
    ex = NativeExchange()
    feed_response(ex, raw, [])
    assert ex.failure() == "CUDA error: unknown error"
    assert len(ex.times) == 1


def test_content_length_answer_and_connection_close() -> None:
    payload = b'{"error":"server busy, please try again.  maximum pending requests exceeded"}'
    raw = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: "
        + str(len(payload)).encode()
        + b"\r\n\r\n"
        + payload
    )
    ex = NativeExchange()
    _, transport, idle = feed_response(ex, raw, [10, 60])
    assert ex.status == 503
    assert ex.failure() == "503 server busy, please try again. maximum pending requests exceeded"
    assert idle == [] and transport.aborted


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n", "unsupported Content-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "no CRLF"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 101 Switching\r\n\r\n", "unsupported informational"),
    ],
)
def test_unsupported_answers_are_clear_failures(raw: bytes, needle: str) -> None:
    ex = NativeExchange()
    _, transport, _ = feed_response(ex, raw, [])
    assert ex.error is not None and needle in ex.error
    assert transport.aborted


def test_100_continue_then_a_body_read_until_close() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\n" + NDJSON[0] + NDJSON[2]
    ex = NativeExchange()
    conn, _, idle = feed_response(ex, raw, [5, 30])
    assert ex.end == 0.0  # not over until the server closes
    conn.connection_lost(None)  # the server closes: the body is complete
    assert ex.end > 0 and ex.failure() is None and len(ex.times) == 1 and idle == []


def test_urls() -> None:
    assert parse_url("127.0.0.1:11434").base == "http://127.0.0.1:11434"
    assert parse_url("https://h/ollama/").base == "https://h:443/ollama"
    for bad in ("ftp://h", "http://h:99999", "http://h/?q=1", "http://"):
        with pytest.raises(BenchError) as info:
            parse_url(bad)
        assert "--url" in one_line(info.value)


# --------------------------------------------------------------------------- records


def rec(
    *,
    stage: int = 0,
    i: int = 0,
    sent: float = 10.0,
    times: tuple[float, ...] = (10.1, 10.15, 10.2),
    outcome: Outcome = Outcome.OK,
    tokens: int | None = 3,
    load_s: float | None = 0.001,
    error: str = "",
) -> RequestRecord:
    return RequestRecord(
        stage=stage,
        index=i,
        ready=sent - 0.001,
        sent=sent,
        end=(times[-1] if times else sent) + 0.01,
        outcome=outcome,
        status=200 if outcome is Outcome.OK else 503,
        error=error,
        times=array("d", times),
        prompt_tokens=5,
        output_tokens=tokens,
        load_s=load_s,
        eval_s=0.1,
    )


def test_record_latencies() -> None:
    r = rec()
    assert r.ttft == pytest.approx(0.1)
    assert r.tpot == pytest.approx(0.05)
    assert r.gaps() == pytest.approx([0.05, 0.05])
    assert r.e2e == pytest.approx(0.21)
    assert r.slip == pytest.approx(0.001)
    assert r.decode_rate == pytest.approx(30.0)
    assert not r.waited_for_load
    assert rec(load_s=1.5).waited_for_load
    # the server's count wins over chunks: 2 chunks holding 5 tokens
    assert rec(times=(1.0, 1.4), tokens=5, sent=0.9).tpot == pytest.approx(0.1)
    assert rec(times=(), tokens=0).ttft is None and rec(times=(1.0,), sent=0.5).tpot is None


def test_csv_has_one_row_per_request() -> None:
    text = records.csv_text([rec(i=0), rec(i=1, outcome=Outcome.BUSY, error="503 busy")], 10.0)
    rows = text.splitlines()
    assert rows[0].split(",") == list(records.CSV_FIELDS)
    assert len(rows) == 3
    assert rows[1].split(",")[5] == "100.000"  # ttft_ms
    assert rows[2].endswith("503 busy")


# --------------------------------------------------------------------------- summary/report


def fake_result(stages: list[list[RequestRecord]], partial: bool = False) -> Result:
    shape = shapes.concurrency_sweep(
        tuple(range(1, len(stages) + 1)), shapes.Stop(duration_s=1.0), warmup=1
    )
    return Result(
        target=Target("http://127.0.0.1:1", "a-model-with-a-rather-long-name:latest", Api.OPENAI),
        shape=shape,
        workload=workload.builtin(),
        started_at="2026-01-01T00:00:00+00:00",
        t0=0.0,
        warmup=(rec(stage=-1, load_s=1.2),),
        stages=tuple(
            StageResult(
                index=k,
                stage=shape.stages[k],
                records=tuple(rs),
                started=9.0,
                ended=11.0,
                cpu_s=1.95,
                loop_lag=(0.001, 0.02, 0.03),
            )
            for k, rs in enumerate(stages)
        ),
        partial=partial,
        note="interrupted after 3.0 s; results so far" if partial else "",
        model_loaded_before=False,
    )


def test_summary_figures_goodput_and_client_bound() -> None:
    ok = [rec(i=i) for i in range(8)]
    slow = [rec(i=8, times=(10.9, 11.0, 11.1))]
    busy = [rec(i=9, outcome=Outcome.BUSY, times=(), error="503 server busy")]
    loading = [rec(i=10, load_s=2.0)]
    res = fake_result([ok + slow + busy + loading])
    s = summary.summarize(res, slo.parse_slo("ttft=500ms")).stages[0]
    assert (s.requests, s.ok, s.busy, s.errors) == (11, 10, 1, 0)
    assert s.req_per_s == pytest.approx(10 / 2.0)
    assert s.output_tokens_per_s == pytest.approx(30 / 2.0)
    assert s.load_waits == 1 and s.load_max_s == 2.0
    assert s.ttft is not None and s.ttft.n == 9  # the load wait is left out
    assert s.slo_met == 9  # the slow one misses, the loading one meets it
    assert s.goodput_req_per_s == pytest.approx(9 / 2.0)
    assert s.top_error == "503 server busy"
    assert s.client.bound and "lag" in s.client.why and "CPU" in s.client.why
    doc = summary.to_json(summary.summarize(res))
    assert json.loads(json.dumps(doc))["stages"][0]["client"]["client_bound"] is True


def test_report_fits_100_columns_and_says_partial_and_loads() -> None:
    res = fake_result(
        [[rec(i=i) for i in range(3)], [rec(i=5, load_s=3.0), rec(i=6)]], partial=True
    )
    text = report.render(summary.summarize(res, slo.parse_slo("ttft=500ms,tpot=50ms")))
    lines = text.splitlines()
    assert max(len(x) for x in lines) <= 100
    assert lines[0].startswith("ollama-ops bench: a-model")
    joined = " ".join(x.strip() for x in lines)
    assert "PARTIAL: interrupted" in joined
    assert "was not loaded before the run; the warm-up loaded it (load_duration 1.20 s)" in joined
    assert "1 request(s) of concurrency 2 waited for a load" in joined
    assert "CLIENT-BOUND" in joined
    assert "SLO ttft=500ms,tpot=50ms" in joined


def test_progress_line() -> None:
    snap = Snapshot("concurrency 64", 2, 3, 12.04, 30.0, None, 311, 64, 1, 2, 5000, 2519.4)
    assert progress_line(snap) == (
        "[2/3] concurrency 64  12.0/30 s  done 311  in flight 64  2,519 tok/s  failed 1  503 2"
    )


# --------------------------------------------------------------------------- compare


def doc_with(**stage: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "label": "concurrency 4",
        "level": 4.0,
        "requests": 100,
        "errors": 0,
        "busy_503": 0,
        "request_throughput_per_s": 10.0,
        "output_tokens_per_s": 1000.0,
        "goodput_per_s": None,
        "ttft_s": {"median": 0.1, "p99": 0.2},
        "tpot_s": {"median": 0.02, "p99": 0.03},
        "itl_s": {"p99": 0.04},
        "e2e_s": {"median": 2.0, "p99": 3.0},
        "slo_met": None,
        "slo_share": None,
        "client": {"client_bound": False},
    }
    base.update(stage)
    return {
        "format": "ollama-ops-bench",
        "version": summary.FORMAT_VERSION,
        "partial": False,
        "stages": [base],
    }


def test_compare_flags_regressions_beyond_the_threshold() -> None:
    a = doc_with()
    b = doc_with(output_tokens_per_s=940.0, ttft_s={"median": 0.104, "p99": 0.3})
    cmp = compare.compare(a, b, threshold=5.0)
    bad = {c.figure for c in cmp.regressions}
    assert bad == {"output tok/s", "TTFT p99"}  # -6 % and +50 %; TTFT median +4 % is within
    assert cmp.failed
    assert not compare.compare(a, b, threshold=None).failed
    assert not compare.compare(a, a, threshold=0.0).failed
    text = compare.render(cmp, "A.json", "B.json", 5.0)
    assert "2 regression(s) beyond 5 %" in text and "REGRESSION" in text
    assert max(len(x) for x in text.splitlines()) <= 100


def test_compare_failures_from_zero_and_slo_breach() -> None:
    a = doc_with()
    b = doc_with(errors=3, slo_met=90, slo_share=0.9)
    cmp = compare.compare(a, b, threshold=50.0, slo=slo.parse_slo("ttft=1s"))
    assert [c.figure for c in cmp.regressions] == ["failed share"]
    assert cmp.breaches and "90.0 % of B's requests met ttft=1s" in cmp.breaches[0]
    no_slo = compare.compare(a, doc_with(), slo=slo.parse_slo("ttft=1s"))
    assert "rerun B with --slo" in no_slo.breaches[0]


def test_compare_notes_partial_and_client_bound_and_unmatched() -> None:
    a = doc_with()
    b = doc_with(
        level=8.0,
        label="concurrency 8",
        client={"client_bound": True, "client_bound_why": "CPU 99 %"},
    )
    b["partial"] = True
    cmp = compare.compare(a, b, threshold=1.0)
    assert cmp.unmatched == ("concurrency 8",)
    assert any("B is partial" in n for n in cmp.notes)
    assert any("client-bound" in n and "CPU 99 %" in n for n in cmp.notes)


def test_compare_refuses_files_that_are_not_results(tmp_path: Path) -> None:
    cases = {
        "x.json": ("{", "is not JSON"),
        "y.json": ('{"a": 1}', "is not a bench result"),
        "z.json": ('{"format": "ollama-ops-bench", "version": 99, "stages": []}', "version 99"),
    }
    for name, (text, needle) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(BenchError) as info:
            compare.load(str(tmp_path / name))
        assert needle in one_line(info.value)
    with pytest.raises(BenchError) as info:
        compare.load(str(tmp_path / "none.json"))
    assert "cannot be read" in one_line(info.value)
    for bad in ("x%", "-5"):
        with pytest.raises(BenchError):
            compare.parse_threshold(bad)
    assert compare.parse_threshold("5%") == 5.0


class Lines(Exchange):
    __slots__ = ("got",)

    def __init__(self) -> None:
        super().__init__()
        self.got: list[bytes] = []

    def on_line(self, line: bytes, now: float) -> None:
        self.got.append(line)


@given(
    st.lists(
        st.sampled_from([b"data: {}", b"x", b"", b"\r", b'{"done":false}', b"data: [DONE]"]),
        max_size=12,
    ),
    st.lists(st.integers(0, 200), max_size=8),
)
def test_line_splitting_skips_blank_lines_wherever_the_pieces_end(
    lines: list[bytes], cuts: list[int]
) -> None:
    text = b"".join(x + b"\n" for x in lines)
    ex = Lines()
    last = 0
    for c in [*sorted({c % (len(text) + 1) for c in cuts}), len(text)]:
        if c > last:
            ex.feed(text[last:c], 0.0)
            last = c
    expected = [x for x in lines if x.strip()]
    assert [g.strip() for g in ex.got] == expected
    assert all(g.strip() for g in ex.got)
