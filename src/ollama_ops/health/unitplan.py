"""What health adds to the plan: ollama.service's start check and OOMPolicy=, the watch units.

Decisions, with the reasons `plan` shows:

* ``OOMPolicy=continue``: a runner child killed by the OOM killer no longer
  stops the whole server (systemd's default ``stop`` does, #11231): Ollama
  notices the dead runner and the next request loads the model again, while
  requests on other models carry on. If ``ollama serve`` itself is killed
  the unit still fails and ``Restart=on-failure`` brings it back; the kills
  are counted (cgroup memory.events) by `health` and the metrics.
* ``ExecStartPost=`` runs ``ollama-ops health --wait-ready``: the unit is
  "started" only once `GET /` answers, so units ordered after it, and the
  supervisor's restarts, get a working API. It is written with ``[watch]``
  (which installs ollama-ops' units anyway), or with ``ready_wait = true``.
* The supervisor runs as root: restarting a system unit goes through
  systemd's private bus, which only root may use without polkit, and a
  polkit rule is not portable (Debian 11's polkit 0.105 has no JS rules).
  It keeps no capability except CAP_SYS_MODULE on NVIDIA hosts (the ladder
  reloads ``nvidia_uvm``), sees the file system read-only, and talks only
  to loopback.
"""

from __future__ import annotations

from dataclasses import dataclass

from ollama_ops.model.config import DeploymentConfig
from ollama_ops.model.deployment import Section, Source
from ollama_ops.plan.builder import Builder
from ollama_ops.unitfile import directives
from ollama_ops.unitfile import syntax as unit

WATCH_UNIT = "ollama-ops-watch.service"
CHECK_SERVICE = "ollama-ops-check.service"
CHECK_TIMER = "ollama-ops-check.timer"
CHECK_STATE_DIR = "ollama-ops-check"
UNIT_DIR = "/etc/systemd/system"
DEFAULT_START_TIMEOUT = 90  # systemd's DefaultTimeoutStartSec


@dataclass(frozen=True)
class WatchPlan:
    mode: str  # "supervisor" or "timer"
    command: tuple[str, ...]  # the program and its arguments
    nvidia: bool  # the ladder may reload nvidia_uvm: CAP_SYS_MODULE, NVML devices
    ip_allow: tuple[str, ...]
    timer_period: int
    systemd_version: int


def service_settings(b: Builder, cfg: DeploymentConfig, api_url: str) -> None:
    """OOMPolicy=, the ExecStartPost= wait and Wants= of the watch units, in ollama.service."""
    w = cfg.watch
    source = Source.CONFIG if "watch.oom_policy" in cfg.set_keys else Source.RULE
    b.add(
        Section.SERVICE,
        "OOMPolicy",
        w.oom_policy,
        source,
        "an OOM-killed runner child does not stop the server: Ollama reloads it on the next request",
    )
    if w.waits_ready:
        b.add(
            Section.SERVICE,
            "ExecStartPost",
            f"{w.ollama_ops} health --wait-ready --timeout {w.ready_timeout} --url {api_url}",
            Source.CONFIG,
            "started only once the API answers: units ordered after it get a working API",
        )
        if w.ready_timeout + 15 > DEFAULT_START_TIMEOUT:
            b.add(
                Section.SERVICE,
                "TimeoutStartSec",
                str(w.ready_timeout + 30),
                Source.CONFIG,
                "the start includes the wait for the API",
            )
    if w.enabled:
        wanted = WATCH_UNIT if w.mode == "supervisor" else CHECK_TIMER
        b.add(
            Section.UNIT,
            "Wants",
            wanted,
            Source.CONFIG,
            f"[watch]: starting {cfg.service.unit} starts its watcher too",
        )


def watch_plan(
    cfg: DeploymentConfig, api_url: str, networks: list[str], nvidia: bool, systemd_version: int
) -> WatchPlan | None:
    w = cfg.watch
    if not w.enabled:
        return None
    args = [w.ollama_ops, "watch", "--unit", cfg.service.unit, "--url", api_url]
    args += ["--interval", f"{w.interval:g}", "--failures", str(w.failures)]
    args += ["--startup-grace", f"{w.startup_grace:g}", "--cooldown", f"{w.cooldown:g}"]
    args += ["--max-actions", str(w.max_actions), "--window", f"{w.window:g}"]
    args += ["--healthy-reset", f"{w.healthy_reset:g}"]
    if w.mode == "supervisor":
        args += ["--metrics", w.metrics] if w.metrics else ["--no-metrics"]
    else:
        args += ["--once", "--state-file", f"/var/lib/{CHECK_STATE_DIR}/state.json"]
    if w.observe_only:
        args.append("--observe-only")
    allow = ("localhost", *(n for n in networks if n != "localhost"))
    return WatchPlan(w.mode, tuple(args), nvidia, allow, w.timer_period, systemd_version)


