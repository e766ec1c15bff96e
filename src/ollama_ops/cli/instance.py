"""`ollama-ops instance add|list|remove`: manage [instances.NAME] in the deployment config.

add and remove edit the TOML file (comments and layout kept, through
tomlkit) only after the edited config has been planned for this host
without an error: a bad name, port, GPU or memory limit is one line and the
file stays as it was. `ollama-ops plan` then shows and `apply` installs the
change, like every other change to the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ollama_ops.apply import transaction
from ollama_ops.apply.fileio import FILE_MODE, open_dir
from ollama_ops.cli.common import (
    Env,
    add_config,
    add_facts,
    add_root,
    load_facts,
    prepare,
    runtime,
)
from ollama_ops.errors import ConfigError, ExitStatus, OpsError
from ollama_ops.model import config as config_mod
from ollama_ops.model.bind import validate_bind
from ollama_ops.model.config import format_size
from ollama_ops.model.deployment import Deployment
from ollama_ops.model.instances import check_name
from ollama_ops.plan import instance_checks
from ollama_ops.plan.compose import build
from ollama_ops.runtime import Runtime

if TYPE_CHECKING:
    import tomlkit


def _common(p: argparse.ArgumentParser) -> None:
    add_root(p)
    add_facts(p)
    add_config(p)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("instance", help="add, list or remove Ollama instances (ollama@NAME)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="declare an instance in the config (then plan, apply)")
    add.add_argument("name", help="letters, digits, '-' and '_': it names ollama@NAME.service")
    add.add_argument("--gpus", default="", help="GPU indexes or UUIDs, e.g. 0,1 (none: CPU only)")
    add.add_argument("--port", type=int, help="its port (default: the next free one)")
    add.add_argument("--bind", help="its address (default 127.0.0.1)")
    add.add_argument("--allow", action="append", default=[], metavar="NET", help="client network")
    add.add_argument("--memory-max", metavar="SIZE", help="MemoryMax, e.g. 48G (default: a share)")
    add.add_argument("--memory-high", metavar="SIZE", help="MemoryHigh, e.g. 40G")
    add.add_argument("--cpu-weight", type=int, metavar="N", help="CPUWeight (default 150)")
    add.add_argument("--cpus", metavar="LIST", help='AllowedCPUs: "auto", "none" or "0-15"')
    add.add_argument("--models-dir", metavar="PATH", help='its model store, or "shared"')
    add.add_argument("--prune", action=argparse.BooleanOptionalAction, default=None)
    add.add_argument("--share-gpus", action="store_true", help="allow its GPUs in others too")
    add.add_argument(
        "--model", action="append", default=[], metavar="NAME[=SIZE]", help="a model it serves"
    )
    add.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="an Ollama variable"
    )
    _common(add)
    add.set_defaults(func=run_add)
    lst = actions.add_parser("list", help="the instances in the config and their state")
    lst.add_argument("--json", action="store_true", help="machine-readable")
    _common(lst)
    lst.set_defaults(func=run_list)
    rm = actions.add_parser("remove", help="remove an instance from the config (then apply)")
    rm.add_argument("name")
    _common(rm)
    rm.set_defaults(func=run_remove)


# ---------------------------------------------------------------- the config file


def config_path(args: argparse.Namespace, rt: Runtime) -> Path:
    if args.config:
        return Path(args.config)
    return rt.root / str(config_mod.DEFAULT_CONFIG_PATH).lstrip("/")


def _read(path: Path) -> tuple[str, tomlkit.TOMLDocument]:
    import tomlkit  # only add and remove edit TOML: every other command starts without it
    from tomlkit.exceptions import TOMLKitError

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "", tomlkit.document()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({exc}); fix it") from exc
    try:
        return text, tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax first") from exc


def _checked(args: argparse.Namespace, rt: Runtime, path: Path, text: str) -> Deployment:
    """Plan the edited config for this host: any error stops the edit before it is written."""
    cfg = config_mod.loads(text, str(path))
    host = load_facts(args, rt)
    unit_path = transaction.packaged_unit(rt.root, cfg.service.unit, host.ollama.unit_path)
    host = dataclasses.replace(host, ollama=dataclasses.replace(host.ollama, unit_path=unit_path))
    return build(host, cfg)


def _write(path: Path, text: str) -> None:
    """Replace the config atomically, keeping its mode."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else FILE_MODE
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        with open_dir(path.parent) as directory:
            directory.write(path.name, text.encode(), mode)
    except OSError as exc:
        raise OpsError(f"cannot write {path} ({exc.strerror}); check permissions") from exc


# ---------------------------------------------------------------- add


def _gpu_refs(text: str) -> list[int | str]:
    refs: list[int | str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        refs.append(int(part) if part.isdigit() else part)
    return refs


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"{flag} {item!r}: write NAME=VALUE")
        out.append((name, value))
    return out


def _free_port(doc: tomlkit.TOMLDocument) -> int:
    cfg = config_mod.from_dict(doc.unwrap(), "config")
    taken = {validate_bind(cfg.service.bind)[1], *(i.port for i in cfg.instances)}
    if cfg.frontdoor is not None:
        taken.add(validate_bind(cfg.frontdoor.listen)[1])
    port = validate_bind(cfg.service.bind)[1] + 1
    while port in taken:
        port += 1
    return port


