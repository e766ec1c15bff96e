"""Throughput and timing accuracy of the Ollama simulator under many streams.

Starts ``python -m ollama_ops.sim serve`` in a subprocess on 127.0.0.1 with
a fast single-model profile (no load time, linear scaling, so every stream
decodes at exactly ``--rate`` tokens/s however many run at once), then opens
``--streams`` concurrent streaming ``/api/generate`` requests from
``--clients`` other processes with aiohttp clients (starts spread over
``--stagger`` seconds each), and reads every NDJSON token line. On request
(``--priority realtime``, root) the simulator gets SCHED_FIFO so that unrelated load on a
shared machine does not preempt it; the clients run at normal priority.

Reported figures:

* streams, tokens received, aggregate tokens/s (tokens received divided by
  the time from the first request to the last byte);
* server timing error, per token: the simulator's own measure of actual
  emission time minus scheduled emission time (``/_sim/stats``, 10 us
  buckets), p50/p99/max;
* client arrival lateness, per token: arrival time minus the token's ideal
  time on the stream's schedule (``i / rate`` after the stream's most
  punctual token), measured by the client on receipt; it adds the client's
  own delays and the loopback to the server's error, overall and in the
  steady state (while every stream is running).

Usage: python benchmarks/sim_throughput.py [--streams 500] [--rate 42]
       [--tokens 600] [--clients 2] [--priority realtime|nice|normal]
       [--timeout 120]
Loopback only; bounded by --timeout. Prints one ``RESULT`` summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_profile(rate: float, streams: int, tokens: int) -> dict[str, Any]:
    return {
        "gpus": [{"id": "GPU-bench", "name": "bench", "vram_bytes": 80 * 1024**3}],
        "models": [
            {
                "name": "bench:tiny",
                "size": 100_000_000,
                "family": "llama",
                "parameter_size": "100M",
                "quantization_level": "Q8_0",
                "load_seconds": 0,
                "prompt_tps": 1e9,
                "decode_tps": rate,
                "scaling_alpha": 1.0,
                "saturation": max(streams, 1),
                "response_tokens": tokens,
            }
        ],
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def one_stream(
    session: aiohttp.ClientSession, url: str, i: int, tokens: int, start_at: float
) -> tuple[list[float], list[int]]:
    """Return (arrival times, token index at each arrival)."""
    body = {"model": "bench:tiny", "prompt": f"stream {i}", "options": {"num_predict": tokens}}
    await asyncio.sleep(max(0.0, start_at - time.time()))
    times: list[float] = []
    counts: list[int] = []
    n = 0
    async with session.post(url + "/api/generate", json=body) as resp:
        resp.raise_for_status()
        async for chunk in resp.content.iter_any():
            now = time.time()
            for _ in range(chunk.count(b'"done":false')):
                times.append(now)
                counts.append(n)
                n += 1
    return times, counts


@dataclass(frozen=True)
class Plan:
    url: str
    streams: int
    rate: float
    tokens: int
    stagger: float
    clients: int
    timeout: float


async def client(plan: Plan, ids: list[int], start_at: float) -> dict[str, Any]:
    """One client process's share of the streams."""
    url, tokens, stagger, rate = plan.url, plan.tokens, plan.stagger, plan.rate
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None)  # no per-read timer: --timeout bounds the run
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        results = await asyncio.gather(
            *(one_stream(session, url, i, tokens, start_at + stagger * i) for i in ids),
            return_exceptions=True,
        )
    interval = 1.0 / rate
    lateness: list[tuple[float, float]] = []  # (arrival, lateness)
    firsts: list[float] = []
    lasts: list[float] = []
    received = failed = 0
    last = start_at
    for res in results:
        if isinstance(res, BaseException):
            failed += 1
            continue
        times, idx = res
        received += len(times)
        if not times:
            continue
        last = max(last, times[-1])
        firsts.append(times[0])
        lasts.append(times[-1])
        anchor = min(t - k * interval for t, k in zip(times, idx, strict=True))
        lateness.extend((t, t - k * interval - anchor) for t, k in zip(times, idx, strict=True))
    return {
        "lateness": lateness,
        "received": received,
        "failed": failed,
        "last": last,
        "firsts": firsts,
        "lasts": lasts,
    }


def _worker(plan: Plan, ids: list[int], start_at: float, out: Any) -> None:
    gc.disable()  # a bounded run: no collector pauses in the measuring client
    try:
        out.put(asyncio.run(asyncio.wait_for(client(plan, ids, start_at), plan.timeout)))
    except BaseException as e:
        out.put({"error": repr(e)})


def http(url: str, data: bytes | None = None) -> Any:
    """POST ``data`` (GET without) and the JSON answer."""
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
        return json.loads(r.read() or b"null")


