"""``/api/pull`` as Ollama's server/images.go PullModel does it, against a registry.

Progress, in Ollama's order and words (api.ProgressResponse; ``digest``,
``total`` and ``completed`` omitted when empty or zero, as Go's omitempty does)::

    {"status":"pulling manifest"}
    {"status":"pulling 6a0746a1ec1a","digest":"sha256:6a07...","total":2097152,"completed":65536}
    ...                                   (each layer, then the config: a line every 60 ms
                                           and one when the layer is complete)
    {"status":"verifying sha256 digest"}
    {"status":"writing manifest"}
    {"status":"success"}

A layer already in the store is one line with ``completed == total`` and is not
verified again. The registry is reached over TCP for every pull, so a network
filter that blocks egress makes the pull fail with Go's wording:
``pull model manifest: Get "http://10.0.0.1:5000/v2/library/x/manifests/latest":
dial tcp 10.0.0.1:5000: connect: operation not permitted``. An unknown model is
``pull model manifest: file does not exist``.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import aiohttp

from .logs import Logger, human_bytes
from .store import DIGEST, MANIFEST_MEDIA_TYPE, ModelName, ModelStore
from .system import go_errno_text

Emit = Callable[[dict[str, Any]], Awaitable[None]]
TICK_S = 0.06  # Ollama's progress ticker
CONNECT_TIMEOUT_S = 30.0
NO_REGISTRY = (
    "the simulator has no registry to pull from: start it with --registry URL "
    "(or OLLAMA_SIM_REGISTRY), e.g. the stand-in python -m ollama_ops.sim.registry"
)


class PullError(Exception):
    """A pull failed; ``str(err)`` is Ollama's error text."""


def progress(status: str, digest: str = "", total: int = 0, completed: int = 0) -> dict[str, Any]:
    """api.ProgressResponse with Go's omitempty."""
    out: dict[str, Any] = {"status": status}
    if digest:
        out["digest"] = digest
    if total:
        out["total"] = total
    if completed:
        out["completed"] = completed
    return out


