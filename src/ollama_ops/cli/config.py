"""`ollama-ops config`: the keys of the deployment config, and the config as read."""

from __future__ import annotations

import argparse
import json

from ollama_ops.cli.common import Env, add_config, add_root, load_config, runtime
from ollama_ops.errors import ExitStatus
from ollama_ops.model import config as config_mod


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "config",
        help="the config file's keys (`config keys`) or the config as read (`config show`)",
        description=f"The deployment config is {config_mod.DEFAULT_CONFIG_PATH} (inside --root).",
    )
    p.add_argument("what", choices=("keys", "show"), help="keys: every key; show: what was read")
    add_root(p)
    add_config(p)
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, env: Env) -> int:
    if args.what == "keys":
        if args.json:
            rows = [
                {"key": s.dotted, "example": s.example, "help": s.help} for s in config_mod.SETTINGS
            ]
            env.stdout.write(json.dumps(rows, indent=2) + "\n")
        else:
            env.stdout.write(config_mod.keys_table())
        return ExitStatus.OK
    cfg = load_config(args, runtime(args, env).root)
    shown = {s.dotted: getattr(getattr(cfg, s.section), s.key) for s in config_mod.SETTINGS}
    shown.update({f"environment.{k}": v for k, v in cfg.environment.items()})
    if args.json:
        data = {
            k: {"value": list(v) if isinstance(v, tuple) else v, "set": k in cfg.set_keys}
            for k, v in shown.items()
        }
        env.stdout.write(json.dumps({"source": cfg.source, "keys": data}, indent=2) + "\n")
        return ExitStatus.OK
    env.stdout.write(f"config: {cfg.source or 'none found, rules only'}\n")
    for key, value in shown.items():
        mark = "set" if key in cfg.set_keys else "default"
        env.stdout.write(f"  {key:<30} {mark:<8} {value!r}\n")
    return ExitStatus.OK
