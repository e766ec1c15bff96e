"""The seed guide, setting by setting: what the plan does with each one, and why.

``GUIDE`` lists every directive and variable the seed guide's files set (its
drop-in ``hardened.conf``, the template ``ollama@.service`` and its
instance files, and the scripts and units around them); tests/test_guide.py
walks the guide's own text and fails on any setting missing here.
``left_out`` adds to a plan the guide's service settings that no rule wrote,
each with the reason it is left out, so that ``account`` finds every one of
them in the Deployment: the same value, ours instead (with our reason), or
left out (with the reason). Settings of files that are not the service
(GPU clocks, the health-check timer, journald) carry one reason per file.
Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ollama_ops.model.deployment import Deployment, Section, Setting, Source
from ollama_ops.plan.builder import Builder

DROPIN = "hardened.conf"
TEMPLATE = "ollama@.service"
# Files whose settings are settings of the Ollama service itself.
SERVICE_FILES = (DROPIN, TEMPLATE, "gpu0.conf", "gpu1.conf")


@dataclass(frozen=True)
class GuideSetting:
    file: str  # the guide's file, by name
    section: str  # Unit, Service, Install, Timer, Journal; Environment for a variable; script
    key: str
    value: str


def _rows(file: str, section: str, text: str) -> tuple[GuideSetting, ...]:
    rows = []
    for line in text.strip().splitlines():
        key, _, value = line.strip().partition("=")
        rows.append(GuideSetting(file, section, key, value))
    return tuple(rows)


GUIDE: tuple[GuideSetting, ...] = (
    *_rows(DROPIN, "Unit", """
        Description=Ollama LLM Service (Production)
        After=network-online.target
        Wants=network-online.target
        After=nvidia-persistenced.service
        After=systemd-modules-load.service
        After=local-fs.target
    """),
    *_rows(DROPIN, "Service", """
        MemoryMax=56G
        MemoryHigh=48G
        CPUWeight=150
        IOSchedulingClass=best-effort
        IOSchedulingPriority=4
        TimeoutStartSec=300
        TimeoutStopSec=120
        Restart=on-failure
        RestartSec=10
        RestartMaxDelaySec=300
        RestartSteps=5
        StartLimitIntervalSec=600
        StartLimitBurst=5
    """),
    *_rows(DROPIN, "Environment", """
        OLLAMA_HOST=0.0.0.0:11434
        OLLAMA_MODELS=/var/lib/ollama/models
        OLLAMA_NUM_PARALLEL=4
        OLLAMA_MAX_LOADED_MODELS=2
        OLLAMA_KEEP_ALIVE=10m
        OLLAMA_MAX_QUEUE=128
        CUDA_VISIBLE_DEVICES=0
        OLLAMA_FLASH_ATTENTION=1
        GOMAXPROCS=16
    """),
    *_rows(DROPIN, "Service", """
        NoNewPrivileges=true
        ProtectSystem=strict
        ProtectHome=true
        ReadWritePaths=/var/lib/ollama
        ReadOnlyPaths=/usr/local/bin/ollama
        PrivateTmp=true
        ProtectKernelTunables=true
        ProtectKernelModules=true
        ProtectKernelLogs=true
        ProtectProc=invisible
        ProtectHostname=true
        ProtectClock=true
        ProtectControlGroups=true
        RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
        SystemCallFilter=@system-service @resources
        SystemCallFilter=~@privileged @obsolete
        RestrictNamespaces=true
        RestrictRealtime=true
        LockPersonality=true
        DeviceAllow=/dev/nvidia0 rw
        DeviceAllow=/dev/nvidiactl rw
        DeviceAllow=/dev/nvidia-uvm rw
        DeviceAllow=/dev/nvidia-uvm-tools rw
        StandardOutput=journal
        StandardError=journal
        SyslogIdentifier=ollama
        SyslogFacility=daemon
        LimitNOFILE=65536
        LimitNPROC=4096
        LimitMEMLOCK=infinity
    """),
    *_rows(DROPIN, "Install", "WantedBy=multi-user.target"),
    *_rows(TEMPLATE, "Unit", """
        Description=Ollama LLM Service (Instance %i)
        After=network-online.target nvidia-persistenced.service
    """),
    *_rows(TEMPLATE, "Service", """
        Type=simple
        User=ollama
        Group=ollama
        ExecStart=/usr/local/bin/ollama serve
        Restart=on-failure
        RestartSec=10
        EnvironmentFile=/etc/ollama/%i.conf
        NoNewPrivileges=true
        ProtectSystem=strict
        ProtectHome=true
        ReadWritePaths=/var/lib/ollama/%i
        PrivateTmp=true
        LimitNOFILE=65536
        LimitMEMLOCK=infinity
    """),
    *_rows(TEMPLATE, "Install", "WantedBy=multi-user.target"),
    *_rows("gpu0.conf", "Environment", """
        OLLAMA_HOST=0.0.0.0:11434
        OLLAMA_MODELS=/var/lib/ollama/gpu0/models
        CUDA_VISIBLE_DEVICES=0
        OLLAMA_NUM_PARALLEL=8
        OLLAMA_MAX_LOADED_MODELS=3
        OLLAMA_KEEP_ALIVE=30m
    """),
    *_rows("gpu1.conf", "Environment", """
        OLLAMA_HOST=0.0.0.0:11435
        OLLAMA_MODELS=/var/lib/ollama/gpu1/models
        CUDA_VISIBLE_DEVICES=1
        OLLAMA_NUM_PARALLEL=2
        OLLAMA_MAX_LOADED_MODELS=1
        OLLAMA_KEEP_ALIVE=15m
    """),
    *_rows("nvidia-power.service", "Unit", """
        Description=NVIDIA GPU Power Configuration
        After=nvidia-persistenced.service
    """),
    *_rows("nvidia-power.service", "Service", """
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/usr/bin/nvidia-smi -pm 1
        ExecStart=/usr/bin/nvidia-smi -pl 300
        ExecStart=/usr/bin/nvidia-smi -lgc 1800,1800
    """),
    *_rows("nvidia-power.service", "Install", "WantedBy=multi-user.target"),
    *_rows("ollama-healthcheck.timer", "Unit", "Description=Ollama Health Check Timer"),
    *_rows("ollama-healthcheck.timer", "Timer", """
        OnCalendar=*:0/2
        Persistent=true
    """),
    *_rows("ollama-healthcheck.timer", "Install", "WantedBy=timers.target"),
    *_rows("ollama-healthcheck.service", "Unit", "Description=Ollama Health Check"),
    *_rows("ollama-healthcheck.service", "Service", """
        Type=oneshot
        ExecStart=/opt/ollama/healthcheck.sh
    """),
    *_rows("healthcheck.sh", "script", """
        OLLAMA_API="http://localhost:11434"
        MAX_RESPONSE_TIME=10
        LOG_TAG="ollama-healthcheck"
    """),
    *_rows("journald-ollama.conf", "Journal", """
        SystemMaxUse=2G
        SystemMaxFileSize=100M
        MaxRetentionSec=7d
    """),
    *_rows("benchmark_ollama.sh", "script", """
        MODEL="llama3.1:8b"
        PROMPT="Explain the difference between TCP and UDP in networking."
        ITERATIONS=5
    """),
)  # fmt: skip

# The guide's service settings no rule writes: left out, and why.
_LEFT_OUT: dict[tuple[Section, str], str] = {
    (Section.UNIT, "Description"): "not in the drop-in: the unit's own Description= names it",
    (Section.SERVICE, "IOSchedulingClass"): (
        "best-effort is already the kernel's class for the service; Ollama reads a model "
        "once per load, so disk priority buys nothing"
    ),
    (Section.SERVICE, "IOSchedulingPriority"): (
        "4 is already best-effort's priority at Nice=0 ((nice + 20) / 5)"
    ),
    (Section.SERVICE, "TimeoutStartSec"): (
        "Type=exec: the start is done once ollama serve runs; models load on the first "
        "request, not at start, so systemd's 90 s default waits for nothing longer"
    ),
    (Section.SERVICE, "LimitNPROC"): (
        "RLIMIT_NPROC counts every thread of the user host-wide: Go and CUDA threads of "
        "several runners pass 4096 on a big host and fail with EAGAIN; TasksMax= (systemd's "
        "default, 15% of pid_max) already bounds the service"
    ),
    (Section.SERVICE, "StandardOutput"): "journal is systemd's default already",
    (Section.SERVICE, "StandardError"): "journal (inherited from StandardOutput) already",
    (Section.SERVICE, "SyslogIdentifier"): "the journal already tags the lines 'ollama'",
    (Section.SERVICE, "SyslogFacility"): "daemon is the default facility already",
    (Section.SERVICE, "ReadOnlyPaths"): (
        "ProtectSystem=strict already makes everything outside ReadWritePaths= read-only, "
        "the binary included"
    ),
    (Section.SERVICE, "DeviceAllow"): "no GPU on this host: PrivateDevices=yes, no device nodes",
    (Section.SERVICE, "EnvironmentFile"): (
        "every variable is an Environment= line of the drop-in, where plan explains it and "
        "the diff shows it; a file would hide them"
    ),
    (Section.ENV, "CUDA_VISIBLE_DEVICES"): "no NVIDIA GPU on this host: nothing to list",
}

# Settings the Deployment does not hold, and why.
_FIXED: dict[tuple[str, str], str] = {
    ("Install", "WantedBy"): (
        "[Install] of a drop-in is not read by `systemctl enable`: the unit's own WantedBy= "
        "applies (ollama-ops writes multi-user.target in a unit it writes whole)"
    ),
    ("Service", "User"): "the installed unit's User= stays (ollama-ops sets it only in a unit "
    "it writes whole)",
    ("Service", "Group"): "the installed unit's Group= stays",
    ("Service", "ExecStart"): "the installed unit's ExecStart= stays (service.binary replaces it)",
}

# Values of list settings the guide adds that the plan leaves out, and why.
_VALUES: dict[tuple[str, str], str] = {
    ("After", "local-fs.target"): (
        "implied: every service with default dependencies starts after sysinit.target, "
        "which follows local-fs.target"
    ),
    ("After", "nvidia-persistenced.service"): "written on NVIDIA hosts only",
    ("After", "systemd-modules-load.service"): "written on NVIDIA hosts only",
    ("DeviceAllow", "/dev/nvidia0 rw"): (
        "char-nvidia-frontend rw covers /dev/nvidia0..N, so GPUs 1..N work too"
    ),
    ("RestrictAddressFamilies", "AF_NETLINK"): (
        "not needed to serve over IP; netlink would let the server read and watch the "
        "host's interfaces and routes"
    ),
    ("SystemCallFilter", "@resources"): "inside @system-service already",
    ("SystemCallFilter", "@obsolete"): "not in @system-service, so denied already",
}

# One reason per file that is not the Ollama service.
_OTHER_FILES: dict[str, str] = {
    "nvidia-power.service": (
        "not written: persistence is nvidia-persistenced's job (ordered before Ollama); "
        "-pl 300 and -lgc 1800 are one GPU model's numbers, wrong on others, and fixed "
        "clocks add heat for little token rate (decoding is memory-bound)"
    ),
    "ollama-healthcheck.timer": (
        "not written: its script restarts Ollama after one slow answer (a model loading "
        "looks like a hang) and warns on every host with no model pulled yet"
    ),
    "ollama-healthcheck.service": "not written: see ollama-healthcheck.timer",
    "healthcheck.sh": "not written: see ollama-healthcheck.timer",
    "journald-ollama.conf": (
        "not written: journal size and retention are host-wide, shared by every service; "
        "set them for the host, not for Ollama"
    ),
    "benchmark_ollama.sh": "not a setting: a benchmark script",
}


class Verdict(str, Enum):
    SAME = "same"
    DIFFERS = "ours differs"
    LEFT_OUT = "left out"
    OTHER = "not ours"


@dataclass(frozen=True)
class Account:
    """What the plan does with one setting of the guide."""

    guide: GuideSetting
    verdict: Verdict
    ours: str | None  # our value(s), joined by " | ", when we write the key
    reason: str


def left_out(b: Builder) -> None:
    """Add the guide's service settings that no rule wrote, with the reason."""
    have = {(s.section, s.key) for s in b.settings}
    for (section, key), reason in _LEFT_OUT.items():
        if (section, key) not in have:
            b.add(section, key, None, Source.RULE, f"seed guide: {reason}")