def _hardening(plan: WatchPlan) -> list[tuple[str, str]]:
    # Left out on purpose: ProtectKernelTunables=, ProtectControlGroups= and ProtectProc=
    # each make `journalctl --follow` hang before its first line (seen on systemd 252 in
    # systemd-nspawn), and the log is the supervisor's evidence of progress.
    rows = [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelModules", "no" if plan.nvidia else "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("PrivateIPC", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("UMask", "0077"),
        ("SystemCallArchitectures", "native"),
        ("SystemCallFilter", "@system-service @module" if plan.nvidia else "@system-service"),
        ("SystemCallErrorNumber", "EPERM"),
        ("CapabilityBoundingSet", "CAP_SYS_MODULE" if plan.nvidia else ""),
        ("IPAddressDeny", "any"),
        *[("IPAddressAllow", net) for net in plan.ip_allow],
        ("MemoryMax", "256M"),
        ("TasksMax", "64"),
    ]
    if plan.nvidia:
        rows += [
            ("DevicePolicy", "closed"),
            ("DeviceAllow", "/dev/nvidiactl rw"),
            ("DeviceAllow", "char-nvidia-frontend rw"),
        ]
    else:
        rows.append(("PrivateDevices", "yes"))
    return [
        (k, v)
        for k, v in rows
        if directives.lookup(k) is None or directives.supported(k, plan.systemd_version)
    ]


HEADER = ("Written by ollama-ops for [watch] in its config; `ollama-ops plan` explains it.",)


def _exec(argv: tuple[str, ...]) -> str:
    return unit.escape_specifiers(" ".join(argv))


def render_watch(plan: WatchPlan, watched: str) -> dict[str, str]:
    """The supervisor's unit, or the check service and its timer."""
    if plan.mode == "supervisor":
        service: list[tuple[str, str]] = [
            ("Type", "notify"),
            ("NotifyAccess", "main"),
            ("ExecStart", _exec(plan.command)),
            ("WatchdogSec", "30"),
            ("Restart", "on-failure"),
            ("RestartSec", "5"),
            ("TimeoutStopSec", "45"),
            *_hardening(plan),
        ]
        text = unit.render(
            [
                (
                    "Unit",
                    [
                        ("Description", f"ollama-ops supervisor of {watched}"),
                        ("Documentation", "https://github.com/ollama/ollama/issues/3144"),
                        ("After", f"{watched} network-online.target"),
                        ("StartLimitIntervalSec", "600"),
                        ("StartLimitBurst", "10"),
                    ],
                ),
                ("Service", service),
                ("Install", [("WantedBy", "multi-user.target")]),
            ],
            header=HEADER,
        )
        return {f"{UNIT_DIR}/{WATCH_UNIT}": text}
    check = unit.render(
        [
            ("Unit", [("Description", f"ollama-ops check of {watched} (run by {CHECK_TIMER})")]),
            (
                "Service",
                [
                    ("Type", "oneshot"),
                    ("ExecStart", _exec(plan.command)),
                    ("StateDirectory", CHECK_STATE_DIR),
                    ("TimeoutStartSec", "300"),
                    # Exit codes 1-3 are the check's verdict (WARNING..UNKNOWN), not a failure.
                    ("SuccessExitStatus", "1 2 3"),
                    *_hardening(plan),
                ],
            ),
        ],
        header=HEADER,
    )
    timer = unit.render(
        [
            (
                "Unit",
                [("Description", f"run ollama-ops check of {watched} every {plan.timer_period}s")],
            ),
            (
                "Timer",
                [
                    ("OnBootSec", str(plan.timer_period)),
                    ("OnUnitActiveSec", str(plan.timer_period)),
                    ("AccuracySec", "1"),
                ],
            ),
            ("Install", [("WantedBy", "timers.target")]),
        ],
        header=HEADER,
    )
    return {f"{UNIT_DIR}/{CHECK_SERVICE}": check, f"{UNIT_DIR}/{CHECK_TIMER}": timer}
