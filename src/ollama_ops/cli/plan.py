"""`ollama-ops plan`: the sizing worksheet, the files and their diff; changes nothing."""

from __future__ import annotations

import argparse

from ollama_ops.apply.diff import unified
from ollama_ops.apply.transaction import pending_changes
from ollama_ops.cli.common import Env, add_config, add_facts, add_root, prepare
from ollama_ops.errors import ExitStatus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="the sizing worksheet, the files and their diff")
    add_root(p)
    add_facts(p)
    add_config(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.plan import explain

    prep = prepare(args, env)
    pending = pending_changes(prep.rt.root, prep.files)
    env.stdout.write(
        explain.report(prep.facts, prep.deployment, pending, unified(pending), str(prep.rt.root))
    )
    return ExitStatus.OK
