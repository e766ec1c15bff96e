"""The simulator's own control API (``--control`` only): ``GET|POST /_sim/faults``,
``GET /_sim/state``, ``GET /_sim/stats``, ``POST /_sim/stats/reset``."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from aiohttp import web

from . import VERSION
from .api import json_response
from .faults import FAULTS, FaultError

if TYPE_CHECKING:
    from .server import SimServer


class ControlRoutes:
    def __init__(self, server: SimServer) -> None:
        self.server = server

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/_sim/faults", self.h_faults_get, allow_head=False)
        router.add_post("/_sim/faults", self.h_faults_post)
        router.add_get("/_sim/state", self.h_state, allow_head=False)
        router.add_get("/_sim/stats", self.h_stats, allow_head=False)
        router.add_post("/_sim/stats/reset", self.h_stats_reset)

    async def h_faults_get(self, request: web.Request) -> web.Response:
        del request
        return json_response({"faults": self.server.faults.snapshot(), "known": sorted(FAULTS)})

    async def h_faults_post(self, request: web.Request) -> web.Response:
        faults = self.server.faults
        try:
            body = json.loads((await request.read()) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            set_specs = body.get("set") or []
            clear = body.get("clear") or []
            if isinstance(set_specs, str):
                set_specs = [set_specs]
            if isinstance(clear, str):
                clear = [clear]
            faults.apply([str(s) for s in set_specs], [str(c) for c in clear])
        except (ValueError, FaultError) as e:
            return json_response({"error": str(e)}, 400)
        return json_response({"faults": faults.snapshot()})

    async def h_state(self, request: web.Request) -> web.Response:
        del request
        srv = self.server
        assert srv.sched is not None
        state = srv.sched.describe()
        state["faults"] = srv.faults.snapshot()
        state["version"] = VERSION
        state["pid"] = os.getpid()
        return json_response(state)

    async def h_stats(self, request: web.Request) -> web.Response:
        del request
        return json_response(self.server.stats.snapshot())

    async def h_stats_reset(self, request: web.Request) -> web.Response:
        del request
        self.server.stats.reset()
        return json_response(self.server.stats.snapshot())
