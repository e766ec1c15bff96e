"""What a tune costs: one sweep over N settings against N plain benchmark runs, side by side.

The issue's target: "a sweep over N settings costs about N benchmark runs".
Against the simulator (run as the service by the test suite's stand-in for
systemd, so every setting really goes through plan + apply + restart + verify
and the original comes back by rollback), in one run:

* ``bench``: N runs of the same load shape (warm-up + ``--duration`` s at
  ``--concurrency``) on the running service, one after the other, no restarts;
* ``tune``: ``ollama-ops tune`` over ``num_parallel`` = the first N of 1,2,4,8,16,...
  with the same shape, not confirmed (so it ends with the restore).

Reported: both wall times; the benchmark runs the tune made and the time they took
(its --json, warm-ups included); the tune's overhead (its wall time minus its
benchmark runs: planning, apply's writes and verification, the restarts and the
restore) and the ratio tune / its own benchmark runs, the figure the target is
about. The plain runs all measure the current setting, so their time differs from
the tune's runs where a setting changes how long requests take; they are the
reference for what one benchmark run costs on this machine.

Usage: python benchmarks/tune_cost.py [--settings 4] [--duration 5] [--concurrency 8]
Loopback only. Prints one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.helpers import INSTALLER_UNIT  # noqa: E402
from tests.sim_helpers import free_port  # noqa: E402
from tests.test_tune_sim import CONFIG, MODEL, SimService, cli  # noqa: E402

from ollama_ops.bench import runner, shapes  # noqa: E402


def setup(tmp: Path) -> SimService:
    root = tmp / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/ollama.service").write_text(INSTALLER_UNIT)
    (root / "usr/share/ollama").mkdir(parents=True)
    (root / "etc/ollama-ops").mkdir(parents=True)
    home = tmp / "home"
    home.mkdir()
    service = SimService(root, home, free_port())
    (root / "etc/ollama-ops/ollama-ops.toml").write_text(CONFIG.format(port=service.port))
    code, out, err = cli(service, "apply", "--timeout", "30")
    if code != 0:
        raise SystemExit(f"apply failed: {out}{err}")
    return service


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", type=int, default=4)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    values = [str(2**i) for i in range(args.settings)]
    with tempfile.TemporaryDirectory(prefix="tune-cost-") as tmp:
        service = setup(Path(tmp))
        try:
            url = f"http://127.0.0.1:{service.port}"
            shape = shapes.concurrency_sweep(
                (args.concurrency,), shapes.Stop(duration_s=args.duration), args.concurrency
            )
            t0 = time.monotonic()
            for _ in values:
                runner.run(shape, runner.Target(url, MODEL))
            bench_s = time.monotonic() - t0

            restarts = service.calls.count("restart")
            report = Path(tmp) / "tune.json"
            t0 = time.monotonic()
            code, _out, err = cli(
                service, "tune", "--model", MODEL, "--param", "num_parallel=" + ",".join(values),
                "--concurrency", str(args.concurrency), "--duration", str(args.duration),
                "--json", str(report),
            )  # fmt: skip
            tune_s = time.monotonic() - t0
            if code not in (0, 1):
                raise SystemExit(f"tune failed ({code}): {err}")
            rows = json.loads(report.read_text())["settings"]
            runs = len(rows)
            measured_s = sum(r["measure_s"] or 0.0 for r in rows)
            restarts = service.calls.count("restart") - restarts
        finally:
            service.stop()
    load = os.getloadavg()[0]
    print(f"bench: {len(values)} runs of {args.duration:g} s at concurrency {args.concurrency}: "
          f"{bench_s:.1f} s")  # fmt: skip
    print(f"tune:  {len(values)} settings: {tune_s:.1f} s, {runs} benchmark runs "
          f"({measured_s:.1f} s), {restarts} restarts, overhead {tune_s - measured_s:.1f} s")  # fmt: skip
    print(
        f"RESULT settings={len(values)} bench_s={bench_s:.1f} tune_s={tune_s:.1f} "
        f"tune_bench_runs_s={measured_s:.1f} tune_over_its_runs={tune_s / measured_s:.2f} "
        f"tune_over_plain={tune_s / bench_s:.2f} runs={runs} restarts={restarts} "
        f"load1={load:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
