"""benchmarks/bench_client.py still runs end to end: the figures docs/bench.md quotes come from it.

A short accuracy run of both clients against the simulator; it checks that every request of
each client was matched with the simulator's first-token log and that each figure is a number,
never the figures' size (no wall-clock assertion).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_client.py"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def results(stdout: str) -> dict[str, dict[str, str]]:
    """RESULT lines of one part, keyed by client."""
    out: dict[str, dict[str, str]] = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            fields = dict(kv.split("=", 1) for kv in line.split()[1:])
            out[fields["client"]] = fields
    return out


def test_an_accuracy_run_matches_every_request_with_the_simulators_log() -> None:
    pin = ["--pin"] if len(os.sched_getaffinity(0)) >= 2 else []
    done = run_script(
        "--only", "accuracy", "--duration", "2", "--accuracy-streams", "4", "--tokens", "16", *pin
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = results(done.stdout)
    assert set(rows) == {"aiohttp", "ours"}, done.stdout
    for name, row in rows.items():
        requests = int(row["requests"])
        assert requests >= 4, row  # every stream finished at least one request
        for key in ("ttft_err_p99_ms", "tpot_err_p99_ms", "client_own_p99_ms", "ingest_p99_ms"):
            assert math.isfinite(float(row[key])), (name, key, row)
        split = re.search(rf"accuracy {name} .*\n  TTFT split, p99 of (\d+) requests", done.stdout)
        assert split is not None and int(split.group(1)) == requests, done.stdout


def test_pinning_needs_two_cpus_and_says_so() -> None:
    # taskset (util-linux, on every Debian) narrows the script to one CPU before it starts
    done = subprocess.run(
        ["taskset", "-c", "0", sys.executable, str(SCRIPT), "--only", "accuracy", "--pin"],
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "bench_client: --pin needs at least 2 CPUs; run without --pin"
    )
