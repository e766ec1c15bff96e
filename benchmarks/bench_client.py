"""The benchmark client against a bare aiohttp client, side by side in one run.

Starts the simulator (``python -m ollama_ops.sim serve``) in a subprocess on
127.0.0.1 with a single model that streams exactly ``--rate`` tokens/s per
stream however many run at once (linear scaling, no load time, prompt
evaluation in about no time), then, for each stream count, runs each client
in its own process for ``--duration`` seconds (closed loop: every stream
sends its next request when the last one ends), alternating the clients and
repeating ``--repeats`` times. Three measurements:

* **cpu**: client CPU seconds (user+system of the client process, from the
  first request to the last byte) per 1,000 streamed tokens, at each of
  ``--streams`` (default 64 and 256), with ``--tokens`` (128) per request on
  ``/v1/chat/completions`` (as the peers were measured), and the tokens/s
  each client sustained;
* **keep-up**: tokens/s received at each of ``--keepup`` (256 and 512)
  streams of 600 tokens at 42 tokens/s, and the simulator's own timing error
  (``/_sim/stats``: emission time minus schedule, p50/p99) during each
  client's run: a client that steals the server's CPU raises it;
* **accuracy**: at ``--accuracy-streams`` (64) streams on ``/api/generate``,
  each request's TTFT against the simulator's schedule for it (first token
  due = total_duration - eval_duration + eval_duration/eval_count, as the
  simulator reports it) and its TPOT against the configured 1/rate; p99 of
  the absolute differences.

The bare aiohttp client is what a person would write: one ``ClientSession``
with an unlimited connector, ``async for line in resp.content`` over the
stream, a timestamp per token line and no JSON parsing of token lines (the
same work the benchmark client does).

Usage: python benchmarks/bench_client.py [--duration 20] [--repeats 1]
       [--streams 64,256] [--keepup 256,512] [--only cpu,keepup,accuracy]
       [--accuracy-ramp S] [--priority normal|nice] [--pin]
Loopback only; every run is bounded. Prints a table and ``RESULT`` lines.
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sim_throughput import bench_profile, free_port, http

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "bench:tiny"
UNIQUE_PROMPTS = 20_000  # "prompt {i}": each request of an accuracy run names itself


def profile(rate: float, streams: int) -> dict[str, Any]:
    """sim_throughput's one-model profile, with responses longer than any request asks."""
    return bench_profile(rate, streams, tokens=100_000)


@dataclass(frozen=True)
class Placement:
    """Where the simulator and the clients run: niceness, and whether each has its own CPU.

    On a small machine the two processes otherwise share cores at the scheduler's whim, and a
    request or a token waits for the other process's time slice: that wait lands in the
    accuracy figure although neither the client nor the simulator caused it.
    """

    nice: bool = False
    pin: bool = False

    def __post_init__(self) -> None:
        if self.pin and len(os.sched_getaffinity(0)) < 2:
            raise SystemExit("bench_client: --pin needs at least 2 CPUs; run without --pin")

    def _cpus(self) -> list[int]:
        return sorted(os.sched_getaffinity(0))

    def place_sim(self, pid: int) -> None:
        if self.nice:  # shield it from unrelated load on a shared machine (root)
            os.setpriority(os.PRIO_PROCESS, pid, -10)
        if self.pin:
            os.sched_setaffinity(pid, {self._cpus()[-1]})

    def client_setup(self) -> Callable[[], None] | None:
        """The preexec_fn of a client process (runs in the child before it starts)."""
        if not (self.nice or self.pin):
            return None
        cpu = self._cpus()[0]

        def setup() -> None:
            if self.nice:
                os.setpriority(os.PRIO_PROCESS, 0, -10)
            if self.pin:
                os.sched_setaffinity(0, {cpu})

        return setup


