"""The command line: parse, dispatch to one module per command, map exceptions to exit codes.

Every exit code comes from ``errors.ExitStatus``; an exception that is not an
``OpsError`` is a bug and exits ``INTERNAL`` with one line (the traceback
only with ``--debug``, which never changes the exit code).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from ollama_ops import __version__
from ollama_ops.cli import (
    apply,
    audit,
    bench,
    config,
    export,
    facts,
    gpu,
    health,
    instance,
    logs,
    memory,
    plan,
    pull,
    rollback,
    simulate,
    tune,
    watch,
)
from ollama_ops.cli.common import Env
from ollama_ops.errors import ExitStatus, OpsError, exit_codes_help, exit_status

# The commands in the order `--help` lists them; each module has register() and run().
COMMANDS = (
    facts,
    plan,
    apply,
    rollback,
    pull,
    audit,
    gpu,
    logs,
    memory,
    config,
    instance,
    health,
    watch,
    export,
    simulate,
    bench,
    tune,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ollama-ops",
        description="Run Ollama as a hardened, sized, verified systemd service.\n\n"
        "The usual order: `facts` (what the host has), `plan` (what would change and why),\n"
        "`apply` (write, restart, verify; `rollback` undoes it), `audit` (check what is\n"
        "installed). Every command prints a summary first; most have --json.",
        epilog=exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the version of ollama-ops and exit",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="log the commands run and show the traceback of an error (exit codes stay the same)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, env: Env | None = None) -> int:
    env = env or Env()
    argv = list(sys.argv[1:] if argv is None else argv)
    sim_args = simulate.simulator_argv(argv)
    if sim_args is not None:
        argv = ["simulate", "--", *sim_args]
    args = build_parser().parse_args(argv)
    if sim_args is not None:
        args.sim_args = sim_args
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        return int(args.func(args, env))
    except KeyboardInterrupt:
        env.stderr.write("ollama-ops: interrupted\n")
        return ExitStatus.INTERRUPTED
    except OpsError as exc:
        if args.debug:
            traceback.print_exc(file=env.stderr)
        env.stderr.write(f"ollama-ops: error: {exc}\n")
        return exit_status(exc)
    except Exception as exc:  # a bug of ours: one line, its own exit code
        if args.debug:
            traceback.print_exc(file=env.stderr)
        first = (str(exc).splitlines() or [""])[0][:200]
        env.stderr.write(
            f"ollama-ops: internal error: {type(exc).__name__}: {first}; "
            "rerun with --debug for the traceback and report it\n"
        )
        return ExitStatus.INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
