"""`ollama-ops facts`: what this host has."""

from __future__ import annotations

import argparse

from ollama_ops.cli.common import Env, add_root, runtime
from ollama_ops.errors import ExitStatus
from ollama_ops.model import facts as facts_mod


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("facts", help="what this host has: RAM, CPUs, NUMA, GPUs, systemd, ollama")
    p.add_argument("--json", action="store_true", help="machine-readable, input for --facts")
    add_root(p, "read /proc, /sys and /etc under DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.host import probe
    from ollama_ops.plan import explain

    host = probe.probe_host(runtime(args, env))
    env.stdout.write(facts_mod.dumps(host) if args.json else explain.host_summary(host) + "\n")
    return ExitStatus.OK
