"""What the nginx front door adds to the time to first token, measured side by side.

Starts two simulators (``python -m ollama_ops.sim serve``, a model with no
load time and instant prompt evaluation, so TTFT is the server's own
overhead plus the path to it) on 127.0.0.1, renders the front door over
them exactly as ``ollama-ops apply`` would (least_conn, keepalive,
proxy_buffering off), runs Debian's nginx on a temporary prefix (as
``nobody`` when started as root), then sends ``--requests`` streaming
``/api/generate`` requests alternately to instance a directly and through
nginx, one at a time, each client keeping its connection alive. TTFT is the
time from sending the request to the first NDJSON line.

Reported: median and p90 TTFT direct and through nginx, the median added
(target: at most 5 ms) and the ratio. Loopback only; bounded by --timeout.
Prints one ``RESULT`` line.

Usage: python benchmarks/frontdoor_latency.py [--requests 400] [--timeout 120]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sim_throughput import free_port  # noqa: E402

from ollama_ops.model import config  # noqa: E402
from ollama_ops.model.facts import Gpu, GpuVendor, HostFacts, NumaNode  # noqa: E402
from ollama_ops.plan import compose  # noqa: E402
from ollama_ops.render import nginx as render_nginx  # noqa: E402

PROFILE = {
    "gpus": [{"id": "GPU-bench", "name": "bench", "vram_bytes": 24 * 1024**3}],
    "models": [
        {
            "name": "bench:tiny",
            "size": 100_000_000,
            "family": "llama",
            "parameter_size": "100M",
            "quantization_level": "Q8_0",
            "load_seconds": 0,
            "prompt_tps": 1e9,
            "decode_tps": 1000,
            "response_tokens": 4,
        }
    ],
}


def wait_up(url: str, deadline: float) -> None:
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer") from None
            time.sleep(0.05)


@contextmanager
def simulator(port: int, profile: Path, workdir: Path, deadline: float) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
    env.update(
        HOME=str(workdir),
        OLLAMA_HOST=f"127.0.0.1:{port}",
        OLLAMA_SIM_PROFILE=str(profile),
        OLLAMA_NUM_PARALLEL="4",
        PYTHONPATH=str(ROOT / "src"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ollama_ops.sim", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url + "/", deadline)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def frontdoor(ports: tuple[int, int], listen: int) -> str:
    """The front door ollama-ops renders for two instances on ``ports``."""
    host = HostFacts(
        memory_bytes=64 * 1024**3,
        cpus=8,
        numa_nodes=(NumaNode(0, "0-7"),),
        gpus=tuple(Gpu(i, GpuVendor.NVIDIA, "bench", 24 * 1024**3) for i in range(2)),
    )
    text = (
        f"[instances.a]\ngpus = [0]\nport = {ports[0]}\n\n"
        f"[instances.b]\ngpus = [1]\nport = {ports[1]}\n\n"
        f'[frontdoor]\nlisten = "127.0.0.1:{listen}"\n'
    )
    d = compose.build(host, config.loads(text, "bench"))
    assert d.instances is not None
    assert d.instances.frontdoor is not None
    return render_nginx.render(d.instances.frontdoor)


@contextmanager
def nginx(conf: str, listen: int, deadline: float) -> Iterator[str]:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if binary is None:
        raise SystemExit("nginx not found: apt-get install nginx-light")
    prefix = Path(tempfile.mkdtemp(prefix="frontdoor-bench-"))
    prefix.chmod(0o755)
    (prefix / "frontdoor.conf").write_text(conf)
    directives = [d for d, _n in render_nginx.TEMP_PATH_DIRECTIVES]
    main = render_nginx.wrapper(str(prefix / "frontdoor.conf"), str(prefix), directives)
    (prefix / "nginx.conf").write_text(main.replace("events {", "daemon off;\nevents {", 1))
    drop: dict[str, object] = {}
    if os.geteuid() == 0:
        for path in [prefix, *prefix.iterdir()]:
            shutil.chown(path, "nobody", "nogroup")
        drop = {"user": "nobody", "group": "nogroup", "extra_groups": []}
    argv = [binary, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", "stderr"]
    proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL, **drop)  # type: ignore[call-overload]
    try:
        url = f"http://127.0.0.1:{listen}"
        wait_up(url + "/", deadline)
        yield url
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(10)
        shutil.rmtree(prefix, ignore_errors=True)


def ttft(client: httpx.Client, url: str) -> float:
    body = {"model": "bench:tiny", "prompt": "hi", "stream": True}
    start = time.perf_counter()
    with client.stream("POST", url + "/api/generate", json=body) as reply:
        reply.raise_for_status()
        lines = reply.iter_lines()
        first = next(line for line in lines if line.strip())
        took = time.perf_counter() - start
        json.loads(first)
        for _ in lines:  # finish the stream so the connection is reused
            pass
    return took


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="requests per path (400)")
    ap.add_argument("--timeout", type=float, default=120.0, help="bound on the whole run (120 s)")
    args = ap.parse_args(argv)
    deadline = time.monotonic() + args.timeout
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="frontdoor-bench-")))
        profile = work / "profile.json"
        profile.write_text(json.dumps(PROFILE))
        ports = free_port(), free_port()
        direct_url = stack.enter_context(simulator(ports[0], profile, work / "a", deadline))
        stack.enter_context(simulator(ports[1], profile, work / "b", deadline))
        listen = free_port()
        door_url = stack.enter_context(nginx(frontdoor(ports, listen), listen, deadline))
        direct_client = stack.enter_context(httpx.Client(timeout=30))
        door_client = stack.enter_context(httpx.Client(timeout=30))
        for _ in range(20):  # warm up both paths and their connections
            ttft(direct_client, direct_url)
            ttft(door_client, door_url)
        direct: list[float] = []
        door: list[float] = []
        for _ in range(args.requests):
            if time.monotonic() > deadline:
                break
            direct.append(ttft(direct_client, direct_url))
            door.append(ttft(door_client, door_url))
    med_direct, med_door = statistics.median(direct), statistics.median(door)
    added_ms = (med_door - med_direct) * 1000
    print(
        f"direct:     median TTFT {med_direct * 1000:.2f} ms, p90 {p90(direct) * 1000:.2f} ms "
        f"({len(direct)} requests)"
    )
    print(
        f"front door: median TTFT {med_door * 1000:.2f} ms, p90 {p90(door) * 1000:.2f} ms "
        f"({len(door)} requests)"
    )
    print(
        f"RESULT requests={len(door)} direct_median_ms={med_direct * 1000:.2f} "
        f"frontdoor_median_ms={med_door * 1000:.2f} added_median_ms={added_ms:.2f} "
        f"ratio={med_door / med_direct:.2f} target_added_ms=5 "
        f"{'met' if added_ms <= 5 else 'missed'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
