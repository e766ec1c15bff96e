"""`ollama-ops rollback`: restore the files as they were before the newest generation."""

from __future__ import annotations

import argparse

from ollama_ops.apply import transaction
from ollama_ops.cli.common import Env, add_root, runtime
from ollama_ops.errors import ExitStatus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rollback", help="restore the files of the previous generation")
    add_root(p)
    p.add_argument("--unit", default="ollama.service", help="the unit to restart (ollama.service)")
    p.add_argument("--no-restart", action="store_true", help="restore the files only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, env: Env) -> int:
    number = transaction.rollback(runtime(args, env), args.unit, restart=not args.no_restart)
    if number is None:
        env.stdout.write("nothing to roll back: no generation was saved under this root\n")
    else:
        env.stdout.write(f"restored the files as they were before generation {number}\n")
    return ExitStatus.OK
