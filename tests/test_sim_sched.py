"""Scheduling as Ollama does it: slots, the pending queue, eviction, keep-alive,
and slots freed by clients that go away. No test asserts a duration."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from itertools import pairwise
from typing import Any

import httpx
import pytest

from ollama_ops.sim.engine import MAX_QUEUE_ERROR
from ollama_ops.sim.profile import profile_from_dict
from tests.sim_helpers import TEST_PROFILE, SimThread, runner_state, wait_until

SLOW = {"model": "slow:1b", "prompt": "go"}


class Stream:
    """A raw HTTP/1.1 streaming request read in a thread; ``close()`` hangs up."""

    def __init__(self, url: str, body: dict[str, Any], path: str = "/api/generate") -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + payload)
        self.status: int | None = None
        self.text = b""
        self.got_first = threading.Event()
        self.finished = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    @property
    def first(self) -> bytes | None:
        return self.text if self.got_first.is_set() else None

    def _run(self) -> None:
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.text += data
                if self.status is None and b"\r\n" in self.text:
                    self.status = int(self.text.split(b" ", 2)[1])
                if b'"done":false' in self.text:
                    self.got_first.set()
        except OSError:
            pass
        finally:
            self.got_first.set()
            self.finished.set()

    def close(self) -> None:
        """Disconnect (the client goes away, mid-stream or while waiting)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.finished.wait(10)


def test_throughput_rises_then_saturates() -> None:
    m = profile_from_dict(
        {
            "models": [
                {
                    "name": "m",
                    "size": 1,
                    "family": "f",
                    "parameter_size": "1B",
                    "quantization_level": "Q4_0",
                    "decode_tps": 100,
                    "scaling_alpha": 0.8,
                    "saturation": 8,
                    "decline": 0.05,
                }
            ]
        }
    ).models["m"]
    agg = [m.aggregate_tps(n) for n in range(1, 17)]
    assert agg[0] == pytest.approx(100)
    assert all(b > a for a, b in pairwise(agg[:8]))  # rises to 8
    assert max(agg) == agg[7]  # the optimum is the saturation count
    assert all(b < a for a, b in pairwise(agg[7:]))  # then declines
    per = [m.per_stream_tps(n) for n in range(1, 17)]
    assert all(b < a for a, b in pairwise(per))  # latency only grows


def test_memory_grows_with_parallel_and_context() -> None:
    m = profile_from_dict(TEST_PROFILE).models["tiny:latest"]
    assert m.memory(4096, 1) >= m.vram
    p = profile_from_dict(
        {
            "models": [
                {
                    "name": "m",
                    "size": 10,
                    "vram": 100,
                    "family": "f",
                    "parameter_size": "1B",
                    "quantization_level": "Q4_0",
                    "kv_bytes_per_token": 2,
                }
            ]
        }
    ).models["m"]
    assert p.memory(4096, 1) == 100
    assert p.memory(4096, 4) == 100 + 2 * 4096 * 3
    assert p.memory(8192, 1) > p.memory(4096, 1)


def test_parallel_slots_and_slot_waiters() -> None:
    with SimThread(env={"OLLAMA_NUM_PARALLEL": "2"}) as sim:
        streams = [Stream(sim.url, SLOW) for _ in range(3)]
        wait_until(
            lambda: (runner_state(sim, "slow:1b") or {}).get("slot_waiters") == 1,
            what="two running and one waiting",
        )
        r = runner_state(sim, "slow:1b")
        assert r is not None
        assert r["free_slots"] == 0
        assert r["decoding"] == 2
        for s in streams:
            s.close()
        wait_until(
            lambda: (runner_state(sim, "slow:1b") or {}).get("free_slots") == 2,
            what="all slots free",
        )