def run_clients(plan: Plan) -> dict[str, Any]:
    url, streams, clients, timeout = plan.url, plan.streams, plan.clients, plan.timeout
    http(url + "/api/generate", json.dumps({"model": "bench:tiny", "prompt": ""}).encode())
    http(url + "/_sim/stats/reset", b"")
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 1.0  # all client processes start together
    procs = [
        ctx.Process(
            target=_worker,
            args=(plan, list(range(k, streams, clients)), start_at, out),
        )
        for k in range(clients)
    ]
    for p in procs:
        p.start()
    parts = [out.get(timeout=timeout + 30) for _ in procs]
    for p in procs:
        p.join(30)
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        raise RuntimeError("client failed: " + "; ".join(errors))
    server = http(url + "/_sim/stats")
    lateness = sorted(x for p in parts for _, x in p["lateness"])
    # Steady state: while every stream is running (after the last first token,
    # before the first last token).
    lo = max(t for p in parts for t in p["firsts"])
    hi = min(t for p in parts for t in p["lasts"])
    steady = sorted(x for p in parts for t, x in p["lateness"] if lo <= t <= hi)
    received = sum(p["received"] for p in parts)
    elapsed = max(p["last"] for p in parts) - start_at
    return {
        "streams": streams,
        "client_processes": clients,
        "failed": sum(p["failed"] for p in parts),
        "tokens": received,
        "elapsed_s": round(elapsed, 3),
        "tokens_per_s": round(received / elapsed, 1) if elapsed > 0 else 0.0,
        "server": server,
        "client_lateness_ms": {
            "p50": round(percentile(lateness, 0.50) * 1e3, 3),
            "p99": round(percentile(lateness, 0.99) * 1e3, 3),
            "max": round(max(lateness, default=0.0) * 1e3, 3),
        },
        "client_lateness_steady_ms": {
            "window_s": round(max(0.0, hi - lo), 3),
            "tokens": len(steady),
            "tokens_per_s": round(len(steady) / (hi - lo), 1) if hi > lo else 0.0,
            "p50": round(percentile(steady, 0.50) * 1e3, 3),
            "p99": round(percentile(steady, 0.99) * 1e3, 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--rate", type=float, default=42.0, help="tokens/s per stream")
    ap.add_argument("--tokens", type=int, default=600, help="tokens per stream")
    ap.add_argument(
        "--stagger",
        type=float,
        default=0.001,
        help="seconds between stream starts (default 0.001: 500 streams ramp up over 0.5 s,"
        " as load generators do; all of them then run at once)",
    )
    ap.add_argument(
        "--clients",
        type=int,
        default=1,
        help="client processes sharing the streams (1: on 2 cores, the simulator and the"
        " load generator then each have a core)",
    )
    ap.add_argument("--timeout", type=float, default=120.0, help="hard bound, seconds")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the simulator")
    ap.add_argument(
        "--priority",
        choices=("realtime", "nice", "normal"),
        default="normal",
        help="scheduling of the simulator process: normal = as started (default), "
        "realtime = SCHED_FIFO 10 (root), nice = niceness -10; the last two keep "
        "unrelated load on a shared machine from preempting it",
    )
    args = ap.parse_args(argv)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        profile = os.path.join(tmp, "profile.json")
        with open(profile, "w") as f:
            json.dump(bench_profile(args.rate, args.streams, args.tokens), f)
        env = dict(os.environ)
        env.update(
            HOME=tmp,
            OLLAMA_HOST=f"127.0.0.1:{port}",
            OLLAMA_NUM_PARALLEL=str(args.streams),
            OLLAMA_MAX_QUEUE=str(args.streams * 2),
            OLLAMA_SIM_PROFILE=profile,
            OLLAMA_SIM_CONTROL="1",
            PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", ""),
        )
        with open(os.path.join(tmp, "sim.log"), "w") as log:
            proc = subprocess.Popen(
                [args.python, "-m", "ollama_ops.sim", "serve"]
                if not args.python.endswith(".py")
                else [sys.executable, args.python],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            try:
                if args.priority == "realtime":
                    os.sched_setscheduler(proc.pid, os.SCHED_FIFO, os.sched_param(10))
                elif args.priority == "nice":
                    os.setpriority(os.PRIO_PROCESS, proc.pid, -10)
            except OSError as e:
                print(f"cannot raise the simulator's priority: {e}", file=sys.stderr)
                args.priority = "normal"
            deadline = time.monotonic() + 20
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        print("the simulator did not start", file=sys.stderr)
                        return 1
                    time.sleep(0.05)
            result = run_clients(
                Plan(
                    url=url,
                    streams=args.streams,
                    rate=args.rate,
                    tokens=args.tokens,
                    stagger=args.stagger,
                    clients=args.clients,
                    timeout=args.timeout,
                )
            )
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    result["simulator_priority"] = args.priority
    result["stagger_s"] = args.stagger
    print(json.dumps(result, indent=2))
    srv = result["server"]["timing_error_us"]
    cli = result["client_lateness_ms"]
    print(
        f"RESULT priority={args.priority} streams={result['streams']} failed={result['failed']} "
        f"tokens={result['tokens']} tokens_per_s={result['tokens_per_s']} "
        f"server_error_p50_us={srv['p50']} server_error_p99_us={srv['p99']} "
        f"client_lateness_p50_ms={cli['p50']} client_lateness_p99_ms={cli['p99']} "
        f"steady_tokens_per_s={result['client_lateness_steady_ms']['tokens_per_s']} "
        f"steady_client_lateness_p99_ms={result['client_lateness_steady_ms']['p99']}"
    )
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
