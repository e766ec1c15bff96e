"""The peer table: this benchmark's client against GuideLLM and AIPerf (not run by CI).

Installs the peers into their own virtual environments under ``--venvs``
(GuideLLM 0.8.1 is about 6 GB with torch, AIPerf 0.13.0 about 1.2 GB; each
takes minutes), builds a tiny local tokenizer for them (a byte-level BPE
trained in-process with the ``tokenizers`` package the peers bring, saved
with ``PreTrainedTokenizerFast.save_pretrained``), then for each stream
count runs, against the same simulator (``benchmarks/bench_client.py``'s
profile: ``--rate`` tokens/s per stream, ``--tokens`` per request,
``/v1/chat/completions`` streaming), one after the other: a bare aiohttp
client, this benchmark's client, GuideLLM and AIPerf, with the offline
recipes of ``shared/reference/bench-peers.md``. For each it reports the
tokens/s the simulator emitted during the run (``/_sim/stats``), the CPU
seconds of the tool's whole process tree (sampled with psutil, children
included) per 1,000 of those tokens, and the ratio to the bare client.

Usage: python benchmarks/bench_peers.py --venvs /var/tmp/peers [--streams 64,256]
       [--duration 45] [--only guidellm,aiperf] [--skip-install]
Loopback only. Each tool run is bounded by ``--duration`` plus 300 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil  # type: ignore[import-untyped]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_client as bc

PEERS = {
    "guidellm": ["guidellm==0.8.1"],
    "aiperf": ["aiperf==0.13.0"],
}

TOKENIZER_SCRIPT = """
import sys
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
from transformers import PreTrainedTokenizerFast
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
words = "the quick brown fox jumps over the lazy dog while a simulated model keeps talking".split()
text = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 50
tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=500, special_tokens=["<s>", "</s>"]))
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
fast.save_pretrained(sys.argv[1])
"""


def install(venvs: str, name: str) -> str:
    """The peer's python, installing it first when needed."""
    venv = os.path.join(venvs, name)
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "-q", *PEERS[name]], check=True, timeout=1800
        )
    return python


