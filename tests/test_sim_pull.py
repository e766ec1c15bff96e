"""``/api/pull`` and ``/api/delete`` against the registry stand-in, through the official
``ollama`` client (issue 7, item 18)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import ollama
import pytest
from aiohttp.client_reqrep import ConnectionKey

from ollama_ops.sim.pull import _go_http_error, _os_error
from ollama_ops.sim.store import InvalidName, parse_name
from tests.sim_helpers import (
    SIM_PYTHON,
    RegistryThread,
    SimThread,
    free_port,
    sim_env,
    sim_process,
    wait_listening,
)

MODEL = "smollm2:135m"
MANIFEST = "manifests/registry.ollama.ai/library/smollm2/135m"


@pytest.fixture
def registry() -> Iterator[RegistryThread]:
    with RegistryThread() as r:
        yield r


@pytest.fixture
def models(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    (d / "blobs").mkdir(parents=True)
    (d / "manifests").mkdir()
    return d


@pytest.fixture
def sim(registry: RegistryThread, models: Path) -> Iterator[SimThread]:
    with SimThread(env={"OLLAMA_MODELS": str(models)}, registry=registry.url) as s:
        yield s


def _digests(models: Path) -> list[str]:
    manifest = json.loads((models / MANIFEST).read_text())
    return [x["digest"] for x in [*manifest["layers"], manifest["config"]]]


def test_streamed_pull_progress_is_ollamas(sim: SimThread, models: Path) -> None:
    lines = list(ollama.Client(sim.url).pull(MODEL, stream=True))
    statuses = [p.status for p in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layer_lines = lines[1:-3]
    digests = _digests(models)
    assert list(dict.fromkeys(p.digest for p in layer_lines)) == digests  # layers, config
    for p in layer_lines:
        assert p.digest is not None
        assert p.status == f"pulling {p.digest[7:19]}"
        assert p.total and p.total > 0
    for digest in digests:
        done = [p.completed or 0 for p in layer_lines if p.digest == digest]
        assert done == sorted(done)  # progress only grows
        blob = models / "blobs" / digest.replace(":", "-")
        assert done[-1] == blob.stat().st_size
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == digest
    assert not list((models / "blobs").glob("*-partial"))
    # Raw lines: zero fields are left out, as Go's omitempty does.
    with httpx.stream("POST", sim.url + "/api/pull", json={"model": MODEL}, timeout=30) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        raw = [json.loads(line) for line in r.iter_lines() if line]
    assert raw[0] == {"status": "pulling manifest"}
    assert raw[-1] == {"status": "success"}


def test_pulled_model_is_listed_and_generates(sim: SimThread) -> None:
    client = ollama.Client(sim.url)
    assert MODEL not in [m.model for m in client.list().models]
    assert client.pull(MODEL).status == "success"  # stream=False: one line
    listed = {m.model: m for m in client.list().models}
    assert MODEL in listed
    details = listed[MODEL].details
    assert details is not None
    assert details.family == "llama"
    assert details.parameter_size == "134.52M"
    out = client.generate(model=MODEL, prompt="hello")
    assert out.done and out.eval_count == 24  # the registry's response_tokens for it
    assert MODEL in [m.model for m in client.ps().models]
    shown = client.show(MODEL)
    assert shown.details is not None
    assert shown.details.quantization_level == "F16"


def test_second_pull_reuses_blobs_but_asks_the_registry(
    sim: SimThread, registry: RegistryThread
) -> None:
    client = ollama.Client(sim.url)
    client.pull(MODEL)
    before = len(registry.requests)
    again = list(client.pull(MODEL, stream=True))
    new = registry.requests[before:]
    assert new == [("GET", "/v2/library/smollm2/manifests/135m")]  # fresh TCP, no blob GETs
    layer_lines = again[1:-3]
    assert all(p.completed == p.total for p in layer_lines)
    assert sim.logs().count('msg="downloading ') == 5  # only the first pull downloaded


def test_unknown_model_is_ollamas_error(sim: SimThread) -> None:
    client = ollama.Client(sim.url)
    with pytest.raises(ollama.ResponseError) as streamed:
        list(client.pull("nothing-here:1b", stream=True))
    assert streamed.value.error == "pull model manifest: file does not exist"
    with pytest.raises(ollama.ResponseError) as single:
        client.pull("nothing-here:1b")
    assert single.value.error == "pull model manifest: file does not exist"
    assert single.value.status_code == 500


def test_invalid_names_are_400(sim: SimThread) -> None:
    for body in ({"model": ""}, {"model": "../../etc/passwd"}, {"model": "a/b/c/d"}, {}):
        r = httpx.post(sim.url + "/api/pull", json=body, timeout=10)
        assert r.status_code == 400
        assert r.json() == {"error": "invalid model name"}
    with pytest.raises(InvalidName):
        parse_name("x/../y")


def test_unreachable_registry_gives_gos_dial_error(models: Path) -> None:
    port = free_port()  # nothing listens there
    registry = f"http://127.0.0.1:{port}"
    with (
        SimThread(env={"OLLAMA_MODELS": str(models)}, registry=registry) as sim,
        pytest.raises(ollama.ResponseError) as e,
    ):
        list(ollama.Client(sim.url).pull(MODEL, stream=True))
    url = f"http://127.0.0.1:{port}/v2/library/smollm2/manifests/135m"
    assert e.value.error == (
        f'pull model manifest: Get "{url}": dial tcp 127.0.0.1:{port}: connect: connection refused'
    )
    assert not (models / MANIFEST).exists()


def test_blocked_egress_reads_like_go() -> None:
    """What IPAddressDeny= makes connect() return (EPERM), in Go's words."""
    key = ConnectionKey("10.9.8.7", 5000, False, True, None, None, None)
    err = aiohttp.ClientConnectorError(key, OSError(errno.EPERM, os.strerror(errno.EPERM)))
    url = "http://10.9.8.7:5000/v2/library/x/manifests/latest"
    assert _go_http_error("GET", url, err) == (
        f'Get "{url}": dial tcp 10.9.8.7:5000: connect: operation not permitted'
    )


