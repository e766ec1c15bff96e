"""What every command shares: the environment it writes to, common options, the plan inputs.

``Env`` is httpie's ``Environment``: where output goes and how the runtime
for a root is made, so tests run the whole CLI in-process with fakes.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ollama_ops.apply import transaction
from ollama_ops.apply.fileio import check_root
from ollama_ops.errors import OpsError
from ollama_ops.model import config as config_mod
from ollama_ops.model import facts as facts_mod
from ollama_ops.model.deployment import Deployment
from ollama_ops.plan import rootinstall
from ollama_ops.plan.compose import build
from ollama_ops.plan.preflight import preflight
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


MAX_WAIT_SECONDS = 86400.0


def wait_seconds(text: str) -> float:
    """An argparse type: seconds to wait, finite and above zero (NaN would wait forever)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= MAX_WAIT_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be a number of seconds above 0 and at most {MAX_WAIT_SECONDS:g} "
            "(NaN, inf and negative values would never end the wait or never wait)"
        )
    return value


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


def _with_root(
    args: argparse.Namespace, rt: Runtime, host: facts_mod.HostFacts, unit: str
) -> tuple[facts_mod.HostFacts, list[str]]:
    """Facts from a file, corrected by what the tree under --root holds (it wins), with notes.

    Only for a root other than /: on / the facts file is a plan for another machine.
    """
    if not getattr(args, "facts", None) or rt.root.resolve() == Path("/"):
        return host, []
    found = rootinstall.read(rt.root, unit)
    install, notes = rootinstall.reconcile(host.ollama, found, str(rt.root))
    return dataclasses.replace(host, ollama=install), notes


def prepare(args: argparse.Namespace, env: Env) -> Prepared:
    rt = runtime(args, env)
    cfg = load_config(args, rt.root)
    host, notes = _with_root(args, rt, load_facts(args, rt), cfg.service.unit)
    unit_path = transaction.packaged_unit(rt.root, cfg.service.unit, host.ollama.unit_path)
    if unit_path != host.ollama.unit_path:
        host = dataclasses.replace(
            host, ollama=dataclasses.replace(host.ollama, unit_path=unit_path)
        )
    deployment = build(host, cfg)
    if notes:
        deployment = dataclasses.replace(deployment, notes=(*notes, *deployment.notes))
    # The one preflight: what apply would refuse, plan refuses too, and so does audit's reader.
    preflight(deployment, rt.root)
    return Prepared(rt, host, deployment, render(deployment))
