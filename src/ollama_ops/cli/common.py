"""What every command shares: the environment it writes to, common options, the plan inputs.

``Env`` is httpie's ``Environment``: where output goes and how the runtime
for a root is made, so tests run the whole CLI in-process with fakes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ollama_ops.apply import transaction
from ollama_ops.apply.fileio import check_root
from ollama_ops.errors import OpsError
from ollama_ops.gpu import render as gpu_render
from ollama_ops.model import config as config_mod
from ollama_ops.model import facts as facts_mod
from ollama_ops.model.deployment import Deployment
from ollama_ops.plan.compose import build
from ollama_ops.render.systemd import render
from ollama_ops.runtime import Runtime


@dataclass
class Env:
    """Where the CLI writes and how it reaches the host; tests pass StringIO and fakes."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    make_runtime: Callable[[Path], Runtime] = field(default=lambda root: Runtime(root=root))


# A command module registers its parser and handler through this signature.
Handler = Callable[[argparse.Namespace, Env], int]


def add_root(p: argparse.ArgumentParser, what: str = "operate on files under DIR") -> None:
    p.add_argument(
        "--root",
        default="/",
        metavar="DIR",
        help=f"{what}; with a DIR other than /, no systemctl is run (default /)",
    )


def add_facts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--facts",
        metavar="FILE",
        help="plan for the host described by FILE (from `ollama-ops facts --json`)",
    )


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"deployment config (default {config_mod.DEFAULT_CONFIG_PATH}, inside --root)",
    )


def runtime(args: argparse.Namespace, env: Env) -> Runtime:
    root = Path(args.root)
    check_root(root)
    return env.make_runtime(root)


def load_facts(args: argparse.Namespace, rt: Runtime) -> facts_mod.HostFacts:
    if getattr(args, "facts", None):
        path = Path(args.facts)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise OpsError(
                f"--facts {args.facts!r} cannot be read ({why}); "
                "pass a file from `ollama-ops facts --json`"
            ) from exc
        return facts_mod.loads(text, args.facts)
    from ollama_ops.host import probe

    return probe.probe_host(rt)


def load_config(args: argparse.Namespace, root: Path) -> config_mod.DeploymentConfig:
    if args.config:
        return config_mod.load(Path(args.config))
    # Like `systemctl --root`: the default config is the one inside DIR.
    inside = root / str(config_mod.DEFAULT_CONFIG_PATH).lstrip("/")
    return config_mod.load(inside) if inside.is_file() else config_mod.DeploymentConfig()


@dataclass(frozen=True)
class Prepared:
    """The inputs and outputs of planning, shared by plan and apply."""

    rt: Runtime
    facts: facts_mod.HostFacts
    deployment: Deployment
    files: dict[str, str]


def prepare(args: argparse.Namespace, env: Env) -> Prepared:
    rt = runtime(args, env)
    cfg = load_config(args, rt.root)
    host = load_facts(args, rt)
    unit_path = transaction.packaged_unit(rt.root, cfg.service.unit, host.ollama.unit_path)
    if unit_path != host.ollama.unit_path:
        host = dataclasses.replace(
            host, ollama=dataclasses.replace(host.ollama, unit_path=unit_path)
        )
    deployment = build(host, cfg)
    files = render(deployment)
    # `gpu apply` owns its unit; every apply keeps the owned files it did not plan itself.
    files.update({p: t for p, t in gpu_render.installed(rt.root).items() if p not in files})
    return Prepared(rt, host, deployment, files)
