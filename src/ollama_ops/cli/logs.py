"""`ollama-ops logs`: what happened to the service, from its journal (or an exported one)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ollama_ops.cli.common import Env, add_config, add_root, load_config, runtime
from ollama_ops.errors import ExitStatus, OpsError
from ollama_ops.logs import journal, records, summary
from ollama_ops.logs.classify import classify

DEFAULT_SINCE = "24 hours ago"
DEFAULT_SLOW_LOAD_S = 30.0
DEFAULT_LINES = 100_000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "logs",
        help="starts, restarts and why, OOM kills, model loads, GPU and file errors, 503s",
    )
    add_root(p, "read the journal under DIR (journalctl --root)")
    add_config(p)
    p.add_argument("--unit", help="the unit (default: service.unit from the config)")
    p.add_argument(
        "--since", default=DEFAULT_SINCE, metavar="T", help=f'journalctl time ("{DEFAULT_SINCE}")'
    )
    p.add_argument(
        "--slow-load",
        type=float,
        default=DEFAULT_SLOW_LOAD_S,
        metavar="S",
        help=f"a model load this long or longer counts as slow ({DEFAULT_SLOW_LOAD_S:g})",
    )
    p.add_argument(
        "--lines", type=int, default=DEFAULT_LINES, metavar="N", help="read at most N records"
    )
    p.add_argument(
        "--input",
        metavar="FILE",
        help="summarise an exported journal (journalctl -o json, or its text) instead",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _read_input(path: str, year: int) -> list[records.Record]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise OpsError(
            f"--input {path!r} cannot be read ({exc.strerror}); pass a readable file"
        ) from exc
    return records.parse_any(text, path, year)


def run(args: argparse.Namespace, env: Env) -> int:
    if args.slow_load <= 0 or args.lines < 1:
        raise OpsError("--slow-load must be above 0 seconds and --lines at least 1")
    rt = runtime(args, env)
    unit = args.unit or load_config(args, rt.root).service.unit
    if not unit.endswith((".service", ".scope")):
        unit += ".service"
    if args.input:
        year = time.gmtime(rt.wall_clock()).tm_year
        found: tuple[records.Record, ...] = tuple(_read_input(args.input, year))
        namespace, truncated, since = None, False, f"the start of {args.input}"
    else:
        read = journal.read(rt, unit, args.since, args.lines)
        found, namespace, truncated, since = (
            read.records,
            read.namespace,
            read.truncated,
            args.since,
        )
    events = [event for record in found for event in classify(record)]
    result = summary.summarize(
        events,
        unit=unit,
        since=since,
        namespace=namespace,
        records=len(found),
        truncated=truncated,
        slow_load_s=args.slow_load,
    )
    env.stdout.write(summary.render_json(result) if args.json else summary.render_text(result))
    return ExitStatus.OK
