"""Run the Ollama simulator in-process (a background thread with its own loop)
or as a subprocess, for the tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiohttp import web

from ollama_ops.sim.envconfig import read_server_env
from ollama_ops.sim.logs import Logger
from ollama_ops.sim.profile import profile_from_dict
from ollama_ops.sim.registry import Registry, make_app
from ollama_ops.sim.server import SimConfig, SimServer
from ollama_ops.sim.system import listen_socket, new_event_loop

SRC = str(Path(__file__).resolve().parents[1] / "src")
#: The interpreter for simulator subprocesses: set OLLAMA_SIM_TEST_PYTHON to
#: run them under another Python (e.g. 3.9, as in a Debian 11 container).
SIM_PYTHON = os.environ.get("OLLAMA_SIM_TEST_PYTHON") or sys.executable
T = TypeVar("T")

#: Fast models for tests: "tiny" answers 8 tokens at once; "slow" streams
#: 50 tokens/s for a very long time (for slot, queue and disconnect tests).
TEST_PROFILE: dict[str, Any] = {
    "gpus": [{"id": "GPU-test", "name": "Test GPU", "vram_bytes": 24 * 1024**3}],
    "models": [
        {
            "name": "tiny:latest",
            "size": 100_000_000,
            "vram": 200_000_000,
            "family": "llama",
            "parameter_size": "100M",
            "quantization_level": "Q8_0",
            "context_length": 8192,
            "load_seconds": 0,
            "prompt_tps": 1e6,
            "decode_tps": 2000,
            "response_tokens": 8,
        },
        {
            "name": "other:1b",
            "size": 1_000_000_000,
            "vram": 1_500_000_000,
            "family": "qwen2",
            "parameter_size": "1.0B",
            "quantization_level": "Q4_K_M",
            "context_length": 8192,
            "load_seconds": 0,
            "prompt_tps": 1e6,
            "decode_tps": 2000,
            "response_tokens": 6,
        },
        {
            "name": "slow:1b",
            "size": 1_000_000_000,
            "family": "llama",
            "parameter_size": "1.0B",
            "quantization_level": "Q4_0",
            "context_length": 8192,
            "load_seconds": 0,
            "prompt_tps": 1e6,
            "decode_tps": 50,
            "response_tokens": 100_000,
        },
    ],
}


class SimThread:
    """A SimServer on 127.0.0.1:<ephemeral> in a daemon thread."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        profile: dict[str, Any] | None = None,
        control: bool = True,
        queue_mode: str = "ollama",
        faults: list[tuple[str, float | None]] | None = None,
        *,
        registry: str | None = None,
    ) -> None:
        full_env = {"OLLAMA_CONTEXT_LENGTH": "4096"}
        full_env.update(env or {})
        self.log_buf = io.StringIO()
        self.access_buf = io.StringIO()
        self.log = Logger(self.log_buf, self.access_buf, debug=True)
        self.config = SimConfig(
            env=read_server_env(full_env, "/nonexistent-home"),
            profile=profile_from_dict(profile or TEST_PROFILE, "test"),
            faults=list(faults or []),
            control=control,
            queue_mode=queue_mode,
            registry=registry,
        )
        self.server = SimServer(self.config, self.log)
        self.loop = new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as e:
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        sock = listen_socket("127.0.0.1", 0)
        await self.server.start(sock)
        host, port = self.server.address
        self.url = f"http://{host}:{port}"
        self._ready.set()
        await self.server.wait_stopped()
        await self.server.stop()

    def __enter__(self) -> SimThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.release_hang()
        self.server.request_stop()
        self._thread.join(10)
        self.loop.close()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop thread and return its result."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return fut.result(10)

    def state(self) -> dict[str, Any]:
        r = httpx.get(self.url + "/_sim/state", timeout=10)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def faults(self, set_: list[str] | None = None, clear: list[str] | None = None) -> Any:
        r = httpx.post(
            self.url + "/_sim/faults",
            json={"set": set_ or [], "clear": clear or []},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()

    def logs(self) -> str:
        return self.log_buf.getvalue()


_R = TypeVar("_R", bound="RegistryThread")


class RegistryThread:
    """The registry stand-in on 127.0.0.1:<ephemeral> in a daemon thread.

    ``requests`` lists every (method, path) it served, in order. Subclasses may answer a
    request themselves in :meth:`intercept`.
    """

    def __init__(self, rate: float = 0.0) -> None:
        self.registry = Registry()
        self.rate = rate
        self.requests: list[tuple[str, str]] = []
        self.loop = new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""

    def intercept(self, request: web.Request) -> web.StreamResponse | None:
        """Before each request: None serves it, a response answers in its place."""
        self.requests.append((request.method, request.path))
        return None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        app = make_app(self.registry, self.rate, quiet=True)

        @web.middleware
        async def intercept(request: web.Request, handler: Any) -> web.StreamResponse:
            early = self.intercept(request)
            if early is not None:
                return early
            resp: web.StreamResponse = await handler(request)
            return resp

        app.middlewares.insert(0, intercept)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = listen_socket("127.0.0.1", 0)
        site = web.SockSite(runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self: _R) -> _R:
        self._thread.start()
        assert self._ready.wait(10), "the registry stand-in did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        stop = self._stop
        if stop is not None:
            self.loop.call_soon_threadsafe(stop.set)
        self._thread.join(10)
        self.loop.close()


def wait_until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll until ``cond()`` holds. Fails (not asserts a duration) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def runner_state(sim: SimThread, model: str) -> dict[str, Any] | None:
    for r in sim.state()["runners"]:
        if r["model"] == model:
            rr: dict[str, Any] = r
            return rr
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sim_env(home: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "PYTHON"))}
    env.update(
        HOME=home,
        OLLAMA_HOST=f"127.0.0.1:{port}",
        PYTHONPATH=SRC,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@contextmanager
def sim_process(
    home: str, port: int, args: list[str] | None = None, **env: str
) -> Iterator[subprocess.Popen[str]]:
    """``python -m ollama_ops.sim serve`` as a child; killed on exit."""
    proc = subprocess.Popen(
        [SIM_PYTHON, "-m", "ollama_ops.sim", "serve", *(args or [])],
        env=sim_env(home, port, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"simulator exited with {proc.returncode}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout, "the simulator to listen")


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
