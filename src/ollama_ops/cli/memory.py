"""`ollama-ops memory`: MemoryHigh/MemoryMax from the unit's measured peak; --apply writes them."""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from pathlib import Path

from ollama_ops.apply import transaction
from ollama_ops.cli.common import (
    Env,
    add_config,
    add_facts,
    add_root,
    load_config,
    load_facts,
    prepare,
    runtime,
)
from ollama_ops.errors import ExitStatus, OpsError
from ollama_ops.logs import journal
from ollama_ops.logs.classify import Kind, classify
from ollama_ops.memory import cgroup, write
from ollama_ops.memory.recommend import LoadedModel, Observation, Recommendation, age, recommend
from ollama_ops.model import config as config_mod
from ollama_ops.model.bind import validate_bind
from ollama_ops.model.config import format_size
from ollama_ops.runtime import Runtime


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "memory", help="MemoryHigh/MemoryMax from the unit's measured peak (+20 %%/+40 %%)"
    )
    add_root(p, "read the cgroup files under DIR")
    add_facts(p)
    add_config(p)
    p.add_argument("--unit", help="the unit (default: service.unit from the config)")
    p.add_argument(
        "--apply",
        action="store_true",
        help="write the limits into the config file and run `apply` with it",
    )
    p.add_argument("--force", action="store_true", help="--apply even when the peak is not trusted")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="apply's API wait (60)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _api_url(bind: str) -> str:
    host, port = validate_bind(bind)
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _loaded(rt: Runtime, bind: str) -> tuple[LoadedModel, ...] | None:
    if not rt.live:
        return None
    models = rt.ollama.ps(_api_url(bind))
    if models is None:
        return None
    out = []
    for m in models:
        size, vram = m.get("size"), m.get("size_vram", 0)
        if isinstance(size, int) and isinstance(vram, int):
            out.append(LoadedModel(str(m.get("name") or m.get("model") or "?"), size, vram))
    return tuple(out)


def _loads_since(rt: Runtime, unit: str, uptime: float | None) -> int | None:
    """Model loads the journal shows since the unit started; None if it cannot tell."""
    if uptime is None or not rt.live:
        return None
    since = f"@{int(rt.wall_clock() - uptime)}"
    try:
        read = journal.read(rt, unit, since, 100_000)
    except OpsError:
        return None
    return sum(1 for r in read.records for e in classify(r) if e.kind is Kind.LOAD)


def observe(args: argparse.Namespace, rt: Runtime, unit: str, bind: str) -> Observation:
    group, uptime = f"/system.slice/{unit}", None
    if rt.live:
        props = rt.systemctl().show(unit, ["ControlGroup", "ActiveEnterTimestampMonotonic"])
        group = props.get("ControlGroup", "")
        entered = props.get("ActiveEnterTimestampMonotonic", "0")
        if entered.isdigit() and int(entered) > 0:
            uptime = max(0.0, rt.clock() - int(entered) / 1e6)
    memory = cgroup.read(rt.root, group, unit)
    return Observation(
        unit=unit,
        memory=memory,
        host_memory=load_facts(args, rt).memory_bytes,
        uptime_s=uptime,
        loads_since_start=_loads_since(rt, unit, uptime),
        loaded=_loaded(rt, bind),
    )


def _limit(value: int | None) -> str:
    return "no limit" if value is None else format_size(value)


