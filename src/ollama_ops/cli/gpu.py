"""`ollama-ops gpu status|plan|apply|rollback`: persistence, power limit and clocks per GPU."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

from ollama_ops.apply.diff import unified
from ollama_ops.apply.transaction import pending_changes
from ollama_ops.cli.common import Env, add_config, add_root, load_config, runtime
from ollama_ops.errors import ExitStatus, OpsError
from ollama_ops.gpu import apply as gpu_apply
from ollama_ops.gpu import plan as gpu_plan
from ollama_ops.gpu import render as gpu_render
from ollama_ops.gpu import spec
from ollama_ops.gpu.model import GpuPlan, GpuReading, readings_from_json, readings_to_json
from ollama_ops.host.gpu import GpuBackend, NoNvidiaGpu, find_backend
from ollama_ops.model.config import GpuConfig
from ollama_ops.runtime import Runtime

NO_GPU = "no NVIDIA GPU found ({why}); nothing to {what}"
WIDTH = 100


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("gpu", help="GPU persistence, power limit and clocks from each GPU's limits")
    actions = p.add_subparsers(dest="gpu_action", required=True, metavar="ACTION")
    for name, text in (
        ("status", "what each NVIDIA GPU reports: settings, limits, supported clocks"),
        ("plan", "what `gpu apply` would set on each GPU, and why; changes nothing"),
        ("apply", "write and run the ollama-ops-gpu.service oneshot, then read every value back"),
        ("rollback", "restore the files and GPU values from before the newest `gpu apply`"),
    ):
        a = actions.add_parser(name, help=text)
        add_root(a)
        if name != "rollback":
            a.add_argument(
                "--facts",
                metavar="FILE",
                help="GPU readings from `ollama-ops gpu status --json` (another host's GPUs)",
            )
        if name in ("plan", "apply"):
            add_config(a)
            a.add_argument("--power-limit", metavar="W|P%", help='e.g. "300W" or "90%%"')
            a.add_argument(
                "--lock-clocks", metavar="MHZ", help='a supported clock, "max" or "none"'
            )
            a.add_argument("--gpu", metavar="LIST", help='GPU indexes, e.g. "0,1" (default all)')
        if name in ("status", "plan"):
            a.add_argument("--json", action="store_true", help="machine-readable output")
        a.set_defaults(func=run)


# ---------------------------------------------------------------- inputs


def _gpu_config(args: argparse.Namespace, rt: Runtime) -> GpuConfig:
    cfg = load_config(args, rt.root).gpu
    changes: dict[str, Any] = {}
    if args.power_limit is not None:
        changes["power_limit"] = spec.parse_power(args.power_limit, "--power-limit")
    if args.lock_clocks is not None:
        changes["lock_clocks"] = spec.parse_clock(args.lock_clocks, "--lock-clocks")
    if args.gpu is not None:
        changes["gpus"] = spec.parse_gpu_indexes(args.gpu, "--gpu")
    return dataclasses.replace(cfg, **changes)


def _read(
    args: argparse.Namespace, rt: Runtime
) -> tuple[GpuBackend | None, tuple[GpuReading, ...], str]:
    """(backend, readings, where they came from); NoNvidiaGpu when the host has none."""
    facts = getattr(args, "facts", None)
    if facts:
        try:
            text = Path(facts).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise OpsError(
                f"--facts {facts!r} cannot be read ({exc}); write it with "
                "`ollama-ops gpu status --json`"
            ) from exc
        readings = readings_from_json(text, facts)
        if not readings:
            raise NoNvidiaGpu(f"{facts} lists no GPU")
        return None, readings, facts
    if not rt.live:
        raise OpsError(
            f"--root {rt.root} is not this host, so its GPUs cannot be read; pass --facts FILE "
            "from `ollama-ops gpu status --json` on that host"
        )
    backend, readings = find_backend(rt.load_nvml, rt.run)
    return backend, readings, backend.name


def _nvidia_smi_path(rt: Runtime) -> str:
    found = shutil.which("nvidia-smi") if rt.live else None
    return found or gpu_render.DEFAULT_NVIDIA_SMI


# ---------------------------------------------------------------- output


def _w(value: float | None) -> str:
    return "N/A" if value is None else f"{value:g} W"


def _status_text(readings: tuple[GpuReading, ...], source: str, locks: dict[int, int]) -> str:
    s = "" if len(readings) == 1 else "s"
    out = [f"{len(readings)} NVIDIA GPU{s} (read through {source})"]
    for r in readings:
        mode = {True: "Enabled", False: "Disabled", None: "N/A"}[r.persistence]
        rng = (
            f"range {_w(r.power_min_w)}-{_w(r.power_max_w)}" if r.power_settable else "not settable"
        )
        clocks = r.supported_clocks_mhz
        listed = (
            f"{len(clocks)} supported, {clocks[-1]}-{clocks[0]} MHz" if clocks else "none listed"
        )
        lock = f"locked by ollama-ops at {locks[r.index]} MHz" if r.index in locks else "not locked"
        out += [
            f"  {r.label}  {r.pci_bus_id or '?'}  driver {r.driver or '?'}",
            f"    persistence  {mode}",
            f"    power limit  {_w(r.power_limit_w)} (enforced {_w(r.power_enforced_w)}, "
            f"default {_w(r.power_default_w)}, {rng})",
            f"    clocks       max {r.clock_max_mhz or '?'} MHz; {listed}; {lock}",
        ]
    return "\n".join(out) + "\n"


def _plan_rows(gpu_plan_: GpuPlan) -> list[str]:
    out: list[str] = []
    for t in gpu_plan_.targets:
        mode = {True: "on", False: "off", None: "(left alone)"}[t.persistence]
        watts = "(left alone)" if t.power_limit_w is None else f"{t.power_limit_w:g} W"
        clock = "(not locked)" if t.lock_clock_mhz is None else f"{t.lock_clock_mhz} MHz"
        out.append(f"  {t.reading.label}")
        for name, value, why in (
            ("persistence mode", mode, t.persistence_reason),
            ("power limit", watts, t.power_reason),
            ("locked clocks", clock, t.clock_reason),
        ):
            out += textwrap.wrap(
                f"{name:<17} {value:<13} {why}",
                width=WIDTH,
                initial_indent="    ",
                subsequent_indent=" " * 36,
            )
    return out


def _plan_json(gpu_plan_: GpuPlan, source: str, paths: list[tuple[str, str]]) -> str:
    gpus = [
        {
            "index": t.index,
            "name": t.reading.name,
            "selector": t.reading.selector,
            "persistence": {"value": t.persistence, "reason": t.persistence_reason},
            "power_limit_w": {"value": t.power_limit_w, "reason": t.power_reason},
            "lock_clock_mhz": {"value": t.lock_clock_mhz, "reason": t.clock_reason},
        }
        for t in gpu_plan_.targets
    ]
    data = {
        "source": source,
        "gpus": gpus,
        "notes": list(gpu_plan_.notes),
        "changes": [{"path": p, "kind": k} for p, k in paths],
    }
    return json.dumps(data, indent=2) + "\n"


# ---------------------------------------------------------------- actions


def _status(args: argparse.Namespace, env: Env, rt: Runtime) -> int:
    _backend, readings, source = _read(args, rt)
    if args.json:
        env.stdout.write(readings_to_json(readings))
    else:
        env.stdout.write(_status_text(readings, source, gpu_apply.locked_clocks(rt.root)))
    return ExitStatus.OK


def _plan_and_files(
    args: argparse.Namespace, rt: Runtime
) -> tuple[GpuBackend | None, tuple[GpuReading, ...], str, GpuPlan, dict[str, str]]:
    backend, readings, source = _read(args, rt)
    cfg = load_config(args, rt.root)
    planned = gpu_plan.plan(readings, _gpu_config(args, rt))
    files = gpu_render.render(planned, cfg.service.unit, _nvidia_smi_path(rt))
    return backend, readings, source, planned, files


def _plan(args: argparse.Namespace, env: Env, rt: Runtime) -> int:
    _backend, _readings, source, planned, files = _plan_and_files(args, rt)
    changes = pending_changes(rt.root, {**gpu_apply.others_as_installed(rt.root), **files})
    if args.json:
        env.stdout.write(_plan_json(planned, source, [(c.path, c.kind) for c in changes]))
        return ExitStatus.OK
    out = textwrap.wrap(
        f"GPU settings for {len(planned.targets)} NVIDIA GPU(s), read through {source}:",
        width=WIDTH,
        subsequent_indent="  ",
        break_long_words=False,
    )
    out += _plan_rows(planned)
    if planned.notes:
        out += ["", "Notes:", *(f"  - {n}" for n in planned.notes)]
    if not files:
        out += ["", "Nothing to set: no unit is written."]
    out += ["", f"Files (under {rt.root}):"]
    out += [f"  {c.kind:<9}  {c.path}" for c in changes] or ["  unchanged"]
    text = unified(changes)
    env.stdout.write("\n".join(out) + "\n\n" + (text or "No changes to the files.\n"))
    return ExitStatus.OK


def _apply(args: argparse.Namespace, env: Env, rt: Runtime) -> int:
    if args.facts and rt.live:
        raise OpsError(
            "--facts describes another host's GPUs: with it, apply only writes files under "
            "--root DIR; drop --facts to set this host's GPUs"
        )
    backend, readings, _source, planned, files = _plan_and_files(args, rt)
    outcome = gpu_apply.apply(rt, backend, readings, planned, files)
    for path in outcome.changed:
        env.stdout.write(f"wrote    {path}\n")
    for check in outcome.checks:
        env.stdout.write(check.line() + "\n")
    if rt.live and backend is not None:
        env.stdout.write(f"GPU settings applied and read back on {len(planned.targets)} GPU(s)\n")
    else:
        env.stdout.write(outcome.message + "\n")
    return ExitStatus.OK


def _rollback(args: argparse.Namespace, env: Env, rt: Runtime) -> int:
    backend: GpuBackend | None = None
    if rt.live:
        try:
            backend, _readings = find_backend(rt.load_nvml, rt.run)
        except NoNvidiaGpu:
            backend = None
    number, lines = gpu_apply.rollback(rt, backend)
    if number is None:
        env.stdout.write("nothing to roll back: no generation was saved under this root\n")
        return ExitStatus.OK
    for line in lines:
        env.stdout.write(line + "\n")
    env.stdout.write(f"restored the GPU files and values from before generation {number}\n")
    return ExitStatus.OK


ACTIONS = {"status": _status, "plan": _plan, "apply": _apply, "rollback": _rollback}


def run(args: argparse.Namespace, env: Env) -> int:
    rt = runtime(args, env)
    try:
        return ACTIONS[args.gpu_action](args, env, rt)
    except NoNvidiaGpu as exc:
        what = {"status": "show", "plan": "plan", "apply": "apply", "rollback": "restore"}
        env.stdout.write(NO_GPU.format(why=exc, what=what[args.gpu_action]) + "\n")
        return ExitStatus.OK
