"""Command line: parse arguments, call the library, map typed errors to exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TextIO

from ollama_ops import __version__
from ollama_ops.apply import transaction as apply_mod
from ollama_ops.errors import OpsError
from ollama_ops.model import config as config_mod
from ollama_ops.model import facts as facts_mod
from ollama_ops.plan import compose as plan_mod
from ollama_ops.render import systemd as render_mod


class Exit(IntEnum):
    OK = 0
    CHANGES_PENDING = 1  # --dry-run found changes (like `diff`)
    USAGE = 2  # bad input: config, facts, arguments
    COMMAND = 3  # an external command failed
    APPLY = 4  # apply/rollback failed (previous config restored)
    AUDIT_WARNING = 10
    AUDIT_ERROR = 11
    AUDIT_CRITICAL = 12


@dataclass
class Env:
    """Where the CLI writes; tests pass StringIO to run it in-process."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)


def _facts(args: argparse.Namespace, root: Path) -> facts_mod.HostFacts:
    if args.facts:
        path = Path(args.facts)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise OpsError(
                f"--facts {args.facts!r} cannot be read ({why}); pass a file from `ollama-ops facts --json`"
            ) from exc
        return facts_mod.loads(text, args.facts)
    from ollama_ops.host import probe

    return probe.probe_host(root)


def _root(args: argparse.Namespace) -> Path:
    root = Path(args.root)
    apply_mod.check_root(root)
    return root


def _config(args: argparse.Namespace, root: Path) -> config_mod.DeploymentConfig:
    if args.config:
        return config_mod.load(Path(args.config))
    # Like `systemctl --root`: the default config is the one inside DIR.
    inside = root / str(config_mod.DEFAULT_CONFIG_PATH).lstrip("/")
    return config_mod.load(inside) if inside.is_file() else config_mod.DeploymentConfig()


def _prepare(
    args: argparse.Namespace,
) -> tuple[Path, facts_mod.HostFacts, plan_mod.Deployment, dict[str, str]]:
    root = _root(args)
    cfg = _config(args, root)
    host = _facts(args, root)
    unit_path = apply_mod.packaged_unit(root, cfg.service.unit, host.ollama.unit_path)
    if unit_path != host.ollama.unit_path:
        host = dataclasses.replace(
            host, ollama=dataclasses.replace(host.ollama, unit_path=unit_path)
        )
    deployment = plan_mod.build(host, cfg)
    return root, host, deployment, render_mod.render(deployment)


def cmd_facts(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.host import probe
    from ollama_ops.plan import explain

    host = probe.probe_host(Path(args.root))
    env.stdout.write(facts_mod.dumps(host) if args.json else explain.host_summary(host) + "\n")
    return Exit.OK


def cmd_plan(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.plan import explain

    root, host, deployment, files = _prepare(args)
    pending = apply_mod.changes(root, files)
    env.stdout.write(explain.report(host, deployment, pending, apply_mod.diff(pending), str(root)))
    return Exit.OK


def cmd_apply(args: argparse.Namespace, env: Env) -> int:
    root, _host, deployment, files = _prepare(args)
    if args.dry_run:
        apply_mod.preflight(deployment, root)
        pending = apply_mod.changes(root, files)
        env.stdout.write(apply_mod.diff(pending) or "nothing to change\n")
        return Exit.CHANGES_PENDING if pending else Exit.OK
    outcome = apply_mod.apply(
        deployment, files, root, restart=not args.no_restart, timeout=args.timeout
    )
    for change in outcome.changes:
        env.stdout.write(f"{change.kind:<8} {change.path}\n")
    env.stdout.write(outcome.message + "\n")
    return Exit.OK


def cmd_rollback(args: argparse.Namespace, env: Env) -> int:
    root = _root(args)
    number = apply_mod.rollback(root, args.unit, restart=not args.no_restart)
    env.stdout.write(f"restored the files as they were before generation {number}\n")
    return Exit.OK


def cmd_audit(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops import audit

    root = _root(args)
    host = _facts(args, root) if (args.facts or root == Path("/")) else None
    report = audit.audit(root, args.unit, host)
    if args.json:
        env.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        env.stdout.write(audit.format_text(report))
    worst = report.worst()
    return {0: Exit.OK, 1: Exit.AUDIT_WARNING, 2: Exit.AUDIT_ERROR}.get(
        int(worst), Exit.AUDIT_CRITICAL
    )


def cmd_simulate(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.sim import cli as sim_cli

    return sim_cli.main(["serve", *args.sim_args])


def _simulate_argv(argv: list[str]) -> list[str] | None:
    """`ollama-ops [--debug] simulate ARGS...`: every ARG, --help included, is the simulator's."""
    rest = [a for a in argv if a != "--debug"]
    return rest[1:] if rest and rest[0] == "simulate" else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ollama-ops",
        description="Run Ollama as a hardened, sized, verified systemd service.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="log commands and show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, *, facts: bool = True, config: bool = True) -> None:
        p.add_argument(
            "--root",
            default="/",
            metavar="DIR",
            help="operate on files under DIR; no systemctl (default /)",
        )
        if facts:
            p.add_argument(
                "--facts",
                metavar="FILE",
                help="plan for the host described by FILE (from `facts --json`)",
            )
        if config:
            p.add_argument(
                "--config",
                metavar="FILE",
                help=f"deployment config (default {config_mod.DEFAULT_CONFIG_PATH})",
            )

    p = sub.add_parser("facts", help="what this host has")
    p.add_argument("--json", action="store_true", help="machine-readable, input for --facts")
    p.add_argument("--root", default="/", metavar="DIR", help="read /proc, /sys and /etc under DIR")
    p.set_defaults(func=cmd_facts)

    p = sub.add_parser("plan", help="the sizing worksheet, the files and their diff")
    common(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="write the files, restart, verify; roll back on failure")
    common(p)
    p.add_argument(
        "--dry-run", action="store_true", help="print the diff; exit 1 when changes are pending"
    )
    p.add_argument("--no-restart", action="store_true", help="write and daemon-reload only")
    p.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="seconds to wait for the API (60)"
    )
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("rollback", help="restore the files of the previous generation")
    common(p, facts=False, config=False)
    p.add_argument("--unit", default="ollama.service")
    p.add_argument("--no-restart", action="store_true")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("audit", help="findings about the installed configuration")
    common(p, config=False)
    p.add_argument("--unit", default="ollama.service")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "simulate", add_help=False, help="an Ollama-compatible simulator (see docs/simulator.md)"
    )
    p.add_argument("sim_args", nargs=argparse.REMAINDER, help="options passed to the simulator")
    p.set_defaults(func=cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None, env: Env | None = None) -> int:
    env = env or Env()
    argv = list(sys.argv[1:] if argv is None else argv)
    sim_args = _simulate_argv(argv)
    if sim_args is not None:
        argv = ["simulate", "--", *sim_args]
    parser = build_parser()
    args = parser.parse_args(argv)
    if sim_args is not None:
        args.sim_args = sim_args
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        return int(args.func(args, env))
    except OpsError as exc:
        if args.debug:
            raise
        env.stderr.write(f"ollama-ops: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        env.stderr.write("ollama-ops: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
