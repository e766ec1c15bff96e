"""`ollama-ops rollback`: restore the files as they were before the newest generation."""

from __future__ import annotations

import argparse
import shlex

from ollama_ops.apply import instances, transaction
from ollama_ops.cli.common import Env, add_root, runtime
from ollama_ops.cli.output import Column, Doc, emit, emit_json, plural, width_for
from ollama_ops.errors import ExitStatus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rollback",
        help="restore the files as they were before the newest apply",
        description="Put back every file the newest generation (apply) changed, as it was "
        "before, and remove the files and directories it created; on the live system "
        "(--root /) systemd is reloaded and the service restarted. Run it again to go back "
        "one more generation. Nothing to roll back is not an error (exit 0).",
    )
    add_root(p)
    p.add_argument(
        "--unit",
        default="ollama.service",
        help="the unit to reload and restart after restoring (default ollama.service)",
    )
    p.add_argument(
        "--no-restart",
        action="store_true",
        help="restore the files only: no daemon-reload, no restart",
    )
    p.add_argument("--json", action="store_true", help="the outcome as one JSON document")
    p.set_defaults(func=run)


def _summary(out: transaction.RollbackOutcome, root: str, live: bool, unit: str) -> str:
    if out.generation is None:
        return "rollback: nothing to roll back: no generation was saved under this root"
    restored = sum(1 for _, existed in out.files if existed)
    removed = len(out.files) - restored
    what = ", ".join(
        part
        for part in (
            f"{plural(restored, 'file')} restored" if restored else "",
            f"{plural(removed, 'file')} it had created removed" if removed else "",
        )
        if part
    )
    head = (
        f"rollback: undid the apply of generation {out.generation} that a crash had "
        f"interrupted: the files under {root} are as they were before it ({what})"
        if out.interrupted
        else f"rollback: the files under {root} are as they were before generation "
        f"{out.generation} ({what})"
    )
    quoted = shlex.quote(unit)
    if out.reloaded:
        tail = "systemd reloaded them"
        if out.stopped:
            tail += f", {out.stopped} (which that generation had written) stopped and disabled"
        if out.restarted:
            tail += f", {unit} restarted"
        tail += "".join(f", {done}" for done in out.instances)  # ollama@NAME, nginx
        if not out.restarted and out.stopped != unit:
            tail += (
                f"; {unit} did not restart: see `systemctl status {quoted}` and "
                f"`journalctl -u {quoted}`"
            )
        return f"{head}; {tail}"
    if live:
        others = "".join(f" && {cmd}" for cmd in instances.by_hand(out.files))  # ollama@, nginx
        return (
            f"{head}; nothing was reloaded or restarted (--no-restart): run `systemctl "
            f"daemon-reload && systemctl restart {quoted}{others}` to use them"
        )
    return f"{head}; nothing was reloaded or restarted (--root is not the live system)"


def run(args: argparse.Namespace, env: Env) -> int:
    rt = runtime(args, env)
    out = transaction.rollback_outcome(rt, args.unit, restart=not args.no_restart)
    summary = _summary(out, str(rt.root), rt.live, args.unit)
    files = [{"path": p, "status": "restored" if e else "removed"} for p, e in out.files]
    if args.json:
        emit_json(
            env.stdout,
            {
                "command": "rollback",
                "summary": summary,
                "root": str(rt.root),
                "unit": args.unit,
                "generation": out.generation,
                "interrupted": out.interrupted,
                "files": files,
                "reloaded": out.reloaded,
                "restarted": out.restarted,
                "stopped": out.stopped,
                "instances": list(out.instances),  # what happened to ollama@NAME and nginx
            },
        )
        return ExitStatus.OK
    doc = Doc(width_for(env.stdout))
    doc.summary(summary)
    styles = {"restored": "green", "removed": "red"}
    doc.table([((f["status"], styles[f["status"]]), (f["path"], "")) for f in files], (Column(9),))
    emit(env.stdout, doc)
    return ExitStatus.OK
