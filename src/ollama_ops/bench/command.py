"""``ollama-ops bench`` and ``ollama-ops bench compare``: options in, library calls, files out.

Thin on purpose: the options become a Shape, a Target, a Workload and an
SLO; :func:`runner.run` does the work; the outputs are written atomically
(a temporary file renamed into place) after the run, and checked for a
writable folder before it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Protocol, TextIO

from . import compare as compare_mod
from . import records, report, shapes, summary
from .client import parse_url
from .errors import BenchError, TargetError
from .progress import LiveProgress
from .runner import Result, Target, run
from .slo import Slo, from_json, parse_slo
from .wire import Api
from .workload import Workload, builtin, load_jsonl, parse_output_length

DEFAULT_URL = "http://127.0.0.1:11434"


class Streams(Protocol):
    stdout: TextIO
    stderr: TextIO


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``bench`` (and its ``compare`` subcommand)."""
    p.add_argument("--model", metavar="M", help="model to benchmark (as `ollama list` names it)")
    p.add_argument("--url", metavar="URL", help=f"server (default $OLLAMA_HOST or {DEFAULT_URL})")
    p.add_argument(
        "--api",
        choices=[a.value for a in Api],
        default=Api.GENERATE.value,
        help="ollama = /api/generate, ollama-chat = /api/chat, openai = /v1/chat/completions",
    )
    load = p.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency", metavar="N[,N...]", help="streams at once; several = a sweep"
    )
    load.add_argument("--rate", metavar="R[,R...]", help="requests/s offered; several = a sweep")
    load.add_argument(
        "--sequential",
        action="store_true",
        help="the guide's benchmark: 5 requests one at a time, its prompt (the default)",
    )
    p.add_argument(
        "--arrival",
        choices=[a.value for a in shapes.Arrival],
        default=shapes.Arrival.POISSON.value,
        help="how --rate spreads request starts (poisson)",
    )
    p.add_argument(
        "--burstiness", type=float, default=1.0, metavar="K", help="gamma shape, < 1 burstier (1)"
    )
    p.add_argument("--max-concurrency", type=int, metavar="N", help="cap in flight with --rate")
    p.add_argument("--duration", type=float, metavar="S", help="seconds of sending per stage")
    p.add_argument("--requests", type=int, metavar="N", help="requests per stage")
    p.add_argument("--warmup", type=int, metavar="N", help="uncounted requests first (1)")
    p.add_argument("--prompts", metavar="FILE", help='JSONL: {"prompt": "...", "max_tokens": N}')
    p.add_argument(
        "--output-tokens",
        metavar="SPEC",
        help="tokens asked for: 128, 64-256 (uniform) or 128~32 (normal); default the model's",
    )
    p.add_argument("--slo", metavar="SPEC", help="e.g. ttft=500ms,tpot=50ms (also itl, e2e)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per request (300)")
    p.add_argument("--seed", type=int, default=0, help="for arrivals and output lengths (0)")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON (- for stdout)")
    p.add_argument("--csv", metavar="FILE", help="write one row per request")
    p.add_argument("--plot", metavar="FILE", help="write PNG plots (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    sub = p.add_subparsers(dest="bench_command", metavar="compare")
    c = sub.add_parser("compare", help="two --json results side by side; exit 1 on a regression")
    c.add_argument("a", metavar="A.json")
    c.add_argument("b", metavar="B.json")
    c.add_argument(
        "--fail-on-regression",
        metavar="PCT",
        help="exit 1 when a figure of B is worse than A's by more than PCT (e.g. 5%%)",
    )
    c.add_argument("--slo", metavar="SPEC", help="check B against this SLO (default: B's own)")
    c.add_argument(
        "--min-share",
        type=float,
        default=99.0,
        metavar="PCT",
        help="share of B's requests that must meet the SLO (99)",
    )


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
        return shapes.concurrency_sweep(levels, stop, warm), False
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
        return 130
    if summ.requests and not summ.ok:
        first = next((s.top_error for s in summ.stages if s.top_error), "")
        hint = (
            "lower --concurrency/--rate or raise OLLAMA_MAX_QUEUE"
            if summ.busy == summ.requests
            else "see the failure above"
        )
        raise TargetError(f"no request succeeded ({summ.requests} sent; {first}); {hint}")
    return 0


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
    return 1 if cmp.failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ollama_ops.bench``: the same command without the main CLI."""
    from ollama_ops.errors import OpsError

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
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("ollama-ops: interrupted\n")
        return 130
