"""`ollama-ops tune`: sweep Ollama's settings on the running service (docs/tune.md);
the work is in tune/."""

from __future__ import annotations

import argparse

from ollama_ops.cli.common import Env, add_config, add_facts, add_root


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ollama_ops.tune.options import add_arguments

    p = sub.add_parser(
        "tune",
        help="sweep OLLAMA_NUM_PARALLEL (and more) through apply; pick the best under an SLO",
    )
    add_arguments(p)
    add_root(p, "the system whose service is tuned (only / is live)")
    add_facts(p)
    add_config(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.tune.command import run_command

    return run_command(args, env)
