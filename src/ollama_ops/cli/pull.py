"""`ollama-ops pull`: pull models into the service, its egress open only meanwhile.

Also the ``[models]`` step apply runs after a successful live apply
(:func:`after_apply`): the models it lists are pulled when missing, the
``warm`` ones loaded, both checked.
"""

from __future__ import annotations

import argparse
import contextlib

from ollama_ops.cli.common import Env, Prepared, add_config, add_root, load_config, runtime
from ollama_ops.errors import BusyError, CommandError, ConfigError, ExitStatus, OpsError
from ollama_ops.model import config as config_mod
from ollama_ops.model.bind import split_bind
from ollama_ops.models import declared, egress, rules, spec
from ollama_ops.models.output import make_sink
from ollama_ops.models.pull import PullReport, pull_models
from ollama_ops.runtime import Runtime


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pull",
        help="pull models into the service, opening its egress only while pulling",
        description=(
            "Pull MODELs through the service's /api/pull. IPAddressDeny=any keeps the server "
            "from reaching a registry; this opens it at runtime (systemctl set-property "
            "--runtime, no restart) only while pulling and closes it again on success, failure, "
            "Ctrl-C or SIGTERM; a pull killed outright is closed by the next run. The IP filter "
            "works both ways: with a non-loopback bind, --force is needed."
        ),
    )
    p.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="e.g. llama3.2:3b (default: pull and warm of the config's [models])",
    )
    p.add_argument("--url", help="the Ollama API (default: from the unit's OLLAMA_HOST)")
    p.add_argument("--unit", help="the service (default: service.unit of the config)")
    p.add_argument("--json", action="store_true", help="JSON lines: progress, egress, result")
    p.add_argument(
        "--force",
        action="store_true",
        help="pull although the service listens beyond loopback (clients from anywhere get in "
        "while egress is open)",
    )
    p.add_argument(
        "--close",
        action="store_true",
        help="only close egress a killed pull left open, then exit",
    )
    add_root(p, "the host's root; pull needs the live one")
    add_config(p)
    p.set_defaults(func=run)


def api_url(rt: Runtime, unit: str, cfg: config_mod.DeploymentConfig) -> str:
    """http://HOST:PORT of the unit's OLLAMA_HOST (else of service.bind); 0.0.0.0 -> 127.0.0.1."""
    value = egress.bind_of(rt.systemctl(), unit) or cfg.service.bind
    host, port, _ = split_bind(value)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port or 11434}"


def _models(args: argparse.Namespace, cfg: config_mod.DeploymentConfig) -> tuple[str, ...]:
    if not args.models:
        names = rules.wanted(cfg.models)
        if not names:
            raise ConfigError(
                "name the models to pull (e.g. `ollama-ops pull llama3.2:3b`) or list them in "
                "[models] pull of the config"
            )
        return names
    return tuple(spec.model_name(m, f"MODEL[{i}]") for i, m in enumerate(args.models))


def _summary(report: PullReport, unit: str) -> str:
    size = sum(p.bytes for p in report.pulled)
    head = f"pulled {len(report.pulled)} model(s), {size / 1024**2:.1f} MiB"
    if report.egress_opened:
        return f"{head}; egress of {unit} was open {report.open_seconds:.1f} s and is closed again"
    return f"{head}; egress of {unit} was already open and was left as it was"


def run(args: argparse.Namespace, env: Env) -> int:
    rt = runtime(args, env)
    if not rt.live:
        raise ConfigError(f"--root {args.root!r}: pull works on the live system only; use --root /")
    cfg = load_config(args, rt.root)
    unit = args.unit or cfg.service.unit
    sink = make_sink(env.stdout, json_lines=args.json)
    try:
        if args.close:
            if not egress.close_leftover(rt, unit, sink.note):
                sink.note("nothing", f"no egress of {unit} was left open by ollama-ops")
            return ExitStatus.OK
        models = _models(args, cfg)
        from ollama_ops.models.api import HttpModelApi  # httpx only when pulling

        api = HttpModelApi(args.url or api_url(rt, unit, cfg))
        sink.note(
            "start",
            f"pulling {', '.join(models)} through {api.url}; egress of {unit} opens only meanwhile",
        )
        try:
            report = pull_models(rt, api, unit, models, sink, force=args.force)
        finally:
            api.close()
        sink.note("done", _summary(report, unit))
    finally:
        sink.close()
    return ExitStatus.OK


def after_apply(args: argparse.Namespace, env: Env, prep: Prepared, restarted: bool) -> int:
    """apply's [models] step; CommandError (exit 3) says the service itself was applied."""
    cfg = load_config(args, prep.rt.root)
    unit = prep.deployment.unit_name
    if prep.rt.live:  # a killed pull's runtime IPAddressDeny= would outlive this apply
        with contextlib.suppress(BusyError):  # a pull running now closes its own window
            egress.close_leftover(prep.rt, unit, lambda _e, text: print(text, file=env.stdout))
    if not rules.wanted(cfg.models):
        return ExitStatus.OK
    if not prep.rt.live or getattr(args, "no_restart", False):
        why = "--root: nothing runs here" if not prep.rt.live else "--no-restart"
        env.stdout.write(f"models: not pulled ({why}); run `ollama-ops pull` on the host\n")
        return ExitStatus.OK
    from ollama_ops.models.api import HttpModelApi

    sink = make_sink(env.stdout, json_lines=False)
    api = HttpModelApi(prep.deployment.api_url)
    try:
        outcome = declared.ensure(prep.rt, api, unit, cfg.models, sink)
    except OpsError as exc:
        state = "was applied and is up" if restarted else "needed no change"
        raise CommandError(f"{unit} {state}, but its [models] step failed: {exc}") from exc
    finally:
        api.close()
        sink.close()
    env.stdout.write(outcome.summary() + "\n")
    return ExitStatus.OK
