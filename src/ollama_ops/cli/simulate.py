"""`ollama-ops simulate`: the Ollama-compatible simulator; every argument is its own."""

from __future__ import annotations

import argparse

from ollama_ops.cli.common import Env


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        add_help=False,
        help="an Ollama-compatible simulator (`simulate --help`; docs/simulator.md)",
    )
    p.add_argument("sim_args", nargs=argparse.REMAINDER, help="options passed to the simulator")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.sim import cli as sim_cli

    return sim_cli.main(["serve", *args.sim_args])


def simulator_argv(argv: list[str]) -> list[str] | None:
    """`ollama-ops [--debug] simulate ARGS...`: every ARG, --help included, is the simulator's."""
    rest = [a for a in argv if a != "--debug"]
    return rest[1:] if rest and rest[0] == "simulate" else None
