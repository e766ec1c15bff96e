"""Rules on the service as a whole: will it load, become ready, and whom does it run as?

No ExecStart= (systemd refuses the unit), a Type= that waits for a readiness
message Ollama never sends, a WatchdogSec= Ollama never feeds, running as
root, and no ProtectSystem= at all (no file-system sandbox).
"""

from __future__ import annotations

from collections.abc import Iterator

from ollama_ops.audit.context import Ctx, finding
from ollama_ops.audit.model import Finding, Severity
from ollama_ops.audit.values import parse_timespan


def rule_service(ctx: Ctx) -> Iterator[Finding]:
    if not ctx.values("ExecStart"):
        yield finding(
            "no-execstart",
            Severity.ERROR,
            None,
            "ExecStart",
            "no ExecStart=: systemd refuses to load the service",
            "set ExecStart=/usr/local/bin/ollama serve",
        )
    type_a = ctx.last("Type")
    if type_a is not None and type_a.value.strip() in ("notify", "notify-reload", "dbus"):
        yield finding(
            "type-never-ready",
            Severity.ERROR,
            type_a,
            None,
            f"Type={type_a.value}: Ollama never signals readiness, so the start times out",
            "set Type=exec (or simple)",
        )
    wd = ctx.last("WatchdogSec")
    if wd is not None and parse_timespan(wd.value) not in (None, 0.0):
        yield finding(
            "watchdog",
            Severity.ERROR,
            wd,
            None,
            f"WatchdogSec={wd.value}: Ollama never sends WATCHDOG=1, so systemd kills it "
            "after that time",
            "remove WatchdogSec=",
        )
    if not ctx.non_root:
        yield finding(
            "runs-as-root",
            Severity.ERROR,
            ctx.last("User"),
            "User",
            "the service runs as root: a bug in the API or a runner owns the host",
            "set User=ollama and Group=ollama (the installer's account) or DynamicUser=yes",
        )
    mode, _a = ctx.protection("ProtectSystem")
    if mode == "no":
        yield finding(
            "no-filesystem-protection",
            Severity.WARNING,
            ctx.last("ProtectSystem"),
            "ProtectSystem",
            "no ProtectSystem=: the service may write everywhere its user may, and gets no sandbox",
            "apply ollama-ops' drop-in (ProtectSystem=strict with ReadWritePaths= for $HOME "
            "and the models)",
        )