def test_no_registry_configured_says_so(models: Path) -> None:
    with (
        SimThread(env={"OLLAMA_MODELS": str(models)}) as sim,
        pytest.raises(ollama.ResponseError) as e,
    ):
        ollama.Client(sim.url).pull(MODEL)
    assert "--registry" in e.value.error


def test_a_failed_write_names_the_path_and_is_logged(
    registry: RegistryThread, models: Path
) -> None:
    manifest = json.loads(registry.registry.manifests["library/smollm2:135m"])
    first = manifest["layers"][0]["digest"].replace(":", "-")
    (models / "blobs" / f"{first}-partial").mkdir()  # the download cannot open its file
    with SimThread(env={"OLLAMA_MODELS": str(models)}, registry=registry.url) as sim:
        with pytest.raises(ollama.ResponseError) as e:
            list(ollama.Client(sim.url).pull(MODEL, stream=True))
        logs = sim.logs()
    partial = models / "blobs" / f"{first}-partial"
    assert e.value.error == f"open {partial}: is a directory"
    assert (
        f'level=ERROR source=sim msg="pull failed to write" error="open {partial}: is a directory"'
        in logs
    )
    assert not (models / MANIFEST).exists()


def test_read_only_file_system_reads_like_go() -> None:
    err = OSError(errno.EROFS, os.strerror(errno.EROFS), "/m/blobs/sha256-1-partial")
    assert _os_error("open", "/m/blobs/x", err) == (
        "open /m/blobs/sha256-1-partial: read-only file system"
    )


def test_delete(sim: SimThread, models: Path) -> None:
    client = ollama.Client(sim.url)
    client.pull(MODEL)
    blobs = [models / "blobs" / d.replace(":", "-") for d in _digests(models)]
    assert client.delete(MODEL).status == "success"
    assert MODEL not in [m.model for m in client.list().models]
    assert not (models / MANIFEST).exists()
    assert not any(b.exists() for b in blobs)
    with pytest.raises(ollama.ResponseError) as e:
        client.delete(MODEL)
    assert e.value.status_code == 404
    assert e.value.error == f"model '{MODEL}' not found"
    # A profile model is hidden for the rest of the run.
    assert client.delete("tiny").status == "success"
    assert "tiny:latest" not in [m.model for m in client.list().models]
    r = httpx.request("DELETE", sim.url + "/api/delete", json={"model": "a//b"}, timeout=10)
    assert r.status_code == 400


def test_registry_serves_ranges(registry: RegistryThread) -> None:
    digest, blob = next(iter(registry.registry.blobs.items()))
    url = f"{registry.url}/v2/library/smollm2/blobs/{digest}"
    r = httpx.get(url, headers={"Range": "bytes=2-9"})
    assert r.status_code == 206
    assert r.content == blob[2:10]
    assert r.headers["content-range"] == f"bytes 2-9/{len(blob)}"
    r = httpx.get(f"{registry.url}/v2/library/nothing/manifests/latest")
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_processes_end_to_end_and_store_survives_restart(tmp_path: Path) -> None:
    """The registry and the simulator as processes; a restarted simulator reads the store."""
    reg = subprocess.Popen(
        [SIM_PYTHON, "-m", "ollama_ops.sim.registry", "--port", "0", "--quiet"],
        env=sim_env(str(tmp_path), 0),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reg.stdout is not None
        line = reg.stdout.readline()
        m = re.fullmatch(r"registry listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert m, line
        port = free_port()
        for attempt in range(2):
            with sim_process(str(tmp_path), port, ["--registry", m.group(1)]) as proc:
                wait_listening(port, proc)
                client = ollama.Client(f"http://127.0.0.1:{port}")
                if attempt == 0:
                    assert list(client.pull("tinyllama", stream=True))[-1].status == "success"
                names = [x.model for x in client.list().models]
                assert "tinyllama:latest" in names
                assert client.generate(model="tinyllama", prompt="x").done
    finally:
        reg.terminate()
        reg.wait(10)
        if reg.stdout is not None:
            reg.stdout.close()
    models = tmp_path / ".ollama/models"
    assert (models / "manifests/registry.ollama.ai/library/tinyllama/latest").is_file()


def test_bad_registry_url_is_refused_at_start(tmp_path: Path) -> None:
    r = subprocess.run(
        [SIM_PYTHON, "-m", "ollama_ops.sim", "serve", "--registry", "ftp://x"],
        env=sim_env(str(tmp_path), free_port()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert r.stderr.startswith("Error: OLLAMA_SIM_REGISTRY must be an http:// or https:// URL")
