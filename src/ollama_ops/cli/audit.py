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
        "score of `systemd-analyze security`; then each instance (ollama@NAME) of the unit's "
        "template the same way, with the findings across them. Exit 0 with no warnings, "
        "10/11/12 when the worst finding of them all is a warning, an error or critical.",
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
    from ollama_ops.audit import model, rules_instances

    rt = runtime(args, env)
    host = load_facts(args, rt) if (args.facts or rt.live) else None
    version = audit.systemd_version_for(rt, host)  # asked once, for every unit
    report = audit.audit(rt, args.unit, host, systemd_version=version)
    # The main unit's instances (ollama@NAME) too, with the findings across them.
    fleet = (
        []
        if "@" in args.unit
        else rules_instances.fleet_reports(rt, report, host, systemd_version=version)
    )
    if args.json:
        data = {
            "command": "audit",
            "summary": model.fleet_summary([report, *fleet]),
            **report.to_json(),
            "instances": [r.to_json() for r in fleet],
            "worst_of_all": model.worst_of([report, *fleet]).label,  # decides the exit code
        }
        emit_json(env.stdout, data)
    else:
        emit(env.stdout, model.fleet_doc([report, *fleet], width_for(env.stdout)))
    worst = int(model.worst_of([report, *fleet]))
    return SEVERITY_EXIT[worst] if worst < len(SEVERITY_EXIT) else ExitStatus.AUDIT_CRITICAL