def test_queue_full_strict_three_concurrent() -> None:
    env = {"OLLAMA_NUM_PARALLEL": "1", "OLLAMA_MAX_QUEUE": "1"}
    with SimThread(env=env, queue_mode="strict") as sim:
        httpx.post(sim.url + "/api/generate", json={"model": "slow:1b", "prompt": ""}, timeout=30)

        async def three() -> list[tuple[int, str]]:
            async with httpx.AsyncClient(base_url=sim.url, timeout=30) as c:

                async def one() -> tuple[int, str]:
                    async with c.stream("POST", "/api/generate", json=SLOW) as r:
                        if r.status_code != 200:
                            return r.status_code, (await r.aread()).decode()
                        async for _ in r.aiter_bytes():
                            break
                        return r.status_code, ""

                tasks = [asyncio.ensure_future(one()) for _ in range(3)]
                done: list[tuple[int, str]] = []
                for t in asyncio.as_completed(tasks):
                    res = await t
                    done.append(res)
                    if res[0] == 503:
                        break
                for t in tasks:
                    t.cancel()
                return done

        results = asyncio.run(three())
        busy = [r for r in results if r[0] == 503]
        assert len(busy) == 1
        assert busy[0][1] == '{"error":"' + MAX_QUEUE_ERROR + '"}'


def test_loaded_model_does_not_503_in_ollama_mode() -> None:
    """ollama/ollama#7758: with a loaded model, requests beyond the slots wait
    on the runner's semaphore and OLLAMA_MAX_QUEUE does not bound them."""
    env = {"OLLAMA_NUM_PARALLEL": "1", "OLLAMA_MAX_QUEUE": "1"}
    with SimThread(env=env) as sim:
        httpx.post(sim.url + "/api/generate", json={"model": "slow:1b", "prompt": ""}, timeout=30)
        streams = [Stream(sim.url, SLOW) for _ in range(3)]
        wait_until(
            lambda: (runner_state(sim, "slow:1b") or {}).get("slot_waiters") == 2,
            what="one running, two waiting",
        )
        assert all(s.status in (None, 200) for s in streams)
        for s in streams:
            s.close()


def test_queue_full_while_a_model_loads() -> None:
    """The scheduler blocks on a loading model: the pending queue fills, then 503."""
    env = {"OLLAMA_NUM_PARALLEL": "1", "OLLAMA_MAX_QUEUE": "1"}
    with SimThread(env=env, faults=[("slow-load", 3600.0)]) as sim:
        first = Stream(sim.url, SLOW)
        wait_until(
            lambda: (runner_state(sim, "slow:1b") or {}).get("state") == "loading",
            what="the load to start",
        )
        second = Stream(sim.url, SLOW)
        wait_until(lambda: sim.state()["scheduler_busy"], what="the scheduler to block")
        third = Stream(sim.url, SLOW)
        wait_until(lambda: sim.state()["pending"] == 1, what="one pending request")
        r = httpx.post(sim.url + "/api/generate", json=SLOW, timeout=30)
        assert r.status_code == 503
        assert r.json() == {"error": MAX_QUEUE_ERROR}
        sim.faults(clear=["slow-load"])
        first.got_first.wait(30)
        assert first.status == 200
        for s in (first, second, third):
            s.close()


def test_eviction_with_max_loaded_models_one() -> None:
    with (
        SimThread(env={"OLLAMA_MAX_LOADED_MODELS": "1"}) as sim,
        httpx.Client(base_url=sim.url, timeout=30) as c,
    ):
        c.post("/api/generate", json={"model": "tiny", "prompt": "a", "stream": False})
        assert [m["name"] for m in c.get("/api/ps").json()["models"]] == ["tiny:latest"]
        c.post("/api/generate", json={"model": "other:1b", "prompt": "b", "stream": False})
        assert [m["name"] for m in c.get("/api/ps").json()["models"]] == ["other:1b"]


def test_eviction_waits_for_a_busy_model() -> None:
    with SimThread(env={"OLLAMA_MAX_LOADED_MODELS": "1"}) as sim:
        busy = Stream(sim.url, SLOW)
        busy.got_first.wait(30)
        waiting = Stream(sim.url, {"model": "tiny", "prompt": "x"})
        wait_until(lambda: sim.state()["scheduler_busy"], what="the scheduler to wait")
        assert not waiting.finished.is_set()
        busy.close()
        waiting.finished.wait(30)
        assert waiting.status == 200
        wait_until(
            lambda: [r["model"] for r in sim.state()["runners"]] == ["tiny:latest"],
            what="the swap",
        )


