"""How long `ollama-ops plan` takes on this host, against the 1 s budget.

Runs, in one go: the bare interpreter start (`python -c pass`), `ollama-ops
plan` as a user runs it (probe + plan + render + diff), and the pure part
in-process (plan.build + render.render). Prints medians and ratios.

    .venv/bin/python benchmarks/plan_speed.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path

from ollama_ops.host import probe
from ollama_ops.model import config
from ollama_ops.plan import compose as plan
from ollama_ops.render import systemd as render
from ollama_ops.runtime import Runtime

BUDGET_S = 1.0


def wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    exe = Path(sys.executable)
    cli = exe.parent / "ollama-ops"
    bare = wall([str(exe), "-c", "pass"], args.runs)
    full = wall([str(cli), "plan"], args.runs)
    facts = probe.probe_host(Runtime())
    cfg = config.DeploymentConfig()
    loops = 200
    pure = timeit.timeit(lambda: render.render(plan.build(facts, cfg)), number=loops) / loops
    print(f"python -c pass        median {bare * 1000:7.1f} ms")
    print(
        f"ollama-ops plan       median {full * 1000:7.1f} ms  = {full / BUDGET_S:.2f} x the 1 s budget"
    )
    print(f"plan.build + render   mean   {pure * 1000:7.3f} ms (in-process)")
    print(f"ratio plan / bare interpreter start: {full / bare:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
