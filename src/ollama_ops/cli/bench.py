"""`ollama-ops bench`: a load generator made for Ollama (see docs/bench.md); the work is in bench/."""

from __future__ import annotations

import argparse

from ollama_ops.cli.common import Env


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ollama_ops.bench.options import add_arguments

    p = sub.add_parser(
        "bench",
        help="benchmark a server: load shapes, TTFT/TPOT/ITL, goodput; `bench compare A B`",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.bench.command import run_command

    return run_command(args, env)