class Sim:
    """The simulator in a subprocess, sized for ``streams`` at ``rate`` tokens/s each."""

    def __init__(
        self, tmp: str, rate: float, streams: int, placement: Placement = Placement()
    ) -> None:
        self.placement = placement
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        path = os.path.join(tmp, f"profile-{rate}-{streams}.json")
        with open(path, "w") as f:
            json.dump(profile(rate, streams), f)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
        env.update(
            HOME=tmp,
            OLLAMA_HOST=f"127.0.0.1:{self.port}",
            OLLAMA_NUM_PARALLEL=str(streams),
            OLLAMA_MAX_QUEUE=str(streams * 4),
            OLLAMA_KEEP_ALIVE="-1",
            OLLAMA_SIM_PROFILE=path,
            OLLAMA_SIM_CONTROL="1",
            PYTHONPATH=os.path.join(ROOT, "src"),
        )
        self.log = open(os.path.join(tmp, f"sim-{self.port}.log"), "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ollama_ops.sim", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        placement.place_sim(self.proc.pid)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the simulator did not start") from None
                time.sleep(0.05)
        body = json.dumps({"model": MODEL, "prompt": ""}).encode()
        http(self.url + "/api/generate", body)  # load the model

    def reset(self) -> None:
        http(self.url + "/_sim/stats/reset", b"")

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = http(self.url + "/_sim/stats")
        return data

    def first_tokens(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = http(self.url + "/_sim/first-tokens")["first_tokens"]
        return data

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


# --------------------------------------------------------------------------- clients


def run_ours(  # noqa: PLR0917
    url: str, api: str, streams: int, duration: float, tokens: int, ramp: float
) -> dict[str, Any]:
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from ollama_ops.bench import runner, shapes, workload
    from ollama_ops.bench.wire import Api

    stop = shapes.Stop(duration_s=duration)
    shape = shapes.concurrency_sweep((streams,), stop, warmup=0, ramp_s=ramp)
    target = runner.Target(url, MODEL, Api(api))
    # "prompt {i}" as the bare client sends: each request's name in /_sim/first-tokens
    prompts = tuple(workload.Prompt(f"prompt {i}") for i in range(UNIQUE_PROMPTS))
    wl = workload.Workload(prompts, workload.parse_output_length(str(tokens)))
    res = runner.run(shape, target, wl)
    st = res.stages[0]
    recs = st.records
    chunks = sum(len(r.times) for r in recs)
    out: dict[str, Any] = {
        "cpu_s": st.cpu_s,
        "wall_s": st.wall_s,
        "tokens": chunks,
        "requests": len(recs),
        "failed": sum(1 for r in recs if not r.ok),
    }
    if api == "ollama":
        ttft_err: list[float] = []
        tpot_err: list[float] = []
        firsts: dict[str, tuple[float, float]] = {}
        for r in recs:
            if not r.ok or not r.total_s or not r.eval_s or not r.output_tokens:
                continue
            if r.times:
                firsts[f"prompt {r.index % UNIQUE_PROMPTS}"] = (r.sent, r.times[0])
            interval = r.eval_s / r.output_tokens
            scheduled_ttft = r.total_s - r.eval_s + interval
            ttft = r.ttft
            tpot = r.tpot
            if ttft is not None:
                ttft_err.append(abs(ttft - scheduled_ttft))
            if tpot is not None:
                tpot_err.append(abs(tpot - interval))
        out["ttft_err"] = ttft_err
        out["tpot_err"] = tpot_err
        out["firsts"] = firsts
        out["itl_gaps"] = len([g for r in recs for g in r.gaps()])
    return out


async def _aiohttp_main(  # noqa: PLR0917
    url: str, api: str, streams: int, duration: float, tokens: int, ramp: float
) -> dict[str, Any]:
    import aiohttp

    if api == "openai":
        path, marker = "/v1/chat/completions", b'"finish_reason":null'
    else:
        path, marker = "/api/generate", b'"done":false'
    received = 0
    requests = 0
    failed = 0
    ttft_err: list[float] = []
    tpot_err: list[float] = []
    firsts: dict[str, tuple[float, float]] = {}

    def check(sent: float, mine: list[float], final: dict[str, Any]) -> None:
        """The same accuracy check as run_ours, on this client's timestamps."""
        interval = final["eval_duration"] / 1e9 / final["eval_count"]
        scheduled = (final["total_duration"] - final["eval_duration"]) / 1e9 + interval
        ttft_err.append(abs(mine[0] - sent - scheduled))
        tpot_err.append(abs((mine[-1] - mine[0]) / (final["eval_count"] - 1) - interval))

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=conn, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        deadline = t0 + duration

        async def stream(k: int) -> None:
            nonlocal received, requests, failed
            await asyncio.sleep(ramp * k / streams)
            i = k
            while time.perf_counter() < deadline:
                body: dict[str, Any] = {"model": MODEL, "stream": True}
                if api == "openai":
                    body["messages"] = [{"role": "user", "content": f"prompt {i}"}]
                    body["max_tokens"] = tokens
                    body["stream_options"] = {"include_usage": True}
                else:
                    body["prompt"] = f"prompt {i}"
                    body["options"] = {"num_predict": tokens}
                i += streams
                requests += 1
                sent = time.perf_counter()
                mine: list[float] = []
                final = b""
                async with session.post(url + path, json=body) as resp:
                    if resp.status != 200:
                        failed += 1
                        await resp.read()
                        continue
                    async for line in resp.content:
                        if marker in line:
                            mine.append(time.perf_counter())
                        elif b'"done":true' in line:
                            final = line
                received += len(mine)
                if final and len(mine) > 1:
                    check(sent, mine, json.loads(final))
                    firsts[body.get("prompt", "")] = (sent, mine[0])

        await asyncio.gather(*(stream(k) for k in range(streams)))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    out: dict[str, Any] = {
        "cpu_s": cpu,
        "wall_s": wall,
        "tokens": received,
        "requests": requests,
        "failed": failed,
    }
    if api == "ollama":
        out["ttft_err"] = ttft_err
        out["tpot_err"] = tpot_err
        out["firsts"] = firsts
    return out


def run_aiohttp(  # noqa: PLR0917
    url: str, api: str, streams: int, duration: float, tokens: int, ramp: float
) -> dict[str, Any]:
    return asyncio.run(_aiohttp_main(url, api, streams, duration, tokens, ramp))


CLIENTS = {"ours": run_ours, "aiohttp": run_aiohttp}


def child(args: argparse.Namespace) -> int:
    fn = CLIENTS[args.child]
    from ollama_ops.bench.shapes import default_ramp  # both clients ramp as the benchmark does

    ramp = default_ramp(args.child_streams) if args.child_ramp is None else args.child_ramp
    out = fn(args.url, args.api, args.child_streams, args.duration, args.tokens, ramp)
    print("CHILD " + json.dumps(out))
    return 0


def client_run(  # noqa: PLR0917
    sim: Sim,
    name: str,
    api: str,
    streams: int,
    duration: float,
    tokens: int,
    ramp: float | None = None,
) -> dict[str, Any]:
    """One client in its own process; the simulator's timing error over its run."""
    sim.reset()
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        name,
        "--url",
        sim.url,
        "--api",
        api,
        "--child-streams",
        str(streams),
        "--duration",
        str(duration),
        "--tokens",
        str(tokens),
        *(["--child-ramp", str(ramp)] if ramp is not None else []),
    ]
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    done = subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + 120,
        check=False,
        preexec_fn=sim.placement.client_setup(),
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("CHILD ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{name} client failed: {done.stderr.strip()[-500:]}")
    out: dict[str, Any] = json.loads(lines[-1][6:])
    out["server"] = sim.stats()["timing_error_us"]
    if "firsts" in out:
        out["split"] = split_ttft(out.pop("firsts"), sim.first_tokens())
    out["per_1k"] = out["cpu_s"] / (out["tokens"] / 1000) if out["tokens"] else float("nan")
    out["tok_s"] = out["tokens"] / out["wall_s"] if out["wall_s"] else 0.0
    return out


def split_ttft(
    firsts: dict[str, list[float]], server: list[dict[str, Any]]
) -> dict[str, list[float]]:
    """Each request's TTFT error split in three, on the host's one CLOCK_MONOTONIC (the client's
    perf_counter and the simulator's monotonic clock are both it on Linux):

    * ``client``: first chunk received by the client - first token written by the simulator
      (the loopback delivery and the client's own lateness: its measurement error);
    * ``server``: first token written - first token due (the simulator's own lateness);
    * ``ingest``: request received by the simulator's handler - request sent by the client
      (before the server's clock starts: in no reported duration).
    """
    out: dict[str, list[float]] = {"client": [], "server": [], "ingest": []}
    for rec in server:
        mine = firsts.get(rec["prompt"])
        if mine is None:
            continue
        sent, first = mine
        out["client"].append(first - rec["written"])
        out["server"].append(rec["written"] - rec["due"])
        out["ingest"].append(rec["received"] - sent)
    return out


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(0.99 * len(v)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per client run")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--streams", default="64,256", help="stream counts for the CPU figure")
    ap.add_argument("--keepup", default="256,512", help="stream counts for the keep-up figure")
    ap.add_argument("--accuracy-streams", type=int, default=64)
    ap.add_argument(
        "--accuracy-ramp",
        type=float,
        metavar="S",
        help="start the accuracy streams over S seconds (default 2 ms apart, at most 1 s)",
    )
    ap.add_argument("--rate", type=float, default=40.0, help="tokens/s per stream (cpu)")
    ap.add_argument("--tokens", type=int, default=128, help="tokens per request (cpu)")
    ap.add_argument("--only", default="cpu,keepup,accuracy")
    ap.add_argument(
        "--priority",
        choices=("normal", "nice"),
        default="normal",
        help="nice: the simulator and the client processes run at niceness -10 (root), so"
        " that other sessions' load on a shared machine does not preempt them",
    )
    ap.add_argument(
        "--pin",
        action="store_true",
        help="the simulator runs on the last CPU and each client on the first (needs 2),"
        " so that the two never wait for each other's time slice",
    )
    ap.add_argument("--child", choices=sorted(CLIENTS), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--api", default="openai", help=argparse.SUPPRESS)
    ap.add_argument("--child-streams", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-ramp", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    parts = set(args.only.split(","))
    placement = Placement(nice=args.priority == "nice", pin=args.pin)
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "cpu" in parts:
            for n in (int(x) for x in args.streams.split(",")):
                sim = Sim(tmp, args.rate, n, placement)
                try:
                    runs: dict[str, list[dict[str, Any]]] = {"aiohttp": [], "ours": []}
                    for _ in range(args.repeats):
                        for name in ("aiohttp", "ours"):
                            runs[name].append(
                                client_run(sim, name, "openai", n, args.duration, args.tokens)
                            )
                finally:
                    sim.close()
                base = sum(r["per_1k"] for r in runs["aiohttp"]) / len(runs["aiohttp"])
                for name, rs in runs.items():
                    per = sum(r["per_1k"] for r in rs) / len(rs)
                    tok = sum(r["tok_s"] for r in rs) / len(rs)
                    err = max(r["server"]["p99"] for r in rs)
                    fails = sum(r["failed"] for r in rs)
                    rows.append(
                        f"cpu      {name:<8} {n:>4} streams  {tok:>8.0f} tok/s  "
                        f"{per:.3f} CPU-s/1k tok  x{per / base:.2f} of aiohttp  "
                        f"sim err p99 {err / 1e3:.2f} ms  failed {fails}"
                    )
                    print(
                        f"RESULT part=cpu client={name} streams={n} tok_s={tok:.0f} "
                        f"cpu_per_1k={per:.4f} ratio={per / base:.3f} sim_p99_us={err} "
                        f"failed={fails}",
                        flush=True,
                    )
        if "keepup" in parts:
            for n in (int(x) for x in args.keepup.split(",")):
                sim = Sim(tmp, 42.0, n, placement)
                try:
                    for name in ("aiohttp", "ours"):
                        r = client_run(sim, name, "openai", n, args.duration, 600)
                        srv = r["server"]
                        rows.append(
                            f"keep-up  {name:<8} {n:>4} streams  {r['tok_s']:>8.0f} tok/s  "
                            f"{r['per_1k']:.3f} CPU-s/1k tok  sim err p50/p99 "
                            f"{srv['p50'] / 1e3:.2f}/{srv['p99'] / 1e3:.2f} ms  "
                            f"failed {r['failed']}"
                        )
                        print(
                            f"RESULT part=keepup client={name} streams={n} "
                            f"tok_s={r['tok_s']:.0f} cpu_per_1k={r['per_1k']:.4f} "
                            f"sim_p50_us={srv['p50']} sim_p99_us={srv['p99']} "
                            f"failed={r['failed']}",
                            flush=True,
                        )
                finally:
                    sim.close()
        if "accuracy" in parts:
            n = args.accuracy_streams
            sim = Sim(tmp, args.rate, n, placement)
            try:
                for name in ("aiohttp", "ours"):
                    r = client_run(
                        sim, name, "ollama", n, args.duration, args.tokens, args.accuracy_ramp
                    )
                    t99, s99 = p99(r["ttft_err"]) * 1e3, p99(r["tpot_err"]) * 1e3
                    t50 = sorted(r["ttft_err"])[len(r["ttft_err"]) // 2] * 1e3
                    srv = r["server"]
                    split = r["split"]
                    own99, late99, ing99 = (
                        p99(split[k]) * 1e3 for k in ("client", "server", "ingest")
                    )
                    rows.append(
                        f"accuracy {name:<8} {n:>4} streams  TTFT |err| p50/p99 {t50:.2f}/{t99:.2f}"
                        f" ms  TPOT |err| p99 {s99:.3f} ms  ({len(r['ttft_err'])} requests;"
                        f" sim err p99 {srv['p99'] / 1e3:.2f} ms)"
                    )
                    rows.append(
                        f"  TTFT split, p99 of {len(split['client'])} requests: client's own"
                        f" lateness {own99:.2f} ms, simulator's first token late {late99:.2f} ms,"
                        f" ingest {ing99:.2f} ms"
                    )
                    print(
                        f"RESULT part=accuracy client={name} streams={n} "
                        f"requests={len(r['ttft_err'])} ttft_err_p50_ms={t50:.3f} "
                        f"ttft_err_p99_ms={t99:.3f} tpot_err_p99_ms={s99:.3f} "
                        f"sim_p99_us={srv['p99']} client_own_p99_ms={own99:.3f} "
                        f"sim_first_late_p99_ms={late99:.3f} ingest_p99_ms={ing99:.3f}",
                        flush=True,
                    )
            finally:
                sim.close()
    print()
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
