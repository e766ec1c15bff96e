"""`ollama-ops apply`: write the files, restart, verify; roll back on failure."""

from __future__ import annotations

import argparse
import io
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ollama_ops.apply import instances, transaction
from ollama_ops.apply.diff import Change, unified
from ollama_ops.cli import pull
from ollama_ops.cli.common import Env, add_config, add_facts, add_root, prepare, wait_seconds
from ollama_ops.cli.output import Column, Doc, emit, emit_json, same_inputs, width_for
from ollama_ops.errors import ExitStatus
from ollama_ops.model.deployment import Deployment


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


@dataclass(frozen=True)
class Activation:
    """What the changes restart, stop and reload, decided as apply decides it
    (apply/activate.py and apply/instances.py): the main unit when its own files changed, each
    instance whose drop-in or template changed, an instance whose drop-in went, nginx when
    the front door's file changed."""

    restart: tuple[str, ...]
    stop: tuple[str, ...]
    nginx: bool

    @classmethod
    def of(cls, deployment: Deployment, changes: Sequence[Change]) -> Activation:
        todo = instances.actions(deployment, changes)
        main = (deployment.unit_name,) if instances.main_changed(deployment, changes) else ()
        return cls(main + tuple(d.unit_name for d in todo.restart), todo.stop, todo.frontdoor)

    def commands(self, unit: str) -> str:
        """The systemctl commands that do it by hand (the main unit's restart when none)."""
        out = [f"systemctl stop {shlex.join(self.stop)}"] if self.stop else []
        if self.restart or not (self.stop or self.nginx):
            out.append(f"systemctl restart {shlex.join(self.restart or (unit,))}")
        if self.nginx:
            out.append("systemctl reload nginx")
        return " && ".join(out)

    def done(self, unit: str) -> str:
        """What the live apply did, after systemd reloaded the files."""
        parts = [f"{unit} restarted and its API answers"] if unit in self.restart else []
        others = [u for u in self.restart if u != unit]
        if others:
            parts.append(f"{', '.join(others)} restarted and {_answer(len(others))}")
        if self.stop:
            parts.append(f"{', '.join(self.stop)} stopped")
        if self.nginx:
            parts.append("nginx reloaded the front door")
        if unit not in self.restart:
            parts.append(f"{unit} kept running (its files did not change)")
        return ", ".join(parts)

    def would(self) -> str:
        """What a live apply of these changes would do, for --dry-run."""
        parts = [f"restarts {', '.join(self.restart)}"] if self.restart else []
        parts += [f"stops {', '.join(self.stop)}"] if self.stop else []
        parts += ["reloads nginx (the front door)"] if self.nginx else []
        return f"on the live system apply {', '.join(parts) or 'restarts nothing'}"

    def to_json(self) -> dict[str, object]:
        return {"restart": list(self.restart), "stop": list(self.stop), "reload_nginx": self.nginx}


def _answer(count: int) -> str:
    return "its API answers" if count == 1 else "their APIs answer"


def _summary(
    outcome: transaction.Outcome,
    root: str,
    live: bool,
    unit: str,
    rollback_cmd: str,
    *,
    act: Activation,
) -> str:
    if not outcome.changes:
        return f"apply: {outcome.message}"
    files = f"wrote {_count(outcome.changes)} under {root}"
    wrote = f"{files} as generation {outcome.generation}"
    undo = f"`{rollback_cmd}` restores the previous files"
    if not live:
        return (
            f"apply: {wrote}; nothing was reloaded or restarted (--root {root} is not the live "
            f"system): on the host that boots this tree run `systemctl daemon-reload && "
            f"{act.commands(unit)}`; {undo}"
        )
    if not outcome.restarted:
        alone = act.restart in ((), (unit,)) and not (act.stop or act.nginx)
        held = f"{unit} was not restarted" if alone else "nothing was restarted or reloaded"
        return (
            f"apply: {wrote}; systemd reloaded them, {held} (--no-restart): "
            f"run `{act.commands(unit)}` to use them; {undo}"
        )
    return (
        f"apply: applied generation {outcome.generation}: {files}; "
        f"systemd reloaded them, {act.done(unit)}; {undo}"
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
        instances.preflight(prep.deployment, prep.rt.root)  # nginx -t, as apply runs it
        pending = transaction.pending_changes(prep.rt.root, prep.files)
        diff_text = unified(pending)
        summary = _dry_run_summary(pending, root, same_inputs("apply", args))
        code = ExitStatus.CHANGES_PENDING if pending else ExitStatus.OK
        act = Activation.of(prep.deployment, pending)
        if args.json:
            data = _json(
                args, root, unit, summary, pending, act=act, outcome=None, diff_text=diff_text
            )
            emit_json(env.stdout, data)
            return code
        doc.summary(summary)
        if pending and act != Activation((unit,), (), nginx=False):
            doc.text(act.would(), indent="  ", hanging="    ")  # instances, the front door
        if pending:
            _files(doc, pending)
            doc.blank()
            diff_doc(doc, diff_text.rstrip())
        emit(env.stdout, doc)
        return code
    # A tune that was killed half-way: its original configuration first (tune/marker.py).
    from ollama_ops.tune.marker import recover

    if note := recover(prep.rt, timeout=args.timeout):
        env.stderr.write(f"ollama-ops: {note}\n")
    outcome = transaction.apply(
        prep.rt, prep.deployment, prep.files, restart=not args.no_restart, timeout=args.timeout
    )
    rollback_cmd = same_inputs("rollback", argparse.Namespace(root=args.root))
    act = Activation.of(prep.deployment, outcome.changes)
    summary = _summary(outcome, root, prep.rt.live, unit, rollback_cmd, act=act)
    if args.json:
        # The [models] step's lines go into the document, which stays one JSON value.
        lines = io.StringIO()
        models_code = pull.after_apply(
            args, Env(lines, env.stderr, env.make_runtime), prep, restarted=outcome.restarted
        )
        data = _json(
            args, root, unit, summary, outcome.changes, act=act, outcome=outcome, diff_text=None
        )
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
    act: Activation,
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
        # What these changes restart, stop and reload: done when restarted is true.
        "units": act.to_json(),
        "message": outcome.message if outcome else None,
        "diff": diff_text,
    }
