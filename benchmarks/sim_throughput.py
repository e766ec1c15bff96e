"""Throughput and timing accuracy of the Ollama simulator under many streams.

Starts ``python -m ollama_ops.sim serve`` in a subprocess on 127.0.0.1 with
a fast single-model profile (no load time, linear scaling, so every stream
decodes at exactly ``--rate`` tokens/s however many run at once), then opens
``--streams`` concurrent streaming ``/api/generate`` requests from this
process with an aiohttp client and reads every NDJSON token line.

Reported figures:

* streams, tokens received, aggregate tokens/s (tokens received divided by
  the time from the first request to the last byte);
* server timing error, per token: the simulator's own measure of actual
  emission time minus scheduled emission time (``/_sim/stats``, 10 us
  buckets), p50/p99/max;
* client arrival lateness, per token: arrival time minus the token's ideal
  time on the stream's schedule (``i / rate`` after the stream's most
  punctual token), measured here on receipt; it adds the client's own
  delays and the loopback to the server's error.

Usage: python benchmarks/sim_throughput.py [--streams 500] [--rate 40]
       [--tokens 400] [--timeout 120]
Loopback only; bounded by --timeout. Prints one ``RESULT`` summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
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
    session: aiohttp.ClientSession, url: str, i: int, tokens: int, stagger: float
) -> tuple[list[float], list[int]]:
    """Return (arrival times, token index at each arrival)."""
    body = {"model": "bench:tiny", "prompt": f"stream {i}", "options": {"num_predict": tokens}}
    if stagger > 0:
        await asyncio.sleep(stagger * i)
    times: list[float] = []
    counts: list[int] = []
    n = 0
    async with session.post(url + "/api/generate", json=body) as resp:
        resp.raise_for_status()
        async for chunk in resp.content.iter_any():
            now = time.monotonic()
            k = chunk.count(b'"done":false')
            for _ in range(k):
                times.append(now)
                counts.append(n)
                n += 1
    return times, counts


async def run_client(
    url: str, streams: int, rate: float, tokens: int, stagger: float
) -> dict[str, Any]:
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        async with session.post(
            url + "/api/generate", json={"model": "bench:tiny", "prompt": ""}
        ) as r:
            await r.read()
        async with session.post(url + "/_sim/stats/reset") as r:
            await r.read()
        t0 = time.monotonic()
        results = await asyncio.gather(
            *(one_stream(session, url, i, tokens, stagger) for i in range(streams)),
            return_exceptions=True,
        )
        t1 = time.monotonic()
        async with session.get(url + "/_sim/stats") as r:
            server = await r.json()
    interval = 1.0 / rate
    lateness: list[float] = []
    received = 0
    failed = 0
    for res in results:
        if isinstance(res, BaseException):
            failed += 1
            continue
        times, idx = res
        received += len(times)
        if not times:
            continue
        anchor = min(t - k * interval for t, k in zip(times, idx, strict=True))
        lateness.extend(t - k * interval - anchor for t, k in zip(times, idx, strict=True))
    elapsed = t1 - t0
    return {
        "streams": streams,
        "failed": failed,
        "tokens": received,
        "elapsed_s": round(elapsed, 3),
        "tokens_per_s": round(received / elapsed, 1) if elapsed > 0 else 0.0,
        "server": server,
        "client_lateness_ms": {
            "p50": round(percentile(lateness, 0.50) * 1e3, 3),
            "p99": round(percentile(lateness, 0.99) * 1e3, 3),
            "max": round(max(lateness, default=0.0) * 1e3, 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--rate", type=float, default=40.0, help="tokens/s per stream")
    ap.add_argument("--tokens", type=int, default=400, help="tokens per stream")
    ap.add_argument(
        "--stagger",
        type=float,
        default=None,
        help="seconds between stream starts (default: spread the starts over one token interval)",
    )
    ap.add_argument("--timeout", type=float, default=120.0, help="hard bound, seconds")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the simulator")
    ap.add_argument(
        "--nice",
        type=int,
        default=-10 if os.geteuid() == 0 else 0,
        help="niceness for the simulator process (default -10 as root, else 0): the "
        "simulator must not be the bottleneck, so it goes before other load",
    )
    args = ap.parse_args(argv)
    if args.stagger is None:
        args.stagger = 1.0 / args.rate / max(args.streams, 1)

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
                [args.python, "-m", "ollama_ops.sim", "serve"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            if args.nice:
                try:
                    os.setpriority(os.PRIO_PROCESS, proc.pid, args.nice)
                except OSError as e:
                    print(f"cannot renice the simulator: {e}", file=sys.stderr)
                    args.nice = 0
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
            result = asyncio.run(
                asyncio.wait_for(
                    run_client(url, args.streams, args.rate, args.tokens, args.stagger),
                    args.timeout,
                )
            )
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    result["simulator_nice"] = args.nice
    result["stagger_s"] = args.stagger
    print(json.dumps(result, indent=2))
    srv = result["server"]["timing_error_us"]
    cli = result["client_lateness_ms"]
    print(
        f"RESULT streams={result['streams']} failed={result['failed']} "
        f"tokens={result['tokens']} tokens_per_s={result['tokens_per_s']} "
        f"server_error_p50_us={srv['p50']} server_error_p99_us={srv['p99']} "
        f"client_lateness_p50_ms={cli['p50']} client_lateness_p99_ms={cli['p99']}"
    )
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
