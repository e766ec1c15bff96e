"""`ollama-ops audit`: findings about the installed configuration; exit code = worst severity."""

from __future__ import annotations

import argparse
import json

from ollama_ops.cli.common import Env, add_facts, add_root, load_facts, runtime
from ollama_ops.errors import ExitStatus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="findings about the installed configuration")
    add_root(p)
    add_facts(p)
    p.add_argument("--unit", default="ollama.service", help="the unit to audit (ollama.service)")
    p.add_argument("--json", action="store_true", help="machine-readable findings")
    p.set_defaults(func=run)


SEVERITY_EXIT = (ExitStatus.OK, ExitStatus.AUDIT_WARNING, ExitStatus.AUDIT_ERROR)


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops import audit
    from ollama_ops.audit import rules_instances

    rt = runtime(args, env)
    host = load_facts(args, rt) if (args.facts or rt.live) else None
    report = audit.audit(rt.root, args.unit, host)
    # The main unit's instances (ollama@NAME) too, with the findings across them.
    fleet = [] if "@" in args.unit else rules_instances.fleet_reports(rt.root, report, host)
    if args.json:
        data = {**report.to_json(), "instances": [r.to_json() for r in fleet]}
        env.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        env.stdout.write("".join(audit.format_text(r) for r in [report, *fleet]))
    worst = int(max(r.worst() for r in [report, *fleet]))
    return SEVERITY_EXIT[worst] if worst < len(SEVERITY_EXIT) else ExitStatus.AUDIT_CRITICAL
