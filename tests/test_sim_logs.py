"""The simulator's journal lines are Ollama's (issue 11): gin's access line, Go's slog
records and durations, and the messages a log reader looks for."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ollama_ops.sim.envconfig import format_go_duration
from ollama_ops.sim.logs import Logger, gin_line, go_float, go_quote, slog_time, slog_value
from tests.sim_helpers import SimThread, free_port, sim_process, wait_listening, wait_until

SLOG = re.compile(
    r"time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d) "
    r"level=(DEBUG|INFO|WARN|ERROR) source=[a-z_]+\.go:\d+ msg=(\S+|\"[^\"]*\")( .*)?"
)
GIN = re.compile(
    r"\[GIN\] \d{4}/\d\d/\d\d - \d\d:\d\d:\d\d \| [ \d]{3} \| [ 0-9.a-zµ]{13} \| [ 0-9.:a-f]{15}"
    r" \| [A-Z ]{7}  \"[^\"]*\""
)


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# ----------------------------------------------------------------- formats


def test_gin_lines_match_real_ollama_lines(utc: None) -> None:
    """Lines copied from Ollama issue threads (#9245, #8426), rebuilt from their fields."""
    del utc
    stamp = time.mktime((2025, 2, 21, 13, 33, 7, 0, 0, -1))
    assert gin_line(
        stamp, 200, 794.342e-6, client="192.168.30.134", method="GET", path="/api/tags"
    ) == (
        '[GIN] 2025/02/21 - 13:33:07 | 200 |     794.342µs |  192.168.30.134 | GET      "/api/tags"\n'
    )
    stamp = time.mktime((2025, 2, 27, 15, 22, 36, 0, 0, -1))
    assert gin_line(
        stamp, 200, 29.526492083, client="127.0.0.1", method="POST", path="/api/chat"
    ) == (
        '[GIN] 2025/02/27 - 15:22:36 | 200 | 29.526492083s |       127.0.0.1 | POST     "/api/chat"\n'
    )
    assert gin_line(stamp, 404, 0.0, client="::1", method="DELETE", path='/a"b') == (
        '[GIN] 2025/02/27 - 15:22:36 | 404 |            0s |             ::1 | DELETE   "/a\\"b"\n'
    )  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (250e-9, "250ns"),
        (794.342e-6, "794.342µs"),
        (0.123456789, "123.456789ms"),
        (1.0, "1s"),
        (5.05, "5.05s"),
        (300, "5m0s"),
        (3600, "1h0m0s"),
        (3723.5, "1h2m3.5s"),
        (float("inf"), "2562047h47m16.854775807s"),
    ],
)
def test_go_durations(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


def test_slog_values_quote_as_go_does() -> None:
    assert slog_value("plain") == "plain"
    assert slog_value("two words") == '"two words"'
    assert slog_value("") == '""'
    assert slog_value("a=b") == '"a=b"'
    assert slog_value("C:\\dir") == "C:\\dir"  # a backslash alone is not quoted
    assert slog_value("tab\there") == '"tab\\there"'
    assert slog_value("née") == "née"
    assert slog_value("\u00a0") == '"\\u00a0"'
    assert slog_value(True) == "true"
    assert go_quote('say "hi"\n') == '"say \\"hi\\"\\n"'
    assert [go_float(x) for x in (0.5, 100.0, 1e6, 1234567.0, 1e-5, -2.25)] == [
        "0.5",
        "100",
        "1e+06",
        "1.234567e+06",
        "1e-05",
        "-2.25",
    ]


def test_slog_time_is_rfc3339_millis_with_z_for_utc(utc: None) -> None:
    del utc
    assert slog_time(1735830245.5) == "2025-01-02T15:04:05.500Z"


def test_slog_record_shape() -> None:
    buf = io.StringIO()
    log = Logger(buf, io.StringIO())
    log.info("Listening on 127.0.0.1:11434 (version 0.33.0-sim)", src="routes.go:1369")
    log.warn("x", src="a.go:1", count=3, name="two words")
    lines = buf.getvalue().splitlines()
    assert all(SLOG.fullmatch(line) for line in lines), lines
    assert lines[0].endswith(
        'level=INFO source=routes.go:1369 msg="Listening on 127.0.0.1:11434 (version 0.33.0-sim)"'
    )
    assert lines[1].endswith('level=WARN source=a.go:1 msg=x count=3 name="two words"')


# ----------------------------------------------------------------- a running server


def test_start_up_lines_and_one_gin_line_per_request(tmp_path: Path) -> None:
    port = free_port()
    with sim_process(str(tmp_path), port) as proc:
        wait_listening(port, proc)
        url = f"http://127.0.0.1:{port}"
        httpx.head(url + "/", timeout=10)
        httpx.post(url + "/api/generate", json={"model": "qwen2.5:0.5b", "prompt": ""}, timeout=30)
        httpx.get(url + "/api/nothing?x=1", timeout=10)
        proc.terminate()
        proc.wait(30)
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
    records = [ln for ln in err.splitlines() if ln.startswith("time=")]
    assert all(SLOG.fullmatch(ln) for ln in records), [
        ln for ln in records if not SLOG.fullmatch(ln)
    ]
    config = next(ln for ln in records if 'msg="server config"' in ln)
    assert "OLLAMA_KEEP_ALIVE:5m0s" in config
    assert "OLLAMA_LOAD_TIMEOUT:5m0s" in config
    assert f"OLLAMA_HOST:http://127.0.0.1:{port}" in config
    assert re.search(r'env="map\[CUDA_VISIBLE_DEVICES: GPU_DEVICE_ORDINAL: ', config)
    assert f'msg="Listening on 127.0.0.1:{port} (version 0.33.0-sim)"' in err
    assert re.search(
        r'msg="inference compute" id=GPU-\S+ library=cuda variant=v12 compute=8\.9 '
        r'driver=12\.8 name="Simulated GPU 24GB" total="24\.0 GiB" available="23\.5 GiB"',
        err,
    )
    assert 'msg="waiting for llama runner to start responding"' in err
    assert re.search(r'msg="llama runner started in \d+\.\d\d seconds"', err)
    gin = [ln for ln in out.splitlines() if ln.startswith("[GIN]")]
    assert len(gin) >= 3
    assert all(GIN.fullmatch(ln) for ln in gin), gin
    assert any(ln.endswith('| HEAD     "/"') and "| 200 |" in ln for ln in gin)
    assert any(ln.endswith('| POST     "/api/generate"') and "| 200 |" in ln for ln in gin)
    assert any(ln.endswith('| GET      "/api/nothing?x=1"') and "| 404 |" in ln for ln in gin)


def test_llama_server_wording(tmp_path: Path) -> None:
    port = free_port()
    with sim_process(str(tmp_path), port, OLLAMA_SIM_RUNNER_WORDING="llama-server") as proc:
        wait_listening(port, proc)
        httpx.post(
            f"http://127.0.0.1:{port}/api/generate",
            json={"model": "qwen2.5:0.5b", "prompt": ""},
            timeout=30,
        )
        proc.terminate()
        proc.wait(30)
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert 'msg="waiting for llama-server to start responding"' in err
    assert re.search(r'msg="llama-server started in \d+\.\d\d seconds"', err)
    assert not re.search(r"\bllama runner", err)  # ("ollama runner" is the command)


def test_load_past_the_load_timeout() -> None:
    with SimThread(env={"OLLAMA_LOAD_TIMEOUT": "1s"}, faults=[("slow-load", 3600.0)]) as sim:
        r = httpx.post(sim.url + "/api/generate", json={"model": "tiny", "prompt": "x"}, timeout=60)
        assert r.status_code == 500
        error = "timed out waiting for llama runner to start - progress 0.00 - "
        assert r.json() == {"error": error}
        wait_until(lambda: "error loading llama server" in sim.logs(), what="the log line")
        assert (
            'level=ERROR source=sched.go:459 msg="error loading llama server" '
            f'error="{error}"' in sim.logs()
        )
