"""Ollama's model-store routes: ``POST /api/pull`` and ``DELETE /api/delete``.

``/api/pull`` streams NDJSON progress (pull.py) from the registry given with
``--registry``; ``"stream": false`` answers one ``{"status":"success"}`` or
``500 {"error": ...}``. An error after the stream began is an ``{"error":...}``
line with status 200, as Ollama's streamResponse writes it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .api import ApiError, error_response, json_response, read_body
from .gojson import BindError, bind
from .pull import PullError
from .store import InvalidName, parse_name
from .system import go_errno_text

if TYPE_CHECKING:
    from .server import SimServer

PULL_SCHEMA = {
    "model": "string",
    "name": "string",
    "insecure": "bool",
    "username": "string",
    "password": "string",
    "stream": "bool",
}
DELETE_SCHEMA = {"model": "string", "name": "string"}


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class StoreRoutes:
    def __init__(self, server: SimServer) -> None:
        self.server = server

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/pull", self.h_pull)
        router.add_delete("/api/delete", self.h_delete)

    async def h_pull(self, request: web.Request) -> web.StreamResponse:
        try:
            req = bind(await read_body(request), "PullRequest", PULL_SCHEMA)
        except BindError as e:
            return error_response("native", 400, str(e))
        except ApiError as e:
            return error_response("native", e.status, e.message)
        try:
            name = parse_name(req.get("model") or req.get("name") or "")
        except InvalidName:
            return error_response("native", 400, "invalid model name")
        puller = self.server.puller
        if req.get("stream") is False:

            async def ignore(obj: dict[str, Any]) -> None:
                del obj

            try:
                await puller.pull(name, ignore)
            except PullError as e:
                return error_response("native", 500, str(e))
            finally:
                self.server.refresh_store()
            return json_response({"status": "success"})
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})

        async def emit(obj: dict[str, Any]) -> None:
            if not resp.prepared:
                await resp.prepare(request)
            await resp.write(_line(obj))

        try:
            await puller.pull(name, emit)
        except PullError as e:
            await emit({"error": str(e)})
        finally:
            self.server.refresh_store()
        await resp.write_eof()
        return resp

    async def h_delete(self, request: web.Request) -> web.Response:
        try:
            req = bind(await read_body(request), "DeleteRequest", DELETE_SCHEMA)
        except BindError as e:
            return error_response("native", 400, str(e))
        except ApiError as e:
            return error_response("native", e.status, e.message)
        given = req.get("model") or req.get("name") or ""
        try:
            name = parse_name(given)
        except InvalidName:
            return error_response("native", 400, f"name {json.dumps(given)} is invalid")
        try:
            found = self.server.delete_model(name)
        except OSError as e:
            return error_response("native", 500, f"remove {e.filename}: {go_errno_text(e)}")
        if not found:
            return error_response("native", 404, f"model '{given}' not found")
        return web.Response(status=200)
