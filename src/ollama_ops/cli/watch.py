"""`ollama-ops watch`: the supervisor (or, with --once, one round of it for a timer).

Defaults come from the config's ``[watch]`` table; the options override them
(the unit `apply` writes passes them all). SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ollama_ops.cli.common import Env
from ollama_ops.cli.health import add_target, target
from ollama_ops.errors import ConfigError

if TYPE_CHECKING:  # imported when the command runs: `plan` and the rest never load them
    from ollama_ops.health.policy import PolicyState
    from ollama_ops.health.supervisor import WatchOptions


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "watch", help="supervise Ollama: tell busy from hung, recover, export metrics"
    )
    add_target(p)
    n = p.add_argument_group("policy (defaults from [watch] in the config)")
    n.add_argument("--interval", type=float, metavar="S", help="seconds between checks (1)")
    n.add_argument("--failures", type=int, metavar="N", help="failed checks before acting (3)")
    n.add_argument(
        "--startup-grace", type=float, metavar="S", help="no action this long after a start (90)"
    )
    n.add_argument(
        "--cooldown", type=float, metavar="S", help="after an action; doubles per action (30)"
    )
    n.add_argument(
        "--max-actions", type=int, metavar="N", help="actions per window, then give up (4)"
    )
    n.add_argument("--window", type=float, metavar="S", help="the budget's window (3600)")
    n.add_argument(
        "--healthy-reset", type=float, metavar="S", help="health held this long resets (300)"
    )
    p.add_argument(
        "--metrics", metavar="ADDR", help="serve Prometheus metrics here (127.0.0.1:9839)"
    )
    p.add_argument("--no-metrics", action="store_true", help="serve no metrics")
    p.add_argument(
        "--no-deep", action="store_true", help="no generation probe (liveness and logs only)"
    )
    p.add_argument("--observe-only", action="store_true", help="decide and log, never act")
    p.add_argument(
        "--once", action="store_true", help="one round of checks (for a timer), then exit"
    )
    p.add_argument(
        "--state-file", metavar="FILE", help="with --once: the policy's state between runs"
    )
    p.add_argument(
        "--checks", type=int, metavar="N", help="stop after N checks (default: run until stopped)"
    )
    p.set_defaults(func=run)


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def options(args: argparse.Namespace) -> tuple[WatchOptions, str]:
    """The supervisor's options and the metrics address (empty: none)."""
    from ollama_ops.health.policy import PolicyConfig
    from ollama_ops.health.supervisor import WatchOptions
    from ollama_ops.model import config as config_mod

    cfg = config_mod.load(Path(args.config) if args.config else None).watch
    url, unit = target(args)
    policy = PolicyConfig(
        failures_before_action=_pick(args.failures, cfg.failures),
        startup_grace_s=_pick(args.startup_grace, cfg.startup_grace),
        cooldown_s=_pick(args.cooldown, cfg.cooldown),
        max_actions=_pick(args.max_actions, cfg.max_actions),
        window_s=_pick(args.window, cfg.window),
        healthy_reset_s=_pick(args.healthy_reset, cfg.healthy_reset),
    )
    numbers = [policy.startup_grace_s, policy.cooldown_s, policy.window_s, policy.healthy_reset_s]
    if policy.failures_before_action < 1 or policy.max_actions < 1 or min(numbers) < 0:
        raise ConfigError("--failures and --max-actions must be >= 1, the seconds >= 0")
    interval = _pick(args.interval, cfg.interval)
    if not 0.1 <= interval <= 60:
        raise ConfigError(f"--interval {interval:g} must be from 0.1 to 60 seconds")
    metrics = "" if args.no_metrics or args.once else _pick(args.metrics, cfg.metrics)
    return (
        WatchOptions(
            url=url,
            unit=unit,
            interval_s=interval,
            deep=not args.no_deep,
            observe_only=args.observe_only or cfg.observe_only,
            policy=policy,
        ),
        metrics,
    )


def _load_state(path: str | None) -> PolicyState:
    from ollama_ops.health.journal import boot_id
    from ollama_ops.health.policy import PolicyState, state_from_dict

    if not path:
        return PolicyState()
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return PolicyState()
    if not isinstance(data, dict) or data.get("boot_id") != boot_id():
        return PolicyState()  # monotonic times of another boot mean nothing
    return state_from_dict(data.get("policy"))


def _save_state(path: str | None, state: PolicyState) -> None:
    from ollama_ops.health.journal import boot_id
    from ollama_ops.health.policy import state_to_dict

    if not path:
        return
    target_path = Path(path)
    tmp = target_path.with_name(target_path.name + ".tmp")
    tmp.write_text(json.dumps({"boot_id": boot_id(), "policy": state_to_dict(state)}))
    os.replace(tmp, target_path)


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.health import journal, metrics, notify
    from ollama_ops.health.http import probe_address
    from ollama_ops.health.supervisor import Supervisor

    opts, metrics_address = options(args)
    rt = env.make_runtime(Path("/"))
    log = notify.Journal(fallback=env.stderr)
    own = probe_address(opts.url)
    ignore = frozenset({own}) if own else frozenset()
    if args.once:
        evidence = journal.RecentJournal(rt, opts.unit, ignore=ignore)
        sup = Supervisor(rt, opts, evidence=evidence, journal=log)
        sup.policy = _load_state(args.state_file)
        verdict = sup.run_once(opts.policy.failures_before_action)
        _save_state(args.state_file, sup.policy)
        env.stdout.write(
            f"OLLAMA {verdict.status.name} - {verdict.state.value}: {verdict.summary}\n"
        )
        return int(verdict.status)
    follower = journal.JournalFollower(
        opts.unit, ignore_clients=ignore, namespace=journal.namespace_args(rt, opts.unit)
    ).start()
    board = metrics.Board()
    close_metrics = metrics.serve(board, metrics_address) if metrics_address else None
    sup = Supervisor(
        rt,
        opts,
        evidence=follower,
        journal=log,
        notify=notify.sd_notify,
        board=board,
        log_totals=lambda: {k.value: n for k, n in follower.tracker.totals.items()},
    )
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        return sup.run(stop, max_checks=args.checks)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        follower.stop()
        if close_metrics is not None:
            close_metrics()
        log.close()
