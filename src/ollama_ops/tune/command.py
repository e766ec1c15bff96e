"""``ollama-ops tune``: options in, a sweep through plan + apply and bench, a report out.

The order matters: every option is checked before anything is read from the
host; the plan of the current config must match the installed files (tune
compares settings of one configuration); a tune cut short earlier is
restored; the server and the model are checked; only then is the marker
written and the first setting applied. From there on the original
configuration comes back on every path but a kept winner (see sweep and
marker).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from ollama_ops.apply import transaction
from ollama_ops.bench import runner, shapes, summary
from ollama_ops.bench.client import parse_url
from ollama_ops.bench.command import _check_writable, write_atomic
from ollama_ops.bench.slo import Slo, parse_slo
from ollama_ops.bench.workload import builtin, parse_output_length
from ollama_ops.cli.common import Env, load_config, prepare
from ollama_ops.errors import ExitStatus, OpsError
from ollama_ops.model import config as config_mod
from ollama_ops.runtime import Runtime

from . import marker, params, report
from .applier import PlanApplier
from .errors import TuneError
from .pick import Measurement, figures_of
from .plan import SweepPlan, plan_sweep
from .sweep import Applier, Confirm, Measure, Outcome, Progress, run_sweep

#: No setting qualified: 1, as `bench compare` exits on an SLO breach.
NO_WINNER_EXIT = ExitStatus.CHANGES_PENDING
MAX_WARMUP = 32


@dataclass(frozen=True)
class Request:
    """The options, checked (pure): what to sweep and how to measure it."""

    model: str
    axes: tuple[params.Axis, ...]
    slo: Slo | None
    min_share: float
    concurrency: int | None
    rate: float | None
    duration_s: float
    warmup: int
    output_tokens: str | None
    timeout: float

    def shape(self) -> shapes.Shape:
        stop = shapes.Stop(duration_s=self.duration_s)
        if self.rate is not None:
            return shapes.rate_sweep((self.rate,), stop, warmup=self.warmup)
        return shapes.concurrency_sweep((self.concurrency or 1,), stop, self.warmup)

    def describe(self) -> str:
        what = (
            f"rate {self.rate:g}/s" if self.rate is not None else f"concurrency {self.concurrency}"
        )
        return f"{what} for {self.duration_s:g} s per setting"


def _finite(value: float, option: str, low: float, high: float) -> float:
    if not math.isfinite(value) or not low < value <= high:
        raise TuneError(f"{option} {value:g}: must be above {low:g} and at most {high:g}")
    return value


def parse_request(args: argparse.Namespace) -> Request:
    """Every option checked before anything touches the host; TuneError/BenchError say which."""
    given = [params.parse_param(p) for p in args.param]
    shorthand = (
        ("flash_attention", "0,1" if args.flash_attention else None, "--flash-attention"),
        ("kv_cache_type", args.kv_cache_type, "--kv-cache-type"),
        ("context_length", args.context_length, "--context-length"),
        ("max_loaded_models", args.max_loaded_models, "--max-loaded-models"),
    )
    for name, text, option in shorthand:
        if text is not None:
            row = params.lookup(name)
            given.append((row, params.parse_values(row, text, option)))
    axes = params.axes(given)
    slo = parse_slo(args.slo) if args.slo else None
    share = _finite(args.min_share, "--min-share", 0.0, 100.0) / 100
    duration = _finite(args.duration, "--duration", 0.0, 86400.0)
    timeout = _finite(args.timeout, "--timeout", 0.0, 86400.0)
    concurrency: int | None = args.concurrency
    rate: float | None = args.rate
    if rate is not None:
        _finite(rate, "--rate", 0.0, 1e6)
    elif concurrency is None:
        concurrency = max(int(v) for a in axes if a.param.name == "num_parallel" for v in a.values)
    elif not 1 <= concurrency <= 4096:
        raise TuneError(f"--concurrency {concurrency}: give 1 to 4096 streams")
    if args.warmup is not None and args.warmup < 0:
        raise TuneError(f"--warmup {args.warmup}: must be 0 or more")
    warm = args.warmup if args.warmup is not None else min(concurrency or 4, MAX_WARMUP)
    if args.output_tokens:
        parse_output_length(args.output_tokens)
    _check_writable("--json", args.json)
    return Request(
        args.model, axes, slo, share, concurrency, rate, duration, warm, args.output_tokens, timeout
    )


# -------------------------------------------------------------------- the edges


def bench_measure(request: Request, target: runner.Target, out: TextIO) -> Measure:
    """Warm (the shape's uncounted requests load the model and fill the slots), then measure."""
    output = parse_output_length(request.output_tokens) if request.output_tokens else None
    workload = builtin(output)

    def measure(setting: params.Setting) -> Measurement:
        started = time.monotonic()
        result = runner.run(request.shape(), target, workload)
        seconds = time.monotonic() - started
        if result.partial:
            raise KeyboardInterrupt
        summ = summary.summarize(result, request.slo)
        if not summ.stages:
            return Measurement(setting, None, "the benchmark ran no stage", seconds=seconds)
        m = Measurement(setting, figures_of(summ.stages[0]), seconds=seconds)
        f = m.figures
        assert f is not None
        met = f", SLO met {(f.slo_share or 0) * 100:.0f}%" if request.slo else ""
        out.write(f"      {f.tokens_per_s:,.1f} tokens/s, {f.ok}/{f.requests} ok{met}\n")
        return m

    return measure


def check_target(target: runner.Target) -> None:
    """The server answers and has the model (bench's own preflight); nothing is sent else."""
    runner.run(shapes.Shape((), shapes.Stop(requests=1), warmup=0), target)


def confirm_on_terminal(
    yes: bool,
    config_path: Path,
    err: TextIO,
    stdin: TextIO | None = None,
    before_asking: Callable[[], str] | None = None,
) -> Confirm:
    """--yes, else the answer to a question on the terminal; no terminal: no.

    ``before_asking`` puts the original configuration back first, so that the
    service does not wait on the last setting tried for somebody to answer.
    """

    def confirm(winner: Measurement) -> bool:
        if yes:
            return True
        source = stdin if stdin is not None else sys.stdin
        if not (source.isatty() and err.isatty()):
            return False
        if before_asking is not None:
            err.write(f"tune: {before_asking()}\n")
        err.write(f"write {winner.setting.env_label()} to {config_path} and apply it? [y/N] ")
        err.flush()
        try:
            answer = source.readline()
        except (OSError, ValueError):
            return False
        return answer.strip().lower() in ("y", "yes")

    return confirm


class _Terminated(KeyboardInterrupt):
    """SIGTERM during a tune: handled like Ctrl-C, so the original configuration comes back."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Ctrl-C and SIGTERM are held off while the original configuration is being put back.

    They are caught and dropped (the tune is ending anyway), not blocked: a blocked
    signal mask would be inherited by every process started meanwhile.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        return None

    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, hold) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Shielded:
    """An applier whose restore and keep are not cut short by a signal."""

    def __init__(self, inner: Applier) -> None:
        self.inner = inner
        self.last = ""

    def apply(self, setting: params.Setting) -> str:
        return self.inner.apply(setting)

    def restore(self) -> str:
        with shielded():
            self.last = self.inner.restore()
        return self.last

    def keep(self, setting: params.Setting) -> str:
        with shielded():
            self.last = self.inner.keep(setting)
        return self.last


def _progress(out: TextIO, plan: SweepPlan) -> Progress:
    def progress(index: int, total: int, setting: params.Setting, what: str) -> None:
        now = " (now)" if setting == plan.current else ""
        out.write(f"tune [{index}/{total}] {setting.label()}{now}: {what}\n")
        out.flush()

    return progress


def _config_path(args: argparse.Namespace, root: Path) -> Path:
    if args.config:
        return Path(args.config)
    return root / str(config_mod.DEFAULT_CONFIG_PATH).lstrip("/")


def _require_live(rt: Runtime) -> None:
    if not rt.live:
        raise TuneError(
            f"--root {rt.root}: tune restarts and benchmarks the running service; "
            "run it on the live system (no --root)"
        )


def _require_applied(rt: Runtime, files: dict[str, str], config_path: Path) -> None:
    pending = transaction.pending_changes(rt.root, files)
    if pending:
        names = ", ".join(c.path for c in pending[:3]) + (" ..." if len(pending) > 3 else "")
        raise TuneError(
            f"the installed files differ from the plan for {config_path} ({names}); "
            "run `ollama-ops apply` first: tune compares settings of the configuration that runs"
        )


@dataclass
class _Run:
    """What the command keeps while it runs, for the report on any path."""

    request: Request
    plan: SweepPlan
    ctx: report.Context
    done: list[Measurement]


def run_command(args: argparse.Namespace, env: Env) -> int:
    request = parse_request(args)  # bad input: refused before anything is read
    prep = prepare(args, env)
    rt = prep.rt
    _require_live(rt)
    config_path = _config_path(args, rt.root)
    cfg = load_config(args, rt.root)
    deployment = prep.deployment
    url = parse_url(args.url).base if args.url else deployment.api_url
    target = runner.Target(url, request.model)
    current = {a.param.env: deployment.value(a.param.env) for a in request.axes}
    plan = plan_sweep(request.axes, current)
    ctx = report.Context(
        request.model, url, request.describe(), request.slo, request.min_share, str(config_path)
    )
    with marker.tune_lock(rt.root):
        earlier = marker.recover_locked(rt, timeout=request.timeout)
        if earlier:
            env.stderr.write(f"ollama-ops: {earlier}\n")
        _require_applied(rt, prep.files, config_path)
        check_target(target)  # unreachable, or no such model: nothing applied
        state = marker.Marker(
            base=marker.newest_generation(rt.root),
            unit=deployment.unit_name,
            url=deployment.api_url,
            started_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            pid=os.getpid(),
        )
        marker.write(rt.root, state)
        applier = Shielded(
            PlanApplier(rt, prep.facts, cfg, config_path, state, timeout=request.timeout)
        )
        run = _Run(request, plan, ctx, [])
        return _sweep(run, applier, target, args, env)


def _sweep(
    run: _Run, applier: Shielded, target: runner.Target, args: argparse.Namespace, env: Env
) -> int:
    request, plan = run.request, run.plan
    err = env.stderr
    total = len(plan.settings)
    extra = "" if plan.current_in_grid else " (the current setting is one more)"
    err.write(f"tune: {total} setting(s){extra}, {request.describe()}\n")
    measure = bench_measure(request, target, err)
    confirm = confirm_on_terminal(
        args.yes, Path(run.ctx.config_path), err, before_asking=applier.restore
    )
    try:
        with sigterm_as_interrupt():
            outcome = run_sweep(
                plan,
                applier,
                measure,
                slo=request.slo,
                min_share=request.min_share,
                confirm=confirm,
                progress=_progress(err, plan),
                sink=run.done,
            )
    except KeyboardInterrupt:
        _write_json(args, run, None, kept=False, final=applier.last, partial=True, env=env)
        err.write(f"ollama-ops: tune interrupted; {applier.last}\n")
        return ExitStatus.INTERRUPTED
    except OpsError:
        if applier.last:  # the error follows on its own line, from cli.main
            err.write(f"tune: stopped; {applier.last}\n")
        raise
    final = _final(outcome, args.yes, run.ctx.config_path)
    text = report.render(plan, outcome.measurements, outcome.verdict, run.ctx, final)
    _write_json(args, run, outcome, kept=outcome.kept, final=final, partial=False, env=env)
    (env.stderr if args.json == "-" else env.stdout).write(text)
    return ExitStatus.OK if outcome.verdict.winner is not None else NO_WINNER_EXIT


def _final(outcome: Outcome, yes: bool, config_path: str) -> str:
    if outcome.kept:
        return outcome.final_note
    verdict = outcome.verdict
    winner = None if verdict.winner is None else outcome.measurements[verdict.winner]
    if winner is None or winner.setting == outcome.plan.current:
        return f"not written; {outcome.final_note}"
    return (
        f"not written to {config_path}: answer y at the prompt, or rerun with --yes; "
        f"{outcome.final_note}"
    )


def _write_json(
    args: argparse.Namespace,
    run: _Run,
    outcome: Outcome | None,
    *,
    kept: bool,
    final: str,
    partial: bool,
    env: Env,
) -> None:
    if not args.json:
        return
    done = outcome.measurements if outcome is not None else tuple(run.done)
    verdict = outcome.verdict if outcome is not None else None
    doc = report.to_json(run.plan, done, verdict, run.ctx, kept=kept, final=final, partial=partial)
    text = json.dumps(doc, indent=2) + "\n"
    if args.json == "-":
        env.stdout.write(text)
    else:
        write_atomic(args.json, text)