def test_vram_pressure_evicts_idle_models() -> None:
    profile = {
        "gpus": [{"id": "g", "name": "small", "vram_bytes": 3_000_000_000}],
        "models": [
            {**m, "kv_bytes_per_token": 0}
            for m in TEST_PROFILE["models"]
            if m["name"] in ("tiny:latest", "other:1b")
        ],
    }
    profile["models"][0]["vram"] = 2_000_000_000
    with SimThread(profile=profile) as sim, httpx.Client(base_url=sim.url, timeout=30) as c:
        c.post("/api/generate", json={"model": "tiny", "prompt": ""})
        c.post("/api/generate", json={"model": "other:1b", "prompt": ""})
        assert [m["name"] for m in c.get("/api/ps").json()["models"]] == ["other:1b"]


def test_num_ctx_change_reloads() -> None:
    with SimThread() as sim, httpx.Client(base_url=sim.url, timeout=30) as c:
        c.post("/api/generate", json={"model": "tiny", "prompt": ""})
        c.post("/api/generate", json={"model": "tiny", "prompt": "", "options": {"num_ctx": 2048}})
        ps = c.get("/api/ps").json()["models"]
        assert [(m["name"], m["context_length"]) for m in ps] == [("tiny:latest", 2048)]
        assert "model needs reload" in sim.logs()


def test_keep_alive_expiry() -> None:
    with SimThread() as sim, httpx.Client(base_url=sim.url, timeout=30) as c:
        r = c.post("/api/generate", json={"model": "tiny", "prompt": "x", "keep_alive": 0.2})
        assert r.status_code == 200
        assert [m["name"] for m in c.get("/api/ps").json()["models"]] == ["tiny:latest"]
        wait_until(lambda: c.get("/api/ps").json()["models"] == [], what="keep-alive expiry")


def test_default_keep_alive_from_env() -> None:
    with (
        SimThread(env={"OLLAMA_KEEP_ALIVE": "0"}) as sim,
        httpx.Client(base_url=sim.url, timeout=30) as c,
    ):
        c.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
        wait_until(lambda: c.get("/api/ps").json()["models"] == [], what="immediate unload")


def test_disconnect_frees_the_slot_for_the_next_request() -> None:
    with SimThread(env={"OLLAMA_NUM_PARALLEL": "1"}) as sim:
        s = Stream(sim.url, SLOW)
        s.got_first.wait(30)
        assert s.status == 200
        assert s.first is not None
        assert b'"done":false' in s.first
        before = runner_state(sim, "slow:1b")
        assert before is not None
        assert before["free_slots"] == 0
        s.close()  # the client goes away mid-stream
        wait_until(
            lambda: (runner_state(sim, "slow:1b") or {}).get("free_slots") == 1,
            what="the slot to be released",
        )
        r = httpx.post(
            sim.url + "/api/generate",
            json={
                "model": "slow:1b",
                "prompt": "next",
                "stream": False,
                "options": {"num_predict": 2},
            },
            timeout=30,
        )
        assert r.status_code == 200
        assert r.json()["eval_count"] == 2
        state = runner_state(sim, "slow:1b")
        assert state is not None
        assert state["decoding"] == 0
        assert state["refcount"] == 0
        assert "aborting completion request due to client closing the connection" in sim.logs()


def test_waiting_client_that_leaves_gives_up_its_place() -> None:
    with SimThread(env={"OLLAMA_NUM_PARALLEL": "1"}) as sim:
        running = Stream(sim.url, SLOW)
        running.got_first.wait(30)
        waiter = Stream(sim.url, SLOW)
        wait_until(
            lambda: (runner_state(sim, "slow:1b") or {}).get("slot_waiters") == 1,
            what="a waiter",
        )
        waiter.close()
        wait_until(
            lambda: (runner_state(sim, "slow:1b") or {}).get("slot_waiters") == 0,
            what="the waiter to leave",
        )
        running.close()
        wait_until(
            lambda: (runner_state(sim, "slow:1b") or {}).get("free_slots") == 1,
            what="the slot",
        )


def test_a_percentile_past_the_histogram_is_the_real_error_not_the_bucket_edge() -> None:
    from ollama_ops.sim.engine import ErrorHistogram

    stats = ErrorHistogram()
    for _ in range(90):
        stats.record(0.000_05)
    for i in range(10):
        stats.record(0.5 + i * 0.1)  # 500..1400 ms, far past the 100 ms histogram
    assert stats.percentile(0.50) == pytest.approx(0.000_06)
    assert stats.percentile(0.99) == pytest.approx(1.3)
    assert stats.percentile(1.0) == stats.max_error