def tree_cpu(proc: psutil.Process, seen: dict[int, float]) -> None:
    """Record the latest user+system CPU of ``proc`` and every descendant."""
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            t = p.cpu_times()
            seen[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            continue


def run_tool(
    cmd: list[str], env: dict[str, str], limit: float, sim: bc.Sim
) -> tuple[float, int, int]:
    """(CPU seconds of the process tree while tokens flowed, those tokens, exit status).

    Every 0.5 s the tree's CPU and the simulator's token count are sampled; the
    window runs from the first sample with tokens to the last one where the
    count still grew, so start-up (GuideLLM spends about 35 CPU-s before its
    first request) is left out, as in the reference measurements.
    """
    seen: dict[int, float] = {}
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    with open(os.devnull, "w") as devnull:
        child = subprocess.Popen(cmd, env=env, stdout=devnull, stderr=subprocess.PIPE, text=True)
        proc = psutil.Process(child.pid)
        while child.poll() is None:
            tree_cpu(proc, seen)
            try:
                samples.append((sum(seen.values()), int(sim.stats()["tokens"])))
            except OSError as exc:  # a simulator starved by the tool: this sample is lost
                sys.stderr.write(f"simulator's stats not read ({exc}); sample skipped\n")
            if time.monotonic() - t0 > limit:
                child.kill()
                break
            time.sleep(0.5)
        _, err = child.communicate()
    if child.returncode:
        sys.stderr.write(f"{cmd[0]} exited {child.returncode}: {err.strip()[-400:]}\n")
    flowing = [i for i, (_, n) in enumerate(samples) if n > 0]
    if len(flowing) < 2:
        return 0.0, 0, child.returncode
    first = flowing[0]
    last = max(i for i in flowing if samples[i][1] > samples[i - 1][1])
    cpu = samples[last][0] - samples[first][0]
    return cpu, samples[last][1] - samples[first][1], child.returncode


def peer_cmd(
    name: str,
    *,
    python: str,
    url: str,
    streams: int,
    duration: float,
    tokens: int,
    tokdir: str,
    out: str,
) -> tuple[list[str], dict[str, str]]:  # fmt: skip
    bindir = os.path.dirname(python)
    env = dict(os.environ)
    if name == "guidellm":
        env["HF_HUB_OFFLINE"] = "1"
        return [
            os.path.join(bindir, "guidellm"), "run",
            "--backend", f"kind=openai_http,target={url},model={bc.MODEL},validate_backend=false",
            "--tokenizer", f"kind=hf_auto,model={tokdir}",
            "--profile", f"kind=concurrent,streams={streams}",
            "--constraint", f"kind=max_duration,seconds={duration:g}",
            "--data", f"kind=synthetic_text,prompt_tokens=64,output_tokens={tokens}",
            "--output", f"kind=json,path={out}", "--disable-progress",
        ], env  # fmt: skip
    return [
        os.path.join(bindir, "aiperf"), "profile", "-m", bc.MODEL,
        "--url", url.removeprefix("http://"), "--endpoint-type", "chat", "--streaming",
        "--tokenizer", tokdir, "--use-legacy-max-tokens",
        "--concurrency", str(streams), "--benchmark-duration", f"{duration:g}",
        "--isl", "64", "--osl", str(tokens), "--ui", "none",
        "--no-server-metrics", "--no-gpu-telemetry",
        "--artifact-dir", os.path.dirname(out),
    ], env  # fmt: skip


def measure_light(sim: bc.Sim, name: str, streams: int, args: argparse.Namespace) -> dict[str, Any]:
    r = bc.client_run(sim, name, "openai", streams, args.duration, args.tokens)
    return {"cpu_s": r["cpu_s"], "tokens": r["tokens"], "rc": 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--venvs", required=True, help="folder for the peers' virtual environments")
    ap.add_argument("--streams", default="64,256")
    ap.add_argument("--duration", type=float, default=45.0)
    ap.add_argument("--rate", type=float, default=40.0)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--only", default="guidellm,aiperf", help="peers to run")
    ap.add_argument("--skip-install", action="store_true", help="use the venvs as they are")
    args = ap.parse_args(argv)
    os.makedirs(args.venvs, exist_ok=True)
    peers = [p for p in args.only.split(",") if p]
    pythons: dict[str, str] = {}
    for name in peers:
        try:
            pythons[name] = (
                install(args.venvs, name)
                if not args.skip_install
                else os.path.join(args.venvs, name, "bin", "python")
            )
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"{name}: cannot install ({exc}); left out", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tokdir = os.path.join(tmp, "tokenizer")
        if pythons:
            first = next(iter(pythons.values()))
            subprocess.run([first, "-c", TOKENIZER_SCRIPT, tokdir], check=True, timeout=300)
        for streams in (int(s) for s in args.streams.split(",")):
            sim = bc.Sim(tmp, args.rate, streams)
            try:
                results: dict[str, dict[str, Any]] = {}
                for name in ("aiohttp", "ours"):
                    results[name] = measure_light(sim, name, streams, args)
                for name, python in pythons.items():
                    out = os.path.join(tmp, f"{name}-{streams}", "out.json")
                    os.makedirs(os.path.dirname(out), exist_ok=True)
                    cmd, env = peer_cmd(
                        name,
                        python=python,
                        url=sim.url,
                        streams=streams,
                        duration=args.duration,
                        tokens=args.tokens,
                        tokdir=tokdir,
                        out=out,
                    )
                    sim.reset()
                    cpu, tokens, rc = run_tool(cmd, env, args.duration + 300, sim)
                    results[name] = {"cpu_s": cpu, "tokens": tokens, "rc": rc}
            finally:
                sim.close()
            base = results["aiohttp"]
            base_per = base["cpu_s"] / max(base["tokens"], 1) * 1000
            for name, r in results.items():
                per = r["cpu_s"] / max(r["tokens"], 1) * 1000
                rows.append(
                    f"{name:<9} {streams:>4} streams  {r['tokens']:>8} tokens  "
                    f"{per:.3f} CPU-s/1k tok  x{per / base_per:.2f} of aiohttp"
                    + (f"  exit {r['rc']}" if r["rc"] else "")
                )
                print("RESULT " + json.dumps({"tool": name, "streams": streams, **r}), flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
