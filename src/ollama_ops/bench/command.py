"""``ollama-ops bench`` and ``ollama-ops bench compare``: options in, library calls, files out.

Thin on purpose: the options become a Shape, a Target, a Workload and an
SLO; :func:`runner.run` does the work; the outputs are written atomically
(a temporary file renamed into place) after the run, and checked for a
writable folder before it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Protocol, TextIO

from ollama_ops.errors import ExitStatus

from . import compare as compare_mod
from . import records, report, shapes, summary
from .client import parse_url
from .errors import BenchError, TargetError
from .options import DEFAULT_URL, add_arguments
from .progress import LiveProgress
from .runner import Result, Target, run
from .slo import Slo, from_json, parse_slo
from .wire import Api
from .workload import Workload, builtin, load_jsonl, parse_output_length

#: `bench compare` found a regression or an SLO breach: 1, as `diff` (and --dry-run) do.
REGRESSION_EXIT = ExitStatus.CHANGES_PENDING


class Streams(Protocol):
    stdout: TextIO
    stderr: TextIO


def shape_from(args: argparse.Namespace) -> tuple[shapes.Shape, bool]:
    """The load shape; True when it is the guide's preset (its prompt only)."""
    stop = shapes.Stop(duration_s=args.duration, requests=args.requests)
    warm = 1 if args.warmup is None else args.warmup
    if warm < 0:
        raise BenchError(f"--warmup {warm}: must be 0 or more")
    if args.concurrency is not None:
        if stop.duration_s is None and stop.requests is None:
            stop = shapes.Stop(duration_s=30.0)
        levels = shapes.parse_levels(args.concurrency)
        return shapes.concurrency_sweep(levels, stop, warm, args.ramp_up), False
    if args.ramp_up is not None:
        raise BenchError(
            "--ramp-up spreads the start of --concurrency streams; give --concurrency N"
        )
    if args.rate is not None:
        if stop.duration_s is None and stop.requests is None:
            stop = shapes.Stop(duration_s=30.0)
        return (
            shapes.rate_sweep(
                shapes.parse_rates(args.rate),
                stop,
                arrival=shapes.Arrival(args.arrival),
                burstiness=args.burstiness,
                max_concurrency=args.max_concurrency,
                warmup=warm,
                seed=args.seed,
            ),
            False,
        )
    if args.max_concurrency is not None:
        raise BenchError("--max-concurrency caps --rate; give --rate R too")
    n = args.requests if args.requests is not None else shapes.GUIDE_REQUESTS
    if n < 1:
        raise BenchError(f"--requests {n}: must be at least 1")
    if args.duration is not None:
        raise BenchError("--duration needs --concurrency or --rate; --sequential counts requests")
    return shapes.sequential(n, 0 if args.warmup is None else warm), True


def workload_from(args: argparse.Namespace, guide: bool) -> Workload:
    output = parse_output_length(args.output_tokens) if args.output_tokens else None
    if args.prompts:
        return load_jsonl(args.prompts, output)
    return builtin(output, guide=guide)


def _check_writable(option: str, path: str | None) -> None:
    if path is None or path == "-":
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise BenchError(f"{option} {path!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise BenchError(f"{option} {path!r}: folder {str(folder)!r} is not writable")
    if Path(path).is_dir():
        raise BenchError(f"{option} {path!r} is a folder; give a file name")


def write_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bench-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_command(args: argparse.Namespace, env: Streams) -> int:
    if getattr(args, "bench_command", None) == "compare":
        return compare_command(args, env)
    if not args.model:
        raise BenchError("--model is required: the model to benchmark, e.g. --model llama3.2:1b")
    shape, guide = shape_from(args)
    wl = workload_from(args, guide)
    slo: Slo | None = parse_slo(args.slo) if args.slo else None
    if not args.timeout > 0:
        raise BenchError(f"--timeout {args.timeout:g}: must be above 0 seconds")
    for option, path in (("--json", args.json), ("--csv", args.csv), ("--plot", args.plot)):
        _check_writable(option, path)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise BenchError("--plot needs matplotlib; install it (pip install matplotlib)")
    url = parse_url(args.url or os.environ.get("OLLAMA_HOST") or DEFAULT_URL).base
    target = Target(url, args.model, Api(args.api), args.timeout)
    show = not args.no_progress and args.json != "-"
    with LiveProgress(env.stderr, show) as live:
        result = run(shape, target, wl, progress=live.update if live.enabled else None)
    return finish(result, slo, args, env)


def finish(result: Result, slo: Slo | None, args: argparse.Namespace, env: Streams) -> int:
    """Write the outputs and the report; the exit code."""
    summ = summary.summarize(result, slo)
    text = report.render(summ)
    if args.json:
        doc = json.dumps(summary.to_json(summ), indent=2) + "\n"
        if args.json == "-":
            env.stdout.write(doc)
        else:
            write_atomic(args.json, doc)
    if args.csv:
        write_atomic(args.csv, records.csv_text(summary.records(summ), result.t0))
    if args.plot and summ.stages:
        from . import plots

        plots.write_png(summ, args.plot)
    (env.stderr if args.json == "-" else env.stdout).write(text)
    if result.partial:
        return ExitStatus.INTERRUPTED
    if summ.requests and not summ.ok:
        first = next((s.top_error for s in summ.stages if s.top_error), "")
        hint = (
            "lower --concurrency/--rate or raise OLLAMA_MAX_QUEUE"
            if summ.busy == summ.requests
            else "see the failure above"
        )
        raise TargetError(f"no request succeeded ({summ.requests} sent; {first}); {hint}")
    return ExitStatus.OK


def compare_command(args: argparse.Namespace, env: Streams) -> int:
    threshold = (
        compare_mod.parse_threshold(args.fail_on_regression)
        if args.fail_on_regression is not None
        else None
    )
    if not 0 <= args.min_share <= 100:
        raise BenchError(f"--min-share {args.min_share:g}: give a percentage from 0 to 100")
    a = compare_mod.load(args.a)
    b = compare_mod.load(args.b)
    slo = parse_slo(args.slo) if args.slo else from_json(b.get("slo"))
    cmp = compare_mod.compare(a, b, threshold, slo, args.min_share / 100)
    env.stdout.write(compare_mod.render(cmp, args.a, args.b, threshold))
    return REGRESSION_EXIT if cmp.failed else ExitStatus.OK


def main(argv: list[str] | None = None) -> int:
    """``python -m ollama_ops.bench``: the same command without the main CLI."""
    from ollama_ops.errors import ExitStatus, OpsError, exit_status

    parser = argparse.ArgumentParser(prog="ollama-ops bench", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)

    class _Env:
        stdout = sys.stdout
        stderr = sys.stderr

    try:
        return run_command(args, _Env())
    except OpsError as exc:
        sys.stderr.write(f"ollama-ops: error: {exc}\n")
        return exit_status(exc)
    except KeyboardInterrupt:
        sys.stderr.write("ollama-ops: interrupted\n")
        return ExitStatus.INTERRUPTED
