"""A tiny stand-in for Ollama's model registry, for ``/api/pull`` in tests.

    python -m ollama_ops.sim.registry [--host 127.0.0.1] [--port 0] [--rate BYTES/S]

It speaks the part of the Docker registry v2 protocol Ollama's pull uses:

* ``GET /v2/`` -> ``{}``;
* ``GET|HEAD /v2/<namespace>/<model>/manifests/<tag>`` -> the manifest
  (``application/vnd.docker.distribution.manifest.v2+json``), or 404
  ``{"errors":[{"code":"MANIFEST_UNKNOWN",...}]}``;
* ``GET|HEAD /v2/<namespace>/<model>/blobs/sha256:<hex>`` -> the blob
  (``Range: bytes=a-b`` honoured: 206), or 404 ``BLOB_UNKNOWN``.

It serves a few fake models (``CATALOG``) built deterministically at start: a
"GGUF" model layer of pseudo-random bytes, template, params and license
layers, and a config blob in Ollama's shape whose ``ollama_ops_sim`` object
carries the simulator's speed fields. ``--rate`` slows blob bodies down (to
watch progress lines, or to interrupt a pull). It prints
``registry listening on http://HOST:PORT`` once it listens, then one line per
request on stderr; SIGTERM/SIGINT stop it.

Portability: as the rest of ``ollama_ops.sim`` (Python 3.9+, stdlib + aiohttp).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .store import MANIFEST_MEDIA_TYPE

MiB = 1024 * 1024
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"


@dataclass(frozen=True)
class FakeModel:
    """One model the registry serves, under one or more ``namespace/model:tag`` names."""

    names: tuple[str, ...]
    model_bytes: int
    family: str
    parameter_size: str
    quantization_level: str
    sim: dict[str, Any] = field(default_factory=dict)


#: What the registry serves. Sizes are small: the point is the protocol.
CATALOG: tuple[FakeModel, ...] = (
    FakeModel(
        names=("library/smollm2:135m", "library/smollm2:latest"),
        model_bytes=2 * MiB,
        family="llama",
        parameter_size="134.52M",
        quantization_level="F16",
        sim={"vram": 300_000_000, "load_seconds": 0.3, "decode_tps": 300, "response_tokens": 24},
    ),
    FakeModel(
        names=("library/qwen3:0.6b",),
        model_bytes=5 * MiB,
        family="qwen3",
        parameter_size="751.63M",
        quantization_level="Q4_K_M",
        sim={"vram": 900_000_000, "load_seconds": 0.5, "decode_tps": 220, "response_tokens": 32},
    ),
    FakeModel(
        names=("library/tinyllama:1.1b", "library/tinyllama:latest"),
        model_bytes=9 * MiB,
        family="llama",
        parameter_size="1.1B",
        quantization_level="Q4_0",
        sim={"vram": 1_300_000_000, "load_seconds": 0.8, "decode_tps": 160, "response_tokens": 40},
    ),
)

_MANIFEST_PATH = re.compile(r"/v2/([^/]+)/([^/]+)/manifests/([^/]+)")
_BLOB_PATH = re.compile(r"/v2/([^/]+)/([^/]+)/blobs/(sha256:[0-9a-f]{64})")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry:
    """The manifests and blobs of the catalog, in memory."""

    def __init__(self, catalog: Sequence[FakeModel] = CATALOG) -> None:
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        for m in catalog:
            manifest = self._build(m)
            for name in m.names:
                self.manifests[name] = manifest

    def _add(self, data: bytes, media_type: str) -> dict[str, Any]:
        digest = _digest(data)
        self.blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def _build(self, m: FakeModel) -> bytes:
        rng = random.Random(m.names[0])
        weights = b"GGUF" + rng.randbytes(m.model_bytes - 4)
        layers = [
            self._add(weights, MEDIA_MODEL),
            self._add(b"{{ .Prompt }}", MEDIA_TEMPLATE),
            self._add(json.dumps({"stop": ["<|end|>"]}).encode(), MEDIA_PARAMS),
            self._add(b"Simulated model for ollama-ops tests; no license needed.\n", MEDIA_LICENSE),
        ]
        config = {
            "model_format": "gguf",
            "model_family": m.family,
            "model_families": [m.family],
            "model_type": m.parameter_size,
            "file_type": m.quantization_level,
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]},
            "ollama_ops_sim": m.sim,
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": self._add(json.dumps(config).encode(), MEDIA_CONFIG),
            "layers": layers,
        }
        return json.dumps(manifest).encode()


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return web.json_response(body, status=status)


def make_app(registry: Registry, rate: float = 0.0, quiet: bool = False) -> web.Application:
    """The registry's aiohttp application; ``rate`` > 0 limits blob bodies to bytes/s."""

    @web.middleware
    async def log(request: web.Request, handler: Any) -> web.StreamResponse:
        resp: web.StreamResponse = await handler(request)
        if not quiet:
            sys.stderr.write(f"registry: {request.method} {request.path} {resp.status}\n")
        return resp

    async def root(request: web.Request) -> web.Response:
        del request
        return web.json_response({})

    async def manifest(request: web.Request) -> web.Response:
        m = _MANIFEST_PATH.fullmatch(request.path)
        assert m is not None
        data = registry.manifests.get(f"{m.group(1)}/{m.group(2)}:{m.group(3)}")
        if data is None:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        headers = {"Docker-Content-Digest": _digest(data)}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(status=200, headers=headers, content_type=MANIFEST_MEDIA_TYPE)
        return web.Response(body=data, headers=headers, content_type=MANIFEST_MEDIA_TYPE)

    async def blob(request: web.Request) -> web.StreamResponse:
        m = _BLOB_PATH.fullmatch(request.path)
        data = registry.blobs.get(m.group(3)) if m else None
        if data is None:
            return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        start, end, status = 0, len(data) - 1, 200
        rng = _RANGE.fullmatch(request.headers.get("Range", ""))
        if rng and (rng.group(1) or rng.group(2)):
            if rng.group(1):
                start = int(rng.group(1))
                end = min(int(rng.group(2)), end) if rng.group(2) else end
            else:
                start = max(0, len(data) - int(rng.group(2)))
            if start > end:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
        body = data[start : end + 1]
        headers = {
            "Content-Length": str(len(body)),
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": m.group(3) if m else "",
            "Accept-Ranges": "bytes",
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        chunk = 64 * 1024
        for i in range(0, len(body), chunk):
            await resp.write(body[i : i + chunk])
            if rate > 0:
                await asyncio.sleep(min(chunk, len(body) - i) / rate)
        await resp.write_eof()
        return resp

    app = web.Application(middlewares=[log])
    app.router.add_get("/v2/", root)
    app.router.add_route("GET", r"/v2/{ns}/{model}/manifests/{tag}", manifest)
    app.router.add_route("HEAD", r"/v2/{ns}/{model}/manifests/{tag}", manifest)
    app.router.add_route("GET", r"/v2/{ns}/{model}/blobs/{digest}", blob)
    app.router.add_route("HEAD", r"/v2/{ns}/{model}/blobs/{digest}", blob)
    return app


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ollama_ops.sim.registry",
        description="Serve fake models over the registry protocol Ollama's pull uses.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (printed)")
    p.add_argument(
        "--rate", type=float, default=0.0, help="limit blob bodies to this many bytes/s (no limit)"
    )
    p.add_argument("--quiet", action="store_true", help="do not log requests")
    return p


async def _serve(host: str, port: int, rate: float, quiet: bool) -> None:
    runner = web.AppRunner(make_app(Registry(), rate, quiet), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    shown = f"[{host}]" if ":" in host else host
    print(f"registry listening on http://{shown}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not 0 <= args.port <= 65535 or not args.rate >= 0:
        sys.stderr.write("Error: --port must be 0..65535 and --rate a number >= 0\n")
        return 2
    try:
        asyncio.run(_serve(args.host, args.port, args.rate, args.quiet))
    except OSError as e:
        sys.stderr.write(f"Error: cannot listen on {args.host}:{args.port}: {e.strerror or e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
