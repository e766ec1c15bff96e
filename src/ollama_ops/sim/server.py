"""The aiohttp application of one simulated ``ollama serve``: its lifecycle, the
fault hooks, the access-log middleware, and the route groups put together.

Route groups, one module each:

* routes_models.py: ``GET|HEAD /``, ``GET|HEAD /api/version``, ``GET|HEAD /api/tags``,
  ``GET /api/ps``, ``POST /api/show``;
* routes_generate.py: ``POST /api/generate``, ``POST /api/chat``;
* routes_openai.py: ``POST /v1/chat/completions``, ``POST /v1/completions``,
  ``GET /v1/models``, ``GET /v1/models/{model}``;
* routes_store.py: ``POST /api/pull``, ``DELETE /api/delete``;
* routes_control.py (only with ``--control``): ``GET|POST /_sim/faults``,
  ``GET /_sim/state``, ``GET /_sim/stats``, ``POST /_sim/stats/reset``.

Anything else answers gin's ``404 page not found`` / ``405 method not allowed``.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import os
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .api import CLIENT_MAX_SIZE, error_response
from .engine import Scheduler, Stats
from .envconfig import ServerEnv
from .faults import FaultState
from .inference import InferenceCore
from .logs import Logger
from .profile import ModelProfile, Profile
from .pull import Puller
from .routes_control import ControlRoutes
from .routes_generate import GenerateRoutes
from .routes_models import ModelRoutes
from .routes_openai import OpenAIRoutes
from .routes_store import StoreRoutes
from .store import InvalidName, ModelName, ModelStore, StoredModel, parse_name


@dataclass
class SimConfig:
    """Everything ``serve`` decided before the HTTP server starts."""

    env: ServerEnv
    profile: Profile
    faults: list[tuple[str, float | None]] = field(default_factory=list)
    control: bool = False
    queue_mode: str = "ollama"
    sigusr1_faults: list[str] = field(default_factory=lambda: ["hang"])
    registry: str | None = None  # base URL of the registry /api/pull uses
    runner_wording: str = "llama-runner"  # or "llama-server", as Ollama >= 0.30 logs loads


class SimServer:
    """One simulated ``ollama serve``: start it on a listening socket, stop it."""

    def __init__(self, config: SimConfig, log: Logger, install_signals: bool = False) -> None:
        self.config = config
        self.log = log
        self.install_signals = install_signals
        self.faults = FaultState()
        self.stats = Stats()
        self.started_wall = datetime.datetime.now().astimezone()
        self.sched: Scheduler | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopped: asyncio.Event | None = None
        self._hang_release = threading.Event()
        self._terminating = False
        self._memory: list[bytes] = []
        self._memory_task: asyncio.Task[None] | None = None
        self._crash_handle: asyncio.TimerHandle | None = None
        self.address: tuple[str, int] = ("", 0)
        self.store = ModelStore(config.env.models)
        self.puller = Puller(self.store, config.registry, log)
        self.stored: dict[str, StoredModel] = {}  # by full name
        self._stored_by_short: dict[str, StoredModel] = {}
        self._hidden: set[str] = set()  # profile models removed with /api/delete

    # ------------------------------------------------------------------ lifecycle

    async def start(self, sock: socket.socket) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self.sched = Scheduler(
            self.config.env,
            self.config.profile,
            self.faults,
            self.log,
            self.stats,
            queue_mode=self.config.queue_mode,
            wording="llama-server"
            if self.config.runner_wording == "llama-server"
            else "llama runner",
        )
        self.sched.start()
        self.refresh_store()
        self.faults.add_listener(self._on_fault)
        app = self._make_app()
        runner_kw, site_kw = _runner_options()
        runner = web.AppRunner(app, **runner_kw)
        await runner.setup()
        site = web.SockSite(runner, sock, backlog=4096, **site_kw)
        await site.start()
        self._runner = runner
        addr = sock.getsockname()
        self.address = (str(addr[0]), int(addr[1]))
        for name, arg in self.config.faults:
            self.faults.set(name, arg)

    async def wait_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    def request_stop(self) -> None:
        """Thread-safe and signal-safe: ask the server to shut down."""
        self._terminating = True
        self._hang_release.set()
        loop = self.loop
        if loop is not None and self._stopped is not None:
            stopped = self._stopped
            loop.call_soon_threadsafe(stopped.set)

    def release_hang(self) -> None:
        """Thread-safe: end a ``hang`` (the loop then clears the fault itself)."""
        self._hang_release.set()

    async def stop(self) -> None:
        if self._memory_task is not None:
            self._memory_task.cancel()
        if self._crash_handle is not None:
            self._crash_handle.cancel()
        if self.sched is not None:
            await self.sched.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._memory = []

    # ------------------------------------------------------------------ faults

    def _on_fault(self, name: str, on: bool) -> None:
        loop = self.loop
        assert loop is not None
        assert self.sched is not None
        if on:
            self.log.warn("fault injected", src="sim", fault=name, arg=self.faults.arg(name) or "")
        else:
            self.log.info("fault cleared", src="sim", fault=name)
        if name == "hang" and on:
            self._hang_release.clear()
            loop.call_later(0.05, self._hang)
        elif name == "generate-hang":
            self.sched.pause_all(on)
        elif name == "gpu-lost" and on:
            self.sched.gpu_lost()
        elif name == "runner-oom" and on:
            if self.sched.runner_oom():
                loop.call_soon(self.faults.clear, "runner-oom")  # one-shot
        elif name == "stuck-unload":
            if on:
                self.sched.expire_all()
            else:
                self.sched.unstick()
        elif name == "crash":
            if self._crash_handle is not None:
                self._crash_handle.cancel()
                self._crash_handle = None
            if on:
                delay = float(self.faults.arg("crash") or 0.0)
                self._crash_handle = loop.call_later(delay, self._crash)
        elif name == "memory-grow":
            if self._memory_task is not None:
                self._memory_task.cancel()
                self._memory_task = None
            if on:
                self._memory_task = loop.create_task(self._grow_memory())
            else:
                self._memory = []

    def _hang(self) -> None:
        """Block the event loop: nothing is served until released."""
        while self.faults.is_set("hang") and not self._hang_release.is_set():
            time.sleep(0.02)
        if self.faults.is_set("hang"):
            self.faults.clear("hang")

    def _crash(self) -> None:
        sys.stderr.write(
            "panic: runtime error: invalid memory address or nil pointer dereference "
            '(simulated by the ollama-ops simulator fault "crash")\n'
            "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x0]\n\n"
            "goroutine 1 [running]:\n"
            "github.com/ollama/ollama/server.(*Scheduler).processPending(...)\n"
        )
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(2)

    async def _grow_memory(self) -> None:
        rate = float(self.faults.arg("memory-grow") or 64.0)
        step = int(rate * 1024 * 1024 / 10)
        while True:
            if step > 0:
                self._memory.append(b"\x01" * step)  # allocated and written: resident
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ app

    # ------------------------------------------------------------------ models

    def models(self) -> list[ModelProfile]:
        """The models this server has: the store's, newest first, then the profile's."""
        stored = sorted(self.stored.values(), key=lambda s: -s.modified)
        p = self.config.profile
        profile = [p.models[n] for n in p.ordered] if p.ordered else list(p.models.values())
        shadowed = {s.profile.name for s in stored} | self._hidden
        return [s.profile for s in stored] + [m for m in profile if m.name not in shadowed]

    def lookup(self, name: str) -> ModelProfile | None:
        """The model a request names: the store's first, then the profile's."""
        if self.stored:
            try:
                found = self.stored.get(parse_name(name).full)
            except InvalidName:
                found = None
            if found is not None:
                return found.profile
        m = self.config.profile.lookup(name)
        return None if m is None or m.name in self._hidden else m

    def digest_of(self, m: ModelProfile) -> str:
        s = self._stored_by_short.get(m.name)
        return s.digest if s is not None and s.profile is m else m.digest

    def modified_of(self, m: ModelProfile) -> datetime.datetime:
        s = self._stored_by_short.get(m.name)
        if s is not None and s.profile is m:
            return datetime.datetime.fromtimestamp(s.modified).astimezone()
        return self.started_wall

    def refresh_store(self) -> None:
        """Read the models in OLLAMA_MODELS again (at start, after a pull or delete)."""
        stored, problems = self.store.scan()
        for problem in problems:
            self.log.warn("skipping a model in the store", src="sim", error=problem)
        self.stored = stored
        self._stored_by_short = {s.profile.name: s for s in stored.values()}

    def delete_model(self, name: ModelName) -> bool:
        """/api/delete: remove a stored model, or hide a profile one. False if unknown."""
        if name.full in self.stored:
            self.store.remove(name)
            self.refresh_store()
            return True
        m = self.config.profile.lookup(name.short)
        if m is None or m.name in self._hidden:
            return False
        self._hidden.add(m.name)
        return True

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[self._middleware])
        core = InferenceCore(self)
        groups: list[Any] = [
            ModelRoutes(self),
            StoreRoutes(self),
            GenerateRoutes(core),
            OpenAIRoutes(self, core),
        ]
        if self.config.control:
            groups.append(ControlRoutes(self))
        for group in groups:
            group.add_to(app.router)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        t0 = time.monotonic()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPNotFound:
            status = 404
            return web.Response(status=404, text="404 page not found", content_type="text/plain")
        except web.HTTPMethodNotAllowed:
            status = 405
            return web.Response(
                status=405, text="405 method not allowed", content_type="text/plain"
            )
        except web.HTTPException as e:
            status = e.status
            raise
        except asyncio.CancelledError:
            status = 499
            raise
        except Exception as e:  # a simulator bug: Ollama's recovery answers 500, so do we
            self.log.error(
                "handler failed (simulator bug)",
                src="sim",
                path=request.path,
                error=f"{type(e).__name__}: {e}",
            )
            return error_response("native", 500, f"internal simulator error: {type(e).__name__}")
        finally:
            peer = request.remote or ""
            path = request.path  # gin logs URL.Path, then "?" and the raw query if any
            query = request.raw_path.partition("?")[2]
            if query:
                path += "?" + query
            self.log.access(status, time.monotonic() - t0, peer, request.method, path)


def _runner_options() -> tuple[dict[str, Any], dict[str, Any]]:
    """AppRunner / SockSite keywords for the installed aiohttp (3.7 to 3.14)."""
    from aiohttp import web_runner, web_server

    runner_kw: dict[str, Any] = {"access_log": None, "handle_signals": False}
    site_kw: dict[str, Any] = {}
    if "handler_cancellation" in inspect.signature(web_server.Server.__init__).parameters:
        # aiohttp >= 3.9 no longer cancels a handler whose client went away
        # unless asked; older versions always do.
        runner_kw["handler_cancellation"] = True
    if "shutdown_timeout" in inspect.signature(web_runner.BaseRunner.__init__).parameters:
        runner_kw["shutdown_timeout"] = 1.0
    else:
        site_kw["shutdown_timeout"] = 1.0
    return runner_kw, site_kw
