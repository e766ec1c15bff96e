"""The front door against a real nginx (Debian's), non-root on 127.0.0.1, before two simulators.

nginx -t on every rendered flavour; then real traffic: a burst of 200
streaming requests spread over both instances, no failure once an instance
is stopped and fail_timeout has passed, routes per model family, the
client allow-list and TLS. Tests never assert times.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest

from ollama_ops.errors import PlanError
from ollama_ops.host import nginx as host_nginx
from ollama_ops.render import nginx as render_nginx
from tests.instances_helpers import CERT, KEY, Nginx, need_nginx, plan, running_nginx
from tests.sim_helpers import SimThread, free_port

GENERATE = '"/api/generate"'


def door_text(ports: tuple[int, int], frontdoor: str) -> str:
    """The rendered front door for two instances on ``ports``."""
    d = plan(
        f"[instances.a]\ngpus = [0]\nport = {ports[0]}\n\n"
        f"[instances.b]\ngpus = [1]\nport = {ports[1]}\n\n[frontdoor]\n{frontdoor}"
    )
    assert d.instances is not None and d.instances.frontdoor is not None
    return render_nginx.render(d.instances.frontdoor)


@pytest.fixture
def sims() -> Iterator[tuple[SimThread, SimThread]]:
    with SimThread() as a, SimThread() as b:
        yield a, b


def port_of(sim: SimThread) -> int:
    return int(sim.url.rsplit(":", 1)[1])


def served(sim: SimThread) -> int:
    return sum(1 for line in sim.access_buf.getvalue().splitlines() if GENERATE in line)


async def stream(client: httpx.AsyncClient, url: str, model: str = "tiny:latest") -> int:
    """One streaming generation; its status, after reading every line to the last (done)."""
    body = {"model": model, "prompt": "hello", "stream": True}
    async with client.stream("POST", url + "/api/generate", json=body) as reply:
        lines = [json.loads(line) async for line in reply.aiter_lines() if line.strip()]
    if reply.status_code == 200:
        assert lines and lines[-1]["done"] is True, lines[-1:]
    return reply.status_code


async def burst(url: str, count: int, model: str = "tiny:latest", **kw: object) -> list[int]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits, **kw) as client:  # type: ignore[arg-type]
        return list(await asyncio.gather(*(stream(client, url, model) for _ in range(count))))


# ---------------------------------------------------------------- nginx -t


@pytest.mark.parametrize(
    "frontdoor",
    [
        'listen = "127.0.0.1:8080"\n',
        'listen = "127.0.0.1:8080"\nbalance = "model"\nroutes = { llama = ["a"], "qwen2.5" = ["b"] }\n',
        'listen = "0.0.0.0:8443"\nallowed_networks = ["10.0.0.0/8", "192.168.0.0/16"]\n'
        f'tls_certificate = "{CERT}"\ntls_certificate_key = "{KEY}"\nserver_name = "llm.example.com"\n',
    ],
    ids=["least_conn", "routes", "tls_allow"],
)
def test_every_flavour_passes_nginx_t(frontdoor: str) -> None:
    text = door_text((11435, 11436), frontdoor)
    server = Nginx(text.replace(str(CERT), "CERT").replace(str(KEY), "KEY"))
    try:
        conf = (server.prefix / "frontdoor.conf").read_text()
        conf = conf.replace("CERT", str(server.prefix / CERT.name))
        (server.prefix / "frontdoor.conf").write_text(
            conf.replace("KEY", str(server.prefix / KEY.name))
        )
        done = server.test()
        assert done.returncode == 0, done.stderr
        assert "test is successful" in done.stderr
    finally:
        server.stop()


def test_check_candidate_accepts_ours_and_rejects_a_broken_file() -> None:
    need_nginx()
    text = door_text((11435, 11436), 'listen = "127.0.0.1:8080"\n')
    host_nginx.check_candidate(text)
    with pytest.raises(PlanError) as caught:
        host_nginx.check_candidate(text.replace("least_conn;", "least_conn_typo;", 1))
    assert "nginx -t rejects the front door" in str(caught.value)
    assert "least_conn_typo" in str(caught.value) and "\n" not in str(caught.value)
    missing = text.replace(
        "listen 127.0.0.1:8080;",
        "listen 127.0.0.1:8080 ssl;\n    ssl_certificate /nonexistent.crt;\n    ssl_certificate_key /nonexistent.key;",
    )
    with pytest.raises(PlanError, match="nonexistent"):
        host_nginx.check_candidate(missing)


# ---------------------------------------------------------------- real traffic


def test_a_burst_of_200_streams_is_spread_over_both(sims: tuple[SimThread, SimThread]) -> None:
    a, b = sims
    listen = free_port()
    text = door_text((port_of(a), port_of(b)), f'listen = "127.0.0.1:{listen}"\n')
    with running_nginx(text, listen):
        before = served(a), served(b)
        statuses = asyncio.run(burst(f"http://127.0.0.1:{listen}", 200))
        assert statuses == [200] * 200
        time.sleep(0.2)  # the access line is written after the last byte
        counts = served(a) - before[0], served(b) - before[1]
    print(f"served by a, b: {counts}")
    assert sum(counts) == 200, counts
    assert min(counts) >= 60, counts  # each instance serves at least 30 %


def test_no_request_fails_once_fail_timeout_has_passed() -> None:
    with SimThread() as b:
        a = SimThread().__enter__()
        try:
            failover(a, b)
        finally:
            if a.loop.is_running():
                a.__exit__(None, None, None)


def failover(a: SimThread, b: SimThread) -> None:
    listen = free_port()
    text = door_text(
        (port_of(a), port_of(b)),
        f'listen = "127.0.0.1:{listen}"\nfail_timeout = 1\nmax_fails = 1\n',
    )
    url = f"http://127.0.0.1:{listen}"
    with running_nginx(text, listen):
        assert asyncio.run(burst(url, 20)) == [200] * 20
        a.__exit__(None, None, None)  # instance a stops: its port refuses connections
        time.sleep(1.5)  # > fail_timeout
        before = served(b)
        statuses = asyncio.run(burst(url, 100))
        time.sleep(0.2)
        assert statuses == [200] * 100
        assert served(b) - before == 100


def test_routes_per_model_family(sims: tuple[SimThread, SimThread]) -> None:
    a, b = sims
    listen = free_port()
    text = door_text(
        (port_of(a), port_of(b)),
        f'listen = "127.0.0.1:{listen}"\nbalance = "model"\n'
        'routes = { tiny = ["a"], other = ["b"] }\n',
    )
    url = f"http://127.0.0.1:{listen}"
    with running_nginx(text, listen):
        assert asyncio.run(burst(url, 20, "tiny:latest")) == [200] * 20
        assert asyncio.run(burst(url, 20, "other:1b")) == [200] * 20
        time.sleep(0.2)
    assert served(a) == 20 and served(b) == 20
    assert all("tiny" in r["model"] for r in a.state()["runners"])
    assert all("other" in r["model"] for r in b.state()["runners"])


def test_allow_list_and_tls(sims: tuple[SimThread, SimThread]) -> None:
    a, b = sims
    listen = free_port()
    denied = door_text(
        (port_of(a), port_of(b)),
        f'listen = "127.0.0.1:{listen}"\nallowed_networks = ["10.0.0.0/8"]\n',
    )
    with running_nginx(denied, listen):
        assert httpx.get(f"http://127.0.0.1:{listen}/api/version", timeout=10).status_code == 403
    tls_port = free_port()
    tls = door_text(
        (port_of(a), port_of(b)),
        f'listen = "127.0.0.1:{tls_port}"\ntls_certificate = "/CERT"\ntls_certificate_key = "/KEY"\n',
    )
    server = Nginx(tls)
    try:
        conf = server.prefix / "frontdoor.conf"
        conf.write_text(
            conf.read_text()
            .replace("/CERT", str(server.prefix / CERT.name))
            .replace("/KEY", str(server.prefix / KEY.name))
        )
        server.start(tls_port)
        trust = ssl.create_default_context(cafile=str(CERT))
        reply = httpx.get(f"https://localhost:{tls_port}/api/version", verify=trust, timeout=10)
        assert reply.status_code == 200 and "version" in reply.json()
        assert asyncio.run(burst(f"https://localhost:{tls_port}", 10, verify=trust)) == [200] * 10
    finally:
        server.stop()
