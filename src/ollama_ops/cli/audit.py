"""`ollama-ops audit`: findings about the installed configuration; exit code = worst severity."""

from __future__ import annotations

import argparse

from ollama_ops.cli.common import Env, add_facts, add_root, load_facts, runtime
from ollama_ops.cli.output import emit, emit_json, width_for
from ollama_ops.errors import ExitStatus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        help="findings about the installed configuration; the exit code is the worst one",
        description="Read the unit as systemd would (its file and every drop-in) and report "
        "findings worst first, each with its file, line, directive and fix, plus the exposure "
        "score of `systemd-analyze security`. Exit 0 with no warnings, 10/11/12 when the "
        "worst finding is a warning, an error or critical.",
    )
    add_root(p)
    add_facts(p)
    p.add_argument(
        "--unit", default="ollama.service", help="the unit to audit (default ollama.service)"
    )
    p.add_argument("--json", action="store_true", help="the report as one JSON document")
    p.set_defaults(func=run)


SEVERITY_EXIT = (ExitStatus.OK, ExitStatus.AUDIT_WARNING, ExitStatus.AUDIT_ERROR)


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops import audit
    from ollama_ops.audit import model

    rt = runtime(args, env)
    host = load_facts(args, rt) if (args.facts or rt.live) else None
    report = audit.audit(rt.root, args.unit, host)
    if args.json:
        data = {"command": "audit", "summary": model.summary(report), **report.to_json()}
        emit_json(env.stdout, data)
    else:
        emit(env.stdout, model.text_doc(report, width_for(env.stdout)))
    worst = int(report.worst())
    return SEVERITY_EXIT[worst] if worst < len(SEVERITY_EXIT) else ExitStatus.AUDIT_CRITICAL