def render_text(obs: Observation, rec: Recommendation) -> str:
    cg = obs.memory
    peak = "not recorded" if cg.peak is None else format_size(cg.peak)
    up = f", running {age(obs.uptime_s)}" if obs.uptime_s is not None else ""
    out = textwrap.wrap(
        f"{obs.unit}: MemoryHigh={write.mib(rec.memory_high)} (+20 %), "
        f"MemoryMax={write.mib(rec.memory_max)} (+40 %) from {rec.base_reason}",
        width=100,
        subsequent_indent="  ",
    )
    out += [
        f"  cgroup v{cg.version} {cg.path}: now {format_size(cg.current)}, peak {peak}{up}",
        f"  limits now: MemoryHigh {_limit(cg.high)}, MemoryMax {_limit(cg.max)}; "
        f"OOM kills this run: {cg.oom_kills}",
    ]
    if obs.loaded is not None:
        models = ", ".join(
            f"{m.name} {format_size(m.size)} ({format_size(m.ram)} in RAM)" for m in obs.loaded
        )
        out.append(f"  loaded models: {models or 'none'}")
    if obs.loads_since_start is not None:
        out.append(f"  model loads since the start: {obs.loads_since_start}")
    for note in rec.notes:
        out += textwrap.wrap(
            f"note: {note}", width=100, initial_indent="  ", subsequent_indent="    "
        )
    if rec.warnings:
        out.append("Not to be trusted yet:")
        for w in rec.warnings:
            out += textwrap.wrap(w, width=100, initial_indent="  - ", subsequent_indent="    ")
    else:
        out.append("The peak is trustworthy: `ollama-ops memory --apply` writes these limits.")
    return "\n".join(out) + "\n"


def render_json(obs: Observation, rec: Recommendation) -> str:
    cg = obs.memory
    data = {
        "unit": obs.unit,
        "cgroup": {
            "version": cg.version,
            "path": cg.path,
            "current": cg.current,
            "peak": cg.peak,
            "memory_high": cg.high,
            "memory_max": cg.max,
            "oom_kills": cg.oom_kills,
            "events": cg.events,
        },
        "uptime_seconds": obs.uptime_s,
        "loads_since_start": obs.loads_since_start,
        "loaded_models": None
        if obs.loaded is None
        else [{"name": m.name, "size": m.size, "size_vram": m.size_vram} for m in obs.loaded],
        "recommendation": {
            "memory_high": rec.memory_high,
            "memory_max": rec.memory_max,
            "base": rec.base,
            "reason": rec.base_reason,
            "trusted": rec.trusted,
            "warnings": list(rec.warnings),
            "notes": list(rec.notes),
        },
    }
    return json.dumps(data, indent=2) + "\n"


def _config_path(args: argparse.Namespace, rt: Runtime) -> Path:
    if args.config:
        return Path(args.config)
    return rt.root / str(config_mod.DEFAULT_CONFIG_PATH).lstrip("/")


def _apply(
    args: argparse.Namespace, env: Env, rt: Runtime, obs: Observation, rec: Recommendation
) -> None:
    if not rec.trusted and not args.force:
        raise OpsError(
            f"not applying a peak that is not to be trusted ({rec.warnings[0]}); "
            "measure longer, or pass --force"
        )
    path = _config_path(args, rt)
    stamp = time.strftime("%Y-%m-%d", time.gmtime(rt.wall_clock()))
    origin = f"ollama-ops memory {stamp}: {rec.base_reason}"
    before_text = None
    if path.is_file():
        try:
            before_text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise OpsError(
                f"config file {str(path)!r} cannot be read ({exc}); fix it first"
            ) from exc
    text = write.updated_text(before_text, rec.memory_high, rec.memory_max, origin, str(path))
    before = write.write(path, text)
    try:
        args.config = str(path)
        prep = prepare(args, env)
        outcome = transaction.apply(prep.rt, prep.deployment, prep.files, timeout=args.timeout)
    except BaseException:
        write.restore(path, before)
        raise
    env.stdout.write(f"wrote limits.memory_high and limits.memory_max to {path}\n")
    env.stdout.write(outcome.message + "\n")


def run(args: argparse.Namespace, env: Env) -> int:
    rt = runtime(args, env)
    cfg = load_config(args, rt.root)
    unit = args.unit or cfg.service.unit
    if not unit.endswith(".service"):
        unit += ".service"
    obs = observe(args, rt, unit, cfg.service.bind)
    rec = recommend(obs)
    env.stdout.write(render_json(obs, rec) if args.json else render_text(obs, rec))
    if args.apply:
        _apply(args, env, rt, obs, rec)
    return ExitStatus.OK
