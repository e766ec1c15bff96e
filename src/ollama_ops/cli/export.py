"""`ollama-ops export ansible DIR`: a role, its wheels, an example playbook and inventory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ollama_ops.cli.common import Env
from ollama_ops.errors import ExitStatus
from ollama_ops.render.ansible import targets

if TYPE_CHECKING:
    from ollama_ops.render.ansible.export import Result


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="export a deployment for a fleet tool (ansible)")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    a = formats.add_parser(
        "ansible",
        help="an Ansible role, its wheels, an example playbook and inventory",
        description="Write DIR/roles/ollama_ops (tasks, defaults, handlers, meta/argument_specs"
        ".yml, the wheels the targets install from), DIR/playbook.yml and DIR/inventory.yml.",
    )
    a.add_argument("directory", metavar="DIR", help="a new or empty directory (see --force)")
    a.add_argument(
        "--python",
        action="append",
        metavar="X.Y",
        help="a target Python to carry wheels for; repeatable "
        f"(default {', '.join(targets.DEFAULT_PYTHONS)})",
    )
    a.add_argument(
        "--arch",
        default=targets.default_arch(),
        help="the targets' machine, e.g. x86_64 or aarch64 (default: this one's)",
    )
    a.add_argument(
        "--wheel", metavar="FILE", help="ship this ollama-ops wheel instead of the running one"
    )
    a.add_argument(
        "--find-links",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory of wheels for pip to look in first; repeatable",
    )
    a.add_argument("--no-index", action="store_true", help="pip uses --find-links only")
    a.add_argument(
        "--force",
        action="store_true",
        help="replace the role of an earlier export in DIR (its playbook and inventory are kept)",
    )
    a.add_argument("--json", action="store_true", help="machine-readable summary")
    a.set_defaults(func=run)


def has_deep_health(parser: argparse.ArgumentParser) -> bool:
    """Whether ``parser`` (ollama-ops') has `health --deep`: the role then gates on it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            health = action.choices.get("health")
            return health is not None and any("--deep" in a.option_strings for a in health._actions)
    return False


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.cli import main
    from ollama_ops.render.ansible import export, wheelhouse  # packaging: only when exporting

    pythons = [targets.parse_python(p) for p in args.python or targets.DEFAULT_PYTHONS]
    request = export.Request(
        directory=Path(args.directory),
        pythons=tuple(dict.fromkeys(pythons)),
        arch=args.arch,
        wheel_file=Path(args.wheel) if args.wheel else None,
        force=args.force,
        health_command=has_deep_health(main.build_parser()),
    )
    options = export.pip_options(args.find_links, args.no_index)
    result = export.export(request, wheelhouse.pip_downloader(options))
    env.stdout.write(_json(result) if args.json else _text(result))
    return ExitStatus.OK


def _json(r: Result) -> str:
    data = {
        "directory": str(r.directory),
        "version": r.version,
        "release": r.release,
        "pythons": list(r.pythons),
        "wheels": r.wheels,
        "bytes": r.size,
        "health_gate": r.health_gate,
        "written": list(r.written),
        "kept": list(r.kept),
    }
    return json.dumps(data, indent=2) + "\n"


def _text(r: Result) -> str:
    d = str(r.directory)
    gate = (
        "`ollama-ops health --deep`"
        if r.health_gate == "command"
        else "the API answering on http://127.0.0.1:11434/ (this ollama-ops has no health --deep)"
    )
    lines = [
        f"exported ollama-ops {r.version} (release {r.release}) to {d}",
        f"  role       {d}/roles/ollama_ops: {r.wheels} wheels for Python "
        f"{', '.join(r.pythons)} ({r.size / 2**20:.1f} MiB)",
    ]
    for name, label, fresh in (
        ("playbook.yml", "playbook", "written"),
        ("inventory.yml", "inventory", "written: an example, put your hosts in it"),
    ):
        lines.append(f"  {label:<10} {d}/{name}: {'kept (yours)' if name in r.kept else fresh}")
    lines += [
        f"  gate       {gate}",
        f"next: ansible-playbook -i {d}/inventory.yml {d}/playbook.yml --check --diff",
    ]
    return "\n".join(lines) + "\n"
