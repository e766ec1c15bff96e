"""`ollama-ops apply`: write the files, restart, verify; roll back on failure."""

from __future__ import annotations

import argparse
import io
import shlex
from collections.abc import Sequence

from ollama_ops.apply import transaction
from ollama_ops.apply.diff import Change, unified
from ollama_ops.cli import pull
from ollama_ops.cli.common import Env, add_config, add_facts, add_root, prepare, wait_seconds
from ollama_ops.cli.output import Column, Doc, emit, emit_json, same_inputs, width_for
from ollama_ops.errors import ExitStatus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "apply",
        help="write the files, restart, verify; roll back on failure",
        description="Write the planned files atomically (each apply is a generation that "
        "`ollama-ops rollback` undoes). On the live system (--root /) systemd is reloaded, the "
        "service restarted and checked with `systemctl show` and its API; if it does not come "
        "up, the previous files are restored. With another --root only the files are written.",
    )
    add_root(p)
    add_facts(p)
    add_config(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="write nothing: print what would change and the diff; exit 1 when changes are pending",
    )
    p.add_argument(
        "--no-restart",
        action="store_true",
        help="write the files and run daemon-reload, but do not restart the service",
    )
    p.add_argument(
        "--timeout",
        type=wait_seconds,
        default=60.0,
        metavar="S",
        help="seconds to wait for the restarted service's API before rolling back (default 60)",
    )
    p.add_argument("--json", action="store_true", help="the outcome as one JSON document")
    p.set_defaults(func=run)


KINDS = ("new", "changed", "removed")
KIND_STYLE = {"new": "green", "changed": "yellow", "removed": "red"}


def _count(changes: Sequence[Change]) -> str:
    from ollama_ops.plan.explain import change_summary

    return change_summary(changes)


def _dry_run_summary(changes: Sequence[Change], root: str, apply_cmd: str) -> str:
    if not changes:
        return f"apply --dry-run: nothing to change: the files under {root} already match the plan"
    return (
        f"apply --dry-run: {_count(changes)} would change under {root}; "
        f"run `{apply_cmd}` to write them"
    )


def _summary(
    outcome: transaction.Outcome, root: str, live: bool, unit: str, rollback_cmd: str
) -> str:
    if not outcome.changes:
        return f"apply: {outcome.message}"
    files = f"wrote {_count(outcome.changes)} under {root}"
    wrote = f"{files} as generation {outcome.generation}"
    undo = f"`{rollback_cmd}` restores the previous files"
    quoted = shlex.quote(unit)
    if not live:
        return (
            f"apply: {wrote}; nothing was reloaded or restarted (--root {root} is not the live "
            f"system): on the host that boots this tree run `systemctl daemon-reload && "
            f"systemctl restart {quoted}`; {undo}"
        )
    if not outcome.restarted:
        return (
            f"apply: {wrote}; systemd reloaded them, {unit} was not restarted (--no-restart): "
            f"run `systemctl restart {quoted}` to use them; {undo}"
        )
    return (
        f"apply: applied generation {outcome.generation}: {files}; "
        f"systemd reloaded them, {unit} restarted and its API answers; {undo}"
    )


def _files(doc: Doc, changes: Sequence[Change]) -> None:
    rows = [((c.kind, KIND_STYLE[c.kind]), (c.path, "")) for c in changes]
    doc.table(rows, (Column(9),))


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.plan.explain import diff_doc

    prep = prepare(args, env)
    root, unit = str(prep.rt.root), prep.deployment.unit_name
    doc = Doc(width_for(env.stdout))
    if args.dry_run:
        pending = transaction.pending_changes(prep.rt.root, prep.files)
        diff_text = unified(pending)
        summary = _dry_run_summary(pending, root, same_inputs("apply", args))
        code = ExitStatus.CHANGES_PENDING if pending else ExitStatus.OK
        if args.json:
            data = _json(args, root, unit, summary, pending, outcome=None, diff_text=diff_text)
            emit_json(env.stdout, data)
            return code
        doc.summary(summary)
        if pending:
            _files(doc, pending)
            doc.blank()
            diff_doc(doc, diff_text.rstrip())
        emit(env.stdout, doc)
        return code
    outcome = transaction.apply(
        prep.rt, prep.deployment, prep.files, restart=not args.no_restart, timeout=args.timeout
    )
    rollback_cmd = same_inputs("rollback", argparse.Namespace(root=args.root))
    summary = _summary(outcome, root, prep.rt.live, unit, rollback_cmd)
    if args.json:
        # The [models] step's lines go into the document, which stays one JSON value.
        lines = io.StringIO()
        models_code = pull.after_apply(
            args, Env(lines, env.stderr, env.make_runtime), prep, restarted=outcome.restarted
        )
        data = _json(args, root, unit, summary, outcome.changes, outcome=outcome, diff_text=None)
        emit_json(env.stdout, {**data, "models": lines.getvalue().splitlines()})
        return models_code
    doc.summary(summary)
    _files(doc, outcome.changes)
    emit(env.stdout, doc)
    return pull.after_apply(args, env, prep, restarted=outcome.restarted)  # [models]


def _json(
    args: argparse.Namespace,
    root: str,
    unit: str,
    summary: str,
    changes: Sequence[Change],
    *,
    outcome: transaction.Outcome | None,
    diff_text: str | None,
) -> dict[str, object]:
    """`apply --json`: the same facts as the text (stable keys; diff only with --dry-run)."""
    return {
        "command": "apply",
        "summary": summary,
        "root": root,
        "unit": unit,
        "dry_run": bool(args.dry_run),
        "changes": {kind: sum(1 for c in changes if c.kind == kind) for kind in KINDS},
        "files": [{"path": c.path, "status": c.kind} for c in changes],
        "generation": outcome.generation if outcome else None,
        "reloaded": outcome.reloaded if outcome else False,
        "restarted": outcome.restarted if outcome else False,
        "message": outcome.message if outcome else None,
        "diff": diff_text,
    }
