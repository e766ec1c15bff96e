"""`ollama-ops health`: one check, one verdict, as a monitoring plugin (or --json).

Exit codes are the plugin convention (errors.HealthStatus), not ExitStatus:
0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Every failure of the check itself,
bad arguments included, is UNKNOWN with one line, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from ollama_ops.cli.common import Env
from ollama_ops.errors import HealthStatus, OpsError

DEFAULT_URL = "http://127.0.0.1:11434"


def plugin_error(message: str) -> NoReturn:
    """A bad option value is UNKNOWN (3), as monitoring plugins exit, not argparse's 2."""
    sys.stderr.write(f"OLLAMA UNKNOWN - unknown: {message}\n")
    raise SystemExit(int(HealthStatus.UNKNOWN))


def add_target(p: argparse.ArgumentParser) -> None:
    """--url, --unit and --config: which server, shared with `watch`."""
    p.add_argument(
        "--url", help=f"Ollama's URL (default: from the config's bind, else {DEFAULT_URL})"
    )
    p.add_argument(
        "--unit", help="the unit running Ollama (default: from the config, ollama.service)"
    )
    p.add_argument("--config", metavar="FILE", help="deployment config for the defaults")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "health",
        help="one check: ok, busy, degraded, stuck, hung or down (monitoring-plugin exit codes)",
        description="Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios/Icinga/Checkmk).",
    )
    p.error = plugin_error  # type: ignore[method-assign]
    add_target(p)
    p.add_argument("--deep", action="store_true", help="also ask a loaded model for one token")
    p.add_argument("--json", action="store_true", help="the verdict and its evidence as JSON")
    p.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="deadline of the generation (10)"
    )
    p.add_argument(
        "--window", type=float, default=60.0, metavar="S", help="journal evidence window (60)"
    )
    p.add_argument(
        "--wait-ready",
        action="store_true",
        help="only wait until the API answers (exit 0) or --timeout passes (exit 2)",
    )
    p.set_defaults(func=run)


def target(args: argparse.Namespace) -> tuple[str, str]:
    """(url, unit) from the options, else the deployment config, else the defaults."""
    from ollama_ops.health.http import check_url
    from ollama_ops.model import config as config_mod
    from ollama_ops.model.bind import validate_bind
    from ollama_ops.model.deployment import api_url

    cfg = config_mod.load(Path(args.config) if args.config else None)
    host, port = validate_bind(cfg.service.bind)
    url = check_url(args.url) if args.url else api_url(host, port)
    return url, args.unit or cfg.service.unit


def _colour(env: Env) -> bool:
    return env.stdout.isatty() and "NO_COLOR" not in os.environ


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.health import report

    try:
        return _run(args, env)
    except OpsError as exc:
        env.stdout.write(report.unknown_text(str(exc)))
    except Exception as exc:  # a bug of ours: still one line and UNKNOWN, as plugins must
        first = (str(exc).splitlines() or [""])[0][:160]
        env.stdout.write(report.unknown_text(f"internal error {type(exc).__name__}: {first}"))
    return int(HealthStatus.UNKNOWN)


def _run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.health import report
    from ollama_ops.health.check import CheckOptions, run_check, wait_ready

    if not args.timeout > 0 or not args.window > 0:
        env.stdout.write(report.unknown_text("--timeout and --window must be positive seconds"))
        return int(HealthStatus.UNKNOWN)
    url, unit = target(args)
    rt = env.make_runtime(Path("/"))
    if args.wait_ready:
        ready, message = wait_ready(rt, url, args.timeout)
        env.stdout.write(f"OLLAMA {'OK' if ready else 'CRITICAL'} - {message}\n")
        return int(HealthStatus.OK if ready else HealthStatus.CRITICAL)
    opts = CheckOptions(
        url=url, unit=unit, deep=args.deep, deadline_s=args.timeout, window_s=args.window
    )
    snap, verdict = run_check(rt, opts)
    if args.json:
        env.stdout.write(report.as_json(snap, verdict))
    else:
        env.stdout.write(report.plugin_text(snap, verdict, colour=_colour(env)))
    return int(verdict.status)
