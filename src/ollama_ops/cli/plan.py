"""`ollama-ops plan`: what would change and why (summary, worksheet, files, diff); changes nothing."""

from __future__ import annotations

import argparse

from ollama_ops.apply.diff import unified
from ollama_ops.apply.transaction import pending_changes
from ollama_ops.cli.common import Env, add_config, add_facts, add_root, prepare
from ollama_ops.cli.output import emit, emit_json, same_inputs, width_for
from ollama_ops.errors import ExitStatus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan",
        help="what apply would write and why: summary, worksheet, files, diff (changes nothing)",
        description="Print what `ollama-ops apply` would write for this host and why: a summary, "
        "every setting with its source and reason, the files and their diff against --root, "
        "and the seed guide setting by setting. Writes nothing; exits 0 whether or not "
        "changes are pending (use `apply --dry-run` for an exit code).",
    )
    add_root(p)
    add_facts(p)
    add_config(p)
    p.add_argument("--json", action="store_true", help="the same facts as one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.plan import explain

    prep = prepare(args, env)
    pending = pending_changes(prep.rt.root, prep.files)
    root, diff_text = str(prep.rt.root), unified(pending)
    apply_cmd = same_inputs("apply", args)
    if args.json:
        emit_json(
            env.stdout,
            explain.plan_json(
                prep.facts, prep.deployment, pending, diff_text, root, next_command=apply_cmd
            ),
        )
        return ExitStatus.OK
    doc = explain.plan_doc(
        prep.facts,
        prep.deployment,
        pending,
        diff_text,
        root,
        next_command=apply_cmd,
        width=width_for(env.stdout),
    )
    emit(env.stdout, doc)
    return ExitStatus.OK
