"""Every injectable fault, switched at start (flag/env) and at run time
(control API, signals). No test asserts a duration: a client timeout only
stands for "no answer"."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ollama_ops.sim.faults import (
    GPU_LOST_STREAM_ERROR,
    RUNNER_OOM_ERROR,
    FaultError,
    FaultState,
    parse_fault,
    parse_fault_list,
)
from tests.sim_helpers import (
    SimThread,
    free_port,
    ndjson,
    runner_state,
    sim_process,
    wait_listening,
    wait_until,
)
from tests.test_sim_sched import SLOW, Stream


@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread() as s:
        yield s


def test_fault_specs() -> None:
    assert parse_fault("crash") == ("crash", 0.0)
    assert parse_fault("crash:5") == ("crash", 5.0)
    assert parse_fault(" Slow-Load:2.5 ") == ("slow-load", 2.5)
    assert parse_fault("gpu-lost") == ("gpu-lost", None)
    assert parse_fault_list("hang, memory-grow:10,") == [("hang", None), ("memory-grow", 10.0)]
    for bad in ("nope", "hang:3", "crash:x", "crash:-1"):
        with pytest.raises(FaultError):
            parse_fault(bad)
    state = FaultState()
    with pytest.raises(FaultError):
        state.apply(["gpu-lost", "bogus"], [])
    assert state.snapshot() == {}  # nothing applied when one spec is bad


def test_control_api(sim: SimThread) -> None:
    with httpx.Client(base_url=sim.url, timeout=10) as c:
        r = c.get("/_sim/faults")
        assert r.json()["faults"] == {}
        assert "gpu-lost" in r.json()["known"]
        r = c.post("/_sim/faults", json={"set": ["slow-load:7"]})
        assert r.json() == {"faults": {"slow-load": 7.0}}
        r = c.post("/_sim/faults", json={"set": ["bogus"]})
        assert r.status_code == 400
        assert "unknown fault" in r.json()["error"]
        r = c.post("/_sim/faults", json={"clear": ["*"]})
        assert r.json() == {"faults": {}}
        assert c.get("/_sim/stats").json()["tokens"] >= 0


def test_first_tokens_are_logged_for_a_client_on_the_same_clock(sim: SimThread) -> None:
    with httpx.Client(base_url=sim.url, timeout=30) as c:
        c.post("/_sim/stats/reset")
        sent = time.monotonic()
        body = {"model": "tiny", "prompt": "name me", "options": {"num_predict": 3}}
        with c.stream("POST", "/api/generate", json=body) as r:
            first = None
            for _ in r.iter_lines():
                first = first or time.monotonic()
        c.post("/api/generate", json={**body, "prompt": "not streamed", "stream": False})
        (rec,) = c.get("/_sim/first-tokens").json()["first_tokens"]  # streamed ones only
        stats = c.get("/_sim/stats").json()
    assert rec["prompt"] == "name me"
    assert first is not None and sent <= rec["received"] <= rec["due"] <= rec["written"] <= first
    err = stats["first_token_error_us"]
    # A subset of every token's errors: never past their maximum.
    assert 0 <= err["p50"] <= err["max"] <= stats["timing_error_us"]["max"]


def test_control_api_off_by_default() -> None:
    with SimThread(control=False) as sim:
        r = httpx.get(sim.url + "/_sim/faults", timeout=10)
        assert r.status_code == 404
        assert r.text == "404 page not found"


def test_generate_hang(sim: SimThread) -> None:
    sim.faults(["generate-hang"])
    before = sim.state()
    stream = Stream(sim.url, {"model": "tiny", "prompt": "x"})
    wait_until(
        lambda: httpx.get(sim.url + "/_sim/stats", timeout=10).json()["requests"] >= 1,
        what="the request to arrive",
    )
    assert httpx.get(sim.url + "/", timeout=10).text == "Ollama is running"
    assert httpx.get(sim.url + "/api/tags", timeout=10).status_code == 200
    assert stream.text == b""  # not even a status line
    assert before["runners"] == []
    sim.faults(clear=["generate-hang"])
    stream.finished.wait(30)
    assert stream.status == 200
    assert stream.text.count(b'"done":false') == 8


def test_generate_hang_freezes_running_streams(sim: SimThread) -> None:
    stream = Stream(sim.url, SLOW)
    stream.got_first.wait(30)
    sim.faults(["generate-hang"])
    frozen = len(stream.text)
    time.sleep(0.3)  # at 50 tokens/s a running stream would have moved on
    assert len(stream.text) == frozen
    sim.faults(clear=["generate-hang"])
    wait_until(lambda: len(stream.text) > frozen, what="the stream to resume")
    stream.close()


def _ps(sim: SimThread) -> dict[str, dict[str, object]]:
    models = httpx.get(sim.url + "/api/ps", timeout=10).json()["models"]
    return {m["name"]: m for m in models}


def test_gpu_lost_mid_stream_then_loads_fall_back_to_cpu(sim: SimThread) -> None:
    stream = Stream(sim.url, SLOW)
    stream.got_first.wait(30)
    sim.faults(["gpu-lost"])
    stream.finished.wait(30)
    assert stream.status == 200  # the head was sent: the error is a body line
    body = stream.text.split(b"\r\n\r\n", 1)[1]
    lines = [ln for ln in body.split(b"\r\n") if ln.startswith(b"{")]
    assert json.loads(lines[-1]) == {"error": GPU_LOST_STREAM_ERROR}
    assert runner_state(sim, "slow:1b") is None  # the runner died
    logs = sim.logs()
    assert "CUDA error: unknown error\n" in logs  # the runner's own stderr
    assert 'level=ERROR source=server.go:1397 msg="llama runner terminated"' in logs
    with httpx.Client(base_url=sim.url, timeout=30) as c:
        r = c.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
        assert r.status_code == 200  # the model loads, on the CPU
        tiny = _ps(sim)["tiny:latest"]
        assert tiny["size_vram"] == 0
        assert isinstance(tiny["size"], int) and tiny["size"] > 0
        assert 'msg="offload to cpu" layers.requested=-1 layers.model=17 layers.offload=0' in (
            sim.logs()
        )
        assert 'error="cudart init failure: 999"' in sim.logs()
        assert c.get("/").status_code == 200
        sim.faults(clear=["gpu-lost"])
        r = c.post("/api/generate", json={"model": "other:1b", "prompt": "x", "stream": False})
        assert r.status_code == 200
        other = _ps(sim)["other:1b"]
        assert other["size_vram"] == other["size"]  # the GPU is back for new loads
        assert _ps(sim)["tiny:latest"]["size_vram"] == 0  # until the model reloads


def test_cpu_fallback_puts_part_of_each_model_on_the_cpu(sim: SimThread) -> None:
    sim.faults(["cpu-fallback:0.25"])
    r = httpx.post(
        sim.url + "/api/generate", json={"model": "tiny", "prompt": "x", "stream": False}
    )
    assert r.status_code == 200
    tiny = _ps(sim)["tiny:latest"]
    size, vram = tiny["size"], tiny["size_vram"]
    assert isinstance(size, int) and isinstance(vram, int)
    assert vram == int(size * 0.75)
    state = runner_state(sim, "tiny:latest")
    assert state is not None
    assert state["per_stream_tps"] < 2000 / 2  # a quarter on a 10x slower CPU: 3.25x slower
    assert "layers.model=17 layers.offload=13" in sim.logs()


def test_stuck_unload_keeps_the_model_listed_as_expired(sim: SimThread) -> None:
    httpx.post(sim.url + "/api/generate", json={"model": "tiny", "prompt": ""}, timeout=30)
    sim.faults(["stuck-unload"])
    wait_until(
        lambda: (runner_state(sim, "tiny:latest") or {}).get("state") == "stopping",
        what="the unload to get stuck",
    )
    row = _ps(sim)["tiny:latest"]
    expires = datetime.datetime.fromisoformat(str(row["expires_at"]))
    assert expires < datetime.datetime.now(expires.tzinfo)  # "Stopping..."
    # "ollama stop" (keep_alive 0) does nothing; a request for the model waits.
    httpx.post(
        sim.url + "/api/generate",
        json={"model": "tiny", "prompt": "", "keep_alive": 0},
        timeout=30,
    )
    assert "tiny:latest" in _ps(sim)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(sim.url + "/api/generate", json={"model": "tiny", "prompt": "x"}, timeout=1)
    assert httpx.get(sim.url + "/", timeout=10).status_code == 200
    sim.faults(clear=["stuck-unload"])
    wait_until(lambda: "tiny:latest" not in _ps(sim), what="the unload to finish")


def test_runner_oom_expires_loaded_models(sim: SimThread) -> None:
    httpx.post(sim.url + "/api/generate", json={"model": "tiny", "prompt": ""}, timeout=30)
    stream = Stream(sim.url, SLOW)
    stream.got_first.wait(30)
    sim.faults(["runner-oom"])
    stream.finished.wait(30)
    body = stream.text.split(b"\r\n\r\n", 1)[1]
    lines = [ln for ln in body.split(b"\r\n") if ln.startswith(b"{")]
    assert json.loads(lines[-1]) == {"error": RUNNER_OOM_ERROR}
    assert _ps(sim) == {}
    logs = sim.logs()
    assert "CUDA error: out of memory\n" in logs
    assert (
        'level=WARN source=sched.go:417 msg="runtime OOM detected; expiring loaded models"' in logs
    )
    assert sim.faults()["faults"] == {}  # one-shot
    # With nothing loaded, the next load dies instead.
    sim.faults(["runner-oom"])
    r = httpx.post(sim.url + "/api/generate", json={"model": "tiny", "prompt": "x"}, timeout=30)
    assert r.status_code == 500
    assert r.json() == {"error": RUNNER_OOM_ERROR}
    r = httpx.post(
        sim.url + "/api/generate", json={"model": "tiny", "prompt": "x", "stream": False}
    )
    assert r.status_code == 200  # the next request reloads the model


def test_slow_load_reports_load_duration(sim: SimThread) -> None:
    sim.faults(["slow-load:3600"])
    stream = Stream(sim.url, {"model": "tiny", "prompt": "x"})
    wait_until(
        lambda: (runner_state(sim, "tiny:latest") or {}).get("state") == "loading",
        what="the load",
    )
    ps = httpx.get(sim.url + "/api/ps", timeout=10).json()["models"]
    assert [m["name"] for m in ps] == ["tiny:latest"]  # a loading model is listed
    assert stream.text == b""
    sim.faults(clear=["slow-load"])
    stream.finished.wait(30)
    body = stream.text.split(b"\r\n\r\n", 1)[1]
    final = [json.loads(ln) for ln in body.split(b"\r\n") if ln.startswith(b"{")][-1]
    assert final["done"] is True
    assert final["load_duration"] > 0
    assert final["load_duration"] <= final["total_duration"]


def test_load_aborted_when_its_client_leaves(sim: SimThread) -> None:
    sim.faults(["slow-load:3600"])
    stream = Stream(sim.url, {"model": "tiny", "prompt": "x"})
    wait_until(lambda: runner_state(sim, "tiny:latest") is not None, what="the load")
    stream.close()
    wait_until(lambda: runner_state(sim, "tiny:latest") is None, what="the load to be abandoned")
    logs = sim.logs()
    assert (
        'level=WARN source=server.go:1290 msg="client connection closed before server finished '
        'loading, aborting load"' in logs
    )
    assert 'error="timed out waiting for llama runner to start: context canceled"' in logs


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_grow(sim: SimThread) -> None:
    base = _rss()
    sim.faults(["memory-grow:400"])
    wait_until(lambda: _rss() > base + 150 * 2**20, what="resident memory to grow")
    sim.faults(clear=["memory-grow"])
    wait_until(lambda: _rss() < base + 100 * 2**20, what="the memory to be released")


def test_signals_hang_and_recover(tmp_path: Path) -> None:
    port = free_port()
    with sim_process(str(tmp_path), port) as proc:
        wait_listening(port, proc)
        proc.send_signal(signal.SIGUSR1)  # default OLLAMA_SIM_SIGUSR1_FAULTS=hang
        wait_until(lambda: _unanswered(port), what="the process to stop answering")
        assert proc.poll() is None  # alive, just not answering
        proc.send_signal(signal.SIGUSR2)
        wait_listening(port, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_hang_at_start_still_obeys_sigterm(tmp_path: Path) -> None:
    port = free_port()
    with sim_process(str(tmp_path), port, ["--fault", "hang"]) as proc:
        assert proc.stderr is not None
        wait_until(lambda: proc.poll() is None and _listening(port), what="the socket")
        wait_until(lambda: _unanswered(port), what="the hang")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _unanswered(port: int) -> bool:
    """True when / does not answer within half a second (the process hangs)."""
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
        return False
    except httpx.TimeoutException:
        return True


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_crash_at_start(tmp_path: Path) -> None:
    port = free_port()
    with sim_process(str(tmp_path), port, OLLAMA_SIM_FAULTS="crash") as proc:
        assert proc.wait(30) == 2
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert "panic: runtime error" in err
        assert "goroutine 1 [running]" in err


def test_crash_at_run_time(tmp_path: Path) -> None:
    port = free_port()
    with sim_process(str(tmp_path), port, ["--control"]) as proc:
        wait_listening(port, proc)
        httpx.post(f"http://127.0.0.1:{port}/_sim/faults", json={"set": ["crash:0.1"]}, timeout=10)
        assert proc.wait(30) == 2


def test_slow_start_then_serves(tmp_path: Path) -> None:
    port = free_port()
    with sim_process(str(tmp_path), port, ["--fault", "slow-start:0.5"]) as proc:
        wait_listening(port, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        assert "Listening on 127.0.0.1:" in proc.stderr.read()


def test_gpu_lost_from_env_at_start(tmp_path: Path) -> None:
    port = free_port()
    with sim_process(str(tmp_path), port, OLLAMA_SIM_FAULTS="gpu-lost") as proc:
        wait_listening(port, proc)
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/generate",
            json={"model": "qwen2.5:0.5b", "prompt": "hi"},
            timeout=30,
        )
        assert r.status_code == 200
        assert ndjson(r.text)[-1]["done"] is True
        ps = httpx.get(f"http://127.0.0.1:{port}/api/ps", timeout=10).json()["models"]
        assert [(m["name"], m["size_vram"]) for m in ps] == [("qwen2.5:0.5b", 0)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert 'msg="no compatible GPUs were discovered"' in err
    assert re.search(r'msg="inference compute" id=0 library=cpu variant="" compute="" ', err)
    assert "library=cuda" not in err


def test_sigterm_is_ignored_while_an_unload_is_stuck(tmp_path: Path) -> None:
    port = free_port()
    with sim_process(str(tmp_path), port, ["--control"]) as proc:
        wait_listening(port, proc)
        url = f"http://127.0.0.1:{port}"
        httpx.post(url + "/api/generate", json={"model": "qwen2.5:0.5b", "prompt": ""}, timeout=30)
        httpx.post(url + "/_sim/faults", json={"set": ["stuck-unload"]}, timeout=10)
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1)  # still running: only SIGKILL ends it
        assert httpx.get(url + "/", timeout=10).status_code == 200
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