_BOOL = {"yes": "1", "true": "1", "on": "1", "1": "1", "no": "0", "false": "0", "off": "0"}


def _same(ours: str, guide: str) -> bool:
    if _BOOL.get(ours.lower(), ours) == _BOOL.get(guide.lower(), guide):
        return True
    return ours.split() == guide.split()


# Dependencies: each word is a unit of its own, in whichever line it is written.
_UNIT_LISTS = frozenset({"After", "Before", "Wants", "Requires"})


def _ours(deployment: Deployment, g: GuideSetting) -> list[Setting]:
    """Our settings of the guide's key: a variable, or a directive in [Unit] or [Service]
    (the guide puts StartLimit*= in [Service], where they belong in [Unit])."""
    env = g.section == "Environment"
    return [
        s
        for s in deployment.settings
        if s.key == g.key
        and (s.section is Section.ENV) == env
        and (env or g.section in ("Unit", "Service"))
    ]


def account_one(deployment: Deployment, g: GuideSetting) -> Account | None:
    """The plan's answer to one guide setting; None when the plan has none (a gap)."""
    if g.file not in SERVICE_FILES:
        reason = _OTHER_FILES.get(g.file)
        return None if reason is None else Account(g, Verdict.OTHER, None, reason)
    settings = _ours(deployment, g)
    written = [s for s in settings if s.value]
    if (
        g.key == "DeviceAllow"
        and "nvidia" in g.value
        and not any("nvidia" in (s.value or "") for s in written)
    ):
        return Account(g, Verdict.LEFT_OUT, None, "no NVIDIA GPU on this host")
    if any(_same(s.value or "", g.value) for s in written):
        match = next(s for s in written if _same(s.value or "", g.value))
        return Account(g, Verdict.SAME, match.value, match.reason)
    words = {w: s for s in written for w in (s.value or "").split()}
    if g.key in _UNIT_LISTS and written and all(w in words for w in g.value.split()):
        match = words[g.value.split()[-1]]
        return Account(g, Verdict.SAME, match.value, match.reason)
    value_reason = _VALUES.get((g.key, g.value)) or next(
        (_VALUES[(g.key, w)] for w in g.value.split() if (g.key, w) in _VALUES), None
    )
    ours = " | ".join(s.value or "" for s in written) or None
    if value_reason is not None:
        return Account(g, Verdict.LEFT_OUT, ours, value_reason)
    if written:
        return Account(g, Verdict.DIFFERS, ours, written[-1].reason)
    if settings:
        return Account(g, Verdict.LEFT_OUT, None, settings[-1].reason)
    base = [v for sec, k, v in deployment.base_unit if sec.value == g.section and k == g.key]
    if base:
        verdict = Verdict.SAME if _same(base[-1], g.value) else Verdict.DIFFERS
        return Account(g, verdict, base[-1], "in the unit ollama-ops writes whole")
    reason = _FIXED.get((g.section, g.key))
    return None if reason is None else Account(g, Verdict.LEFT_OUT, None, reason)


def account(deployment: Deployment) -> list[Account]:
    """The plan's answer to every setting of the guide that it has one for."""
    return [a for a in (account_one(deployment, g) for g in GUIDE) if a is not None]


def gaps(deployment: Deployment) -> list[GuideSetting]:
    """Settings of the guide the plan says nothing about (there should be none)."""
    return [g for g in GUIDE if account_one(deployment, g) is None]