def _instance_table(args: argparse.Namespace, doc: tomlkit.TOMLDocument) -> Any:
    import tomlkit

    table = tomlkit.table()
    table["gpus"] = _gpu_refs(args.gpus)
    table["port"] = args.port if args.port is not None else _free_port(doc)
    optional = {
        "bind": args.bind,
        "memory_max": args.memory_max,
        "memory_high": args.memory_high,
        "cpu_weight": args.cpu_weight,
        "allowed_cpus": args.cpus,
        "models_dir": args.models_dir,
        "prune": args.prune,
    }
    for key, value in optional.items():
        if value is not None:
            table[key] = value
    if args.allow:
        table["allowed_networks"] = list(args.allow)
    if args.share_gpus:
        table["share_gpus"] = True
    sized = [m for m in args.model if "=" in m]
    if sized and len(sized) != len(args.model):
        raise ConfigError("--model: give a size to every model (NAME=SIZE) or to none")
    if sized:
        models = tomlkit.inline_table()
        models.update(dict(_pairs(args.model, "--model")))
        table["models"] = models
    elif args.model:
        table["models"] = list(args.model)
    if args.env:
        env = tomlkit.inline_table()
        env.update(dict(_pairs(args.env, "--env")))
        table["environment"] = env
    return table


def run_add(args: argparse.Namespace, env: Env) -> int:
    import tomlkit

    rt = runtime(args, env)
    path = config_path(args, rt)
    check_name(args.name, "instance add")
    _old, doc = _read(path)
    instances = doc.get("instances")
    if instances is None:
        instances = tomlkit.table(is_super_table=True)
        doc["instances"] = instances
    if args.name in instances:
        raise ConfigError(
            f"instance {args.name!r} is already in {path}; remove it first or edit the file"
        )
    instances[args.name] = _instance_table(args, doc)
    text = tomlkit.dumps(doc)
    deployment = _checked(args, rt, path, text)
    _write(path, text)
    added = _find(deployment, args.name)
    env.stdout.write(
        f"added {added.unit_name} on {added.api_url} to {path}; "
        "`ollama-ops plan` shows it, `ollama-ops apply` installs it\n"
    )
    return ExitStatus.OK


# ---------------------------------------------------------------- remove


def run_remove(args: argparse.Namespace, env: Env) -> int:
    import tomlkit

    rt = runtime(args, env)
    path = config_path(args, rt)
    _old, doc = _read(path)
    instances = doc.get("instances")
    if instances is None or args.name not in instances:
        known = ", ".join(instances or ()) or "none"
        raise ConfigError(f"no instance {args.name!r} in {path} (instances: {known})")
    del instances[args.name]
    if not instances:
        del doc["instances"]
    text = tomlkit.dumps(doc)
    _checked(args, rt, path, text)
    _write(path, text)
    unit = f"{config_mod.loads(text, str(path)).service.unit.removesuffix('.service')}@"
    env.stdout.write(
        f"removed instance {args.name} from {path}; `ollama-ops apply` stops {unit}"
        f"{args.name}.service and removes its files\n"
    )
    return ExitStatus.OK


# ---------------------------------------------------------------- list


def _find(deployment: Deployment, name: str) -> Deployment:
    assert deployment.instances is not None
    unit = f"@{name}.service"
    return next(d for d in deployment.instances.instances if d.unit_name.endswith(unit))


def _row(d: Deployment, state: str) -> dict[str, Any]:
    gpus = d.value("CUDA_VISIBLE_DEVICES") or d.value("ROCR_VISIBLE_DEVICES") or ""
    store = d.value("OLLAMA_MODELS") or ""
    return {
        "unit": d.unit_name,
        "url": d.api_url,
        "gpus": gpus,
        "memory_max": instance_checks.memory_bytes(d.value("MemoryMax")),
        "models": store,
        "store": "read-only" if d.value("OLLAMA_NOPRUNE") else "read-write",
        "state": state,
    }


def _states(rt: Runtime, units: list[str]) -> dict[str, str]:
    if not rt.live:
        return dict.fromkeys(units, "-")
    systemctl = rt.systemctl()
    out = {}
    for unit in units:
        try:
            props = systemctl.show(unit, ["ActiveState", "SubState"])
            out[unit] = f"{props.get('ActiveState', '?')}/{props.get('SubState', '?')}"
        except OpsError:
            out[unit] = "unknown"
    return out


def run_list(args: argparse.Namespace, env: Env) -> int:
    prep = prepare(args, env)
    plan = prep.deployment.instances
    instances = plan.instances if plan else ()
    states = _states(prep.rt, [d.unit_name for d in instances])
    rows = [_row(d, states[d.unit_name]) for d in instances]
    door = plan.frontdoor if plan else None
    if args.json:
        data = {"instances": rows, "frontdoor": door.listen if door else None}
        env.stdout.write(json.dumps(data, indent=2) + "\n")
        return ExitStatus.OK
    if not rows:
        env.stdout.write("no instances in the config; add one with `ollama-ops instance add`\n")
        return ExitStatus.OK
    front = f"; front door on {door.listen}" if door else "; no front door"
    out = [f"{len(rows)} instance(s){front}"]
    table = [("UNIT", "URL", "GPUS", "MEMORY MAX", "STORE", "STATE")]
    table += [
        (
            r["unit"],
            r["url"],
            r["gpus"] or "-",
            format_size(r["memory_max"]),
            r["store"],
            r["state"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    out += [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    env.stdout.write("\n".join(out) + "\n")
    return ExitStatus.OK