def _go_http_error(method: str, url: str, e: BaseException) -> str:
    """What Go's http.Client.Do returns for a transport failure, as text."""
    verb = method[:1] + method[1:].lower()
    prefix = f'{verb} "{url}": '
    if isinstance(e, aiohttp.ClientConnectorError):
        host, port = e.host, e.port
        os_error = e.os_error
        if isinstance(os_error, socket.gaierror):
            return prefix + f"dial tcp: lookup {host}: no such host"
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if isinstance(os_error, (TimeoutError, asyncio.TimeoutError)) or (
            getattr(os_error, "errno", None) == errno.ETIMEDOUT
        ):
            return prefix + f"dial tcp {where}: i/o timeout"
        code = getattr(os_error, "errno", None)
        reason = os.strerror(code) if code else str(os_error)  # asyncio rewrites strerror
        return prefix + f"dial tcp {where}: connect: {reason[:1].lower()}{reason[1:]}"
    if isinstance(e, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return prefix + "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    if isinstance(e, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return prefix + "unexpected EOF"
    if isinstance(e, aiohttp.InvalidURL):
        return prefix + "invalid URL"
    return prefix + (str(e) or type(e).__name__)


def _os_error(op: str, path: str, e: OSError) -> str:
    """Go's *PathError text: ``open /x: read-only file system``."""
    return f"{op} {e.filename or path}: {go_errno_text(e)}"


class _Source(NamedTuple):
    """Where one pull fetches from."""

    http: aiohttp.ClientSession
    base: str
    name: ModelName


class Puller:
    """Pulls models into one store from one registry (``None``: no registry configured)."""

    def __init__(self, store: ModelStore, registry: str | None, log: Logger) -> None:
        self.store = store
        self.registry = registry.rstrip("/") if registry else None
        self.log = log
        self._locks: dict[str, asyncio.Lock] = {}

    async def pull(self, name: ModelName, emit: Emit) -> None:
        """Pull ``name``; progress goes to ``emit``. Raises PullError."""
        await emit(progress("pulling manifest"))
        if self.registry is None:
            raise PullError("pull model manifest: " + NO_REGISTRY)
        base = self.registry
        timeout = aiohttp.ClientTimeout(
            total=None, connect=CONNECT_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S
        )
        # A fresh connection for every pull: nothing is reused from before,
        # so a filter put in place since the last pull takes effect.
        connector = aiohttp.TCPConnector(force_close=True, use_dns_cache=False)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, trust_env=False
        ) as http:
            src = _Source(http, base, name)
            raw, manifest = await self._manifest(src)
            layers = [x for x in (manifest.get("layers") or []) if isinstance(x, dict)]
            config = manifest.get("config")
            if isinstance(config, dict) and config.get("digest"):
                layers.append(config)
            fresh: dict[str, str] = {}  # digest -> what was downloaded (sha256)
            for layer in layers:
                digest = str(layer.get("digest") or "")
                if not digest:
                    raise PullError(f"{name.repository}: digest is empty")
                if not DIGEST.fullmatch(digest):
                    raise PullError(f"{name.repository}: invalid digest {digest!r}")
                got = await self._blob(src, digest, emit)
                if got is not None:
                    fresh[digest] = got
        await emit(progress("verifying sha256 digest"))
        for digest, got in fresh.items():
            if got != digest:
                path = self.store.blob_path(digest)
                try:
                    os.remove(path)
                except OSError as e:
                    self.log.info(
                        f"couldn't remove file with digest mismatch '{path}': {e}",
                        src="images.go:727",
                    )
                raise PullError(
                    f"digest mismatch, file must be downloaded again: want {digest}, got {got}"
                )
        await emit(progress("writing manifest"))
        self._write_manifest(name, raw)
        await emit(progress("success"))

    async def _manifest(self, src: _Source) -> tuple[bytes, dict[str, Any]]:
        url = f"{src.base}/v2/{src.name.repository}/manifests/{src.name.tag}"
        try:
            async with src.http.get(url, headers={"Accept": MANIFEST_MEDIA_TYPE}) as r:
                body = await r.read()
                status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise PullError("pull model manifest: " + _go_http_error("GET", url, e)) from None
        if status == 404:
            raise PullError("pull model manifest: file does not exist")
        if not 200 <= status < 300:
            text = body.decode("utf-8", "replace").strip()
            raise PullError(f"pull model manifest: {status}: {text}")
        try:
            manifest = json.loads(body)
        except ValueError as e:
            raise PullError(f"pull model manifest: {e}") from None
        if not isinstance(manifest, dict):
            raise PullError("pull model manifest: the manifest is not a JSON object")
        return body, manifest

    async def _blob(self, src: _Source, digest: str, emit: Emit) -> str | None:
        """Download one blob unless the store has it. Returns the sha256 of what came."""
        path = self.store.blob_path(digest)
        short = digest[7:19]
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                pass
            except OSError as e:
                raise PullError(_os_error("stat", path, e)) from None
            else:
                await emit(progress(f"pulling {short}", digest, size, size))
                return None
            return await self._download(src, digest, path, emit)

    async def _download(self, src: _Source, digest: str, path: str, emit: Emit) -> str:
        http = src.http
        url = f"{src.base}/v2/{src.name.repository}/blobs/{digest}"
        short = digest[7:19]
        try:
            async with http.head(url) as r:
                if r.status == 404:
                    raise PullError("file does not exist")
                if not 200 <= r.status < 300:
                    raise PullError(f"{r.status}: {r.reason or ''}".rstrip(": "))
                total = int(r.headers.get("Content-Length") or 0)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise PullError(_go_http_error("HEAD", url, e)) from None
        self.log.info(
            f"downloading {short} in 1 {human_bytes(total)} part(s)", src="download.go:177"
        )
        partial = path + "-partial"
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            f = open(partial, "wb")  # noqa: SIM115 - closed below, after the stream
        except OSError as e:
            self._log_write_failure(e, partial)
            raise PullError(_os_error("open", partial, e)) from None
        sha = hashlib.sha256()
        done = 0
        last = time.monotonic()
        try:
            with f:
                await emit(progress(f"pulling {short}", digest, total, 0))
                try:
                    async with http.get(url, headers={"Range": f"bytes=0-{total - 1}"}) as r:
                        if r.status not in (200, 206):
                            raise PullError(f"unexpected status code {r.status}")
                        async for chunk in r.content.iter_chunked(64 * 1024):
                            f.write(chunk)
                            sha.update(chunk)
                            done += len(chunk)
                            now = time.monotonic()
                            if now - last >= TICK_S:
                                last = now
                                await emit(progress(f"pulling {short}", digest, total, done))
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    raise PullError(_go_http_error("GET", url, e)) from None
            os.replace(partial, path)
        except OSError as e:
            self._log_write_failure(e, partial)
            raise PullError(_os_error("write", partial, e)) from None
        await emit(progress(f"pulling {short}", digest, total, done))
        return "sha256:" + sha.hexdigest()

    def _write_manifest(self, name: ModelName, raw: bytes) -> None:
        fp = self.store.manifest_path(name)
        try:
            os.makedirs(os.path.dirname(fp), mode=0o755, exist_ok=True)
        except OSError as e:
            self._log_write_failure(e, fp)
            raise PullError(_os_error("mkdir", os.path.dirname(fp), e)) from None
        try:
            with open(fp, "wb") as f:
                f.write(raw)
        except OSError as e:
            self.log.info(f"couldn't write to {fp}", src="images.go:766")
            self._log_write_failure(e, fp)
            raise PullError(_os_error("open", fp, e)) from None

    def _log_write_failure(self, e: OSError, path: str) -> None:
        """Real Ollama sends this only to the client; the simulator also logs it (source=sim)."""
        self.log.error("pull failed to write", src="sim", error=_os_error("open", path, e))
