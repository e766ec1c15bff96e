"""`ollama-ops config`: the keys of the deployment config, and the config as read."""

from __future__ import annotations

import argparse

from ollama_ops.cli.common import Env, add_config, add_root, load_config, runtime
from ollama_ops.cli.output import Column, Doc, emit, emit_json, plural, same_inputs, width_for
from ollama_ops.errors import ExitStatus
from ollama_ops.model import config as config_mod

# Keys whose value is a size in bytes: shown the way a unit file writes them.
SIZE_KEYS = frozenset({"limits.os_reserve", "limits.memory_high", "limits.memory_max"})


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "config",
        help="the config file's keys (`config keys`) or the config as read (`config show`)",
        description=f"The deployment config is {config_mod.DEFAULT_CONFIG_PATH} (inside --root); "
        "every key is optional. `config keys` lists them with an example, `config show` "
        "prints each key's value as read and whether the file set it.",
    )
    p.add_argument(
        "what",
        choices=("keys", "show"),
        help="keys: every key with an example; show: the config as read, key by key",
    )
    add_root(p, "read the config under DIR")
    add_config(p)
    p.add_argument("--json", action="store_true", help="the same as one JSON document")
    p.add_argument(
        "--markdown",
        action="store_true",
        help="with keys: the Markdown table that README.md holds between its config-keys marks",
    )
    p.set_defaults(func=run)


def _size(num_bytes: int) -> str:
    for suffix, unit in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if num_bytes % unit == 0:
            return f"{num_bytes // unit}{suffix}"
    return f"{num_bytes} bytes ({config_mod.format_size(num_bytes)})"


def _value(key: str, value: object) -> str:
    if value is None:
        return "(unset: the rule decides)"
    if key in SIZE_KEYS and isinstance(value, int):
        return _size(value)
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value) or "(none)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _keys(args: argparse.Namespace, env: Env) -> int:
    if args.markdown:
        env.stdout.write(config_mod.keys_table())
        return ExitStatus.OK
    sections = [
        (f"[{name}]", help_text)
        for name, (_parse, help_text) in config_mod.SECTIONS.items()
        if not any(s.section == name for s in config_mod.SETTINGS)
    ]
    if args.json:
        listed = [
            {"key": s.dotted, "example": s.example, "help": s.help} for s in config_mod.SETTINGS
        ]
        listed += [{"key": k, "example": 'NAME = "value"', "help": h} for k, h in sections]
        emit_json(env.stdout, listed)
        return ExitStatus.OK
    doc = Doc(width_for(env.stdout))
    doc.summary(
        f"config keys: {plural(len(config_mod.SETTINGS) + len(sections), 'key')} of "
        f"{config_mod.DEFAULT_CONFIG_PATH}, every one optional; `ollama-ops config show` "
        "prints what was read"
    )
    doc.blank()
    rows: list[tuple[tuple[str, str], tuple[str, str]]] = []
    for key, help_text, example in [
        *((s.dotted, s.help, f"{s.key} = {s.example}") for s in config_mod.SETTINGS),
        *((k, h, 'NAME = "value"') for k, h in sections),
    ]:
        rows += [((key, "bold"), (help_text, "")), (("", ""), (f"e.g. {example}", "dim"))]
    doc.table(rows, (Column(28),))
    emit(env.stdout, doc)
    return ExitStatus.OK


def run(args: argparse.Namespace, env: Env) -> int:
    if args.what == "keys":
        return _keys(args, env)
    root = runtime(args, env).root
    cfg = load_config(args, root)
    shown = {s.dotted: getattr(getattr(cfg, s.section), s.key) for s in config_mod.SETTINGS}
    shown.update({f"environment.{k}": v for k, v in cfg.environment.items()})
    looked = args.config or str(root / str(config_mod.DEFAULT_CONFIG_PATH).lstrip("/"))
    if cfg.source:
        summary = (
            f"config: {cfg.source}: {plural(len(cfg.set_keys), 'key')} set, the rules decide "
            f"the rest; `{same_inputs('plan', args)}` shows what they make"
        )
    else:
        summary = (
            f"config: none found at {looked}: the rules decide every value; "
            "`ollama-ops config keys` lists what a config can set"
        )
    if args.json:
        data = {
            k: {"value": list(v) if isinstance(v, tuple) else v, "set": k in cfg.set_keys}
            for k, v in shown.items()
        }
        emit_json(env.stdout, {"summary": summary, "source": cfg.source, "keys": data})
        return ExitStatus.OK
    doc = Doc(width_for(env.stdout))
    doc.summary(summary)
    doc.blank()
    rows = [
        (
            (key, "bold"),
            ("set", "magenta") if key in cfg.set_keys else ("default", "dim"),
            (_value(key, value), ""),
        )
        for key, value in shown.items()
    ]
    doc.table(rows, (Column(30), Column(7)))
    emit(env.stdout, doc)
    return ExitStatus.OK
