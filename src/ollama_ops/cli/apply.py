"""`ollama-ops apply`: write the files, restart, verify; roll back on failure."""

from __future__ import annotations

import argparse

from ollama_ops.apply import instances, transaction
from ollama_ops.apply.diff import unified
from ollama_ops.cli import pull
from ollama_ops.cli.common import Env, add_config, add_facts, add_root, prepare, wait_seconds
from ollama_ops.errors import ExitStatus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("apply", help="write the files, restart, verify; roll back on failure")
    add_root(p)
    add_facts(p)
    add_config(p)
    p.add_argument(
        "--dry-run", action="store_true", help="print the diff; exit 1 when changes are pending"
    )
    p.add_argument("--no-restart", action="store_true", help="write and daemon-reload only")
    p.add_argument(
        "--timeout",
        type=wait_seconds,
        default=60.0,
        metavar="S",
        help="seconds to wait for the API (60)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, env: Env) -> int:
    prep = prepare(args, env)
    if args.dry_run:
        instances.preflight(prep.deployment, prep.rt.root)  # nginx -t, as apply runs it
        pending = transaction.pending_changes(prep.rt.root, prep.files)
        env.stdout.write(unified(pending) or "nothing to change\n")
        return ExitStatus.CHANGES_PENDING if pending else ExitStatus.OK
    outcome = transaction.apply(
        prep.rt, prep.deployment, prep.files, restart=not args.no_restart, timeout=args.timeout
    )
    for change in outcome.changes:
        env.stdout.write(f"{change.kind:<8} {change.path}\n")
    env.stdout.write(outcome.message + "\n")
    return pull.after_apply(args, env, prep, restarted=outcome.restarted)  # [models]
