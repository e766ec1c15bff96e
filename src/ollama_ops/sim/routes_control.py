"""The simulator's own control API (``--control`` only): ``GET|POST /_sim/faults``,
``GET /_sim/state``, ``GET /_sim/stats``, ``POST /_sim/stats/reset``,
``GET /_sim/first-tokens``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import VERSION
from .api import ApiError, json_response, read_body
from .faults import FAULTS, FaultError
from .gojson import BindError, decode_body

if TYPE_CHECKING:
    from .server import SimServer


def _spec_list(body: dict[str, Any], key: str) -> list[str]:
    """``"set"``/``"clear"``: a string, a list of strings, or absent/null."""
    value = body.get(key)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise FaultError(f'"{key}" must be a fault spec or a list of fault specs')


class ControlRoutes:
    def __init__(self, server: SimServer) -> None:
        self.server = server

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/_sim/faults", self.h_faults_get, allow_head=False)
        router.add_post("/_sim/faults", self.h_faults_post)
        router.add_get("/_sim/state", self.h_state, allow_head=False)
        router.add_get("/_sim/stats", self.h_stats, allow_head=False)
        router.add_post("/_sim/stats/reset", self.h_stats_reset)
        router.add_get("/_sim/first-tokens", self.h_first_tokens, allow_head=False)

    async def h_faults_get(self, request: web.Request) -> web.Response:
        del request
        return json_response({"faults": self.server.faults.snapshot(), "known": sorted(FAULTS)})

    async def h_faults_post(self, request: web.Request) -> web.Response:
        """Set and clear faults; a bad body or spec changes nothing and answers 400."""
        faults = self.server.faults
        try:
            raw = await read_body(request)
            body = decode_body(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise FaultError("the body must be a JSON object")
            set_specs = _spec_list(body, "set")
            clear = _spec_list(body, "clear")
            faults.apply(set_specs, clear)
        except (BindError, FaultError) as e:
            return json_response({"error": str(e)}, 400)
        except ApiError as e:
            return json_response({"error": e.message}, e.status)
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

    async def h_first_tokens(self, request: web.Request) -> web.Response:
        del request
        return json_response({"first_tokens": self.server.stats.first_token_log()})

    async def h_stats_reset(self, request: web.Request) -> web.Response:
        del request
        self.server.stats.reset()
        return json_response(self.server.stats.snapshot())
