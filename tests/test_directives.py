"""directives: the table, its version facts, and a real check against systemd 252."""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_ops.errors import UnsafeValueError
from ollama_ops.host import proc
from ollama_ops.unitfile import directives
from ollama_ops.unitfile import syntax as unit
from ollama_ops.unitfile.directives import DIRECTIVES, KNOWN_SECTION_KEYS, Directive
from ollama_ops.unitfile.grammar import Grammar, problem

SEED_GUIDE = Path("/work/shared/reference/seed-guide.txt")

# Every directive the seed guide writes, by section (its heredocs into systemd paths).
SEED_GUIDE_DIRECTIVES = {
    "Unit": {"Description", "After", "Wants"},
    "Service": {
        "CPUWeight", "DeviceAllow", "Environment", "EnvironmentFile", "ExecStart", "Group",
        "IOSchedulingClass", "IOSchedulingPriority", "LimitMEMLOCK", "LimitNOFILE",
        "LimitNPROC", "LockPersonality", "MemoryHigh", "MemoryMax", "NoNewPrivileges",
        "PrivateTmp", "ProtectClock", "ProtectControlGroups", "ProtectHome", "ProtectHostname",
        "ProtectKernelLogs", "ProtectKernelModules", "ProtectKernelTunables", "ProtectProc",
        "ProtectSystem", "ReadOnlyPaths", "ReadWritePaths", "RemainAfterExit", "Restart",
        "RestartMaxDelaySec", "RestartSec", "RestartSteps", "RestrictAddressFamilies",
        "RestrictNamespaces", "RestrictRealtime", "StandardError", "StandardOutput",
        "StartLimitBurst", "StartLimitIntervalSec", "SyslogFacility", "SyslogIdentifier",
        "SystemCallFilter", "TimeoutStartSec", "TimeoutStopSec", "Type", "User",
    },
    "Install": {"WantedBy"},
    "Timer": {"OnCalendar", "Persistent"},
    "Journal": {"SystemMaxUse", "SystemMaxFileSize", "MaxRetentionSec"},
}  # fmt: skip

_REQUIRED_TEXT = """
User Group DynamicUser SupplementaryGroups Type ExecStart ExecStartPre ExecStop Environment
EnvironmentFile WorkingDirectory UMask StateDirectory StateDirectoryMode CacheDirectory
ReadWritePaths ReadOnlyPaths InaccessiblePaths TemporaryFileSystem BindPaths BindReadOnlyPaths
NoNewPrivileges ProtectSystem ProtectHome PrivateTmp PrivateDevices PrivateUsers PrivateNetwork
PrivateIPC PrivateMounts ProtectKernelTunables ProtectKernelModules ProtectKernelLogs
ProtectControlGroups ProtectClock ProtectHostname ProtectProc ProcSubset RestrictAddressFamilies
RestrictNamespaces RestrictRealtime RestrictSUIDSGID RemoveIPC LockPersonality
MemoryDenyWriteExecute SystemCallFilter SystemCallArchitectures SystemCallErrorNumber
CapabilityBoundingSet AmbientCapabilities KeyringMode NotifyAccess DevicePolicy DeviceAllow
IPAddressAllow IPAddressDeny IPAccounting MemoryAccounting MemoryMax MemoryHigh MemoryLow
MemoryMin MemorySwapMax CPUWeight CPUQuota AllowedCPUs AllowedMemoryNodes TasksMax IOWeight
IOSchedulingClass IOSchedulingPriority Nice OOMPolicy OOMScoreAdjust ManagedOOMMemoryPressure
Restart RestartSec RestartSteps RestartMaxDelaySec RestartPreventExitStatus SuccessExitStatus
TimeoutStartSec TimeoutStopSec TimeoutSec WatchdogSec StartLimitIntervalSec StartLimitBurst
StartLimitAction Description Documentation After Before Wants Requires BindsTo PartOf
ConditionPathExists AssertPathExists WantedBy RequiredBy Also StandardOutput StandardError
SyslogIdentifier SyslogFacility LogRateLimitIntervalSec LogRateLimitBurst LimitNOFILE LimitNPROC
LimitMEMLOCK LimitCORE OnCalendar OnBootSec OnUnitActiveSec Persistent RandomizedDelaySec
AccuracySec Unit SystemMaxUse SystemMaxFileSize MaxRetentionSec RuntimeMaxUse
"""
REQUIRED = _REQUIRED_TEXT.split()  # the directives the brief for this table names

# Versions checked against systemd's man pages, NEWS and source (see directives.py).
VERSION_FACTS = {
    "RestartSteps": ("Service", 254),
    "RestartMaxDelaySec": ("Service", 254),
    "ProtectProc": ("Service", 247),
    "ProcSubset": ("Service", 247),
    "ProtectClock": ("Service", 245),
    "ProtectHostname": ("Service", 242),
    "StartLimitIntervalSec": ("Unit", 230),
    "StartLimitBurst": ("Unit", 229),
    "StartLimitAction": ("Unit", 229),
    "MemoryHigh": ("Service", 231),
    "MemoryMax": ("Service", 231),
    "MemoryMin": ("Service", 240),
    "CPUWeight": ("Service", 232),
    "AllowedCPUs": ("Service", 244),
    "PrivateIPC": ("Service", 248),
    "ProtectKernelLogs": ("Service", 244),
    "ManagedOOMMemoryPressure": ("Service", 247),
    "OOMPolicy": ("Service", 243),
    "DynamicUser": ("Service", 232),
    "StateDirectory": ("Service", 235),
    "LogRateLimitIntervalSec": ("Service", 240),
    "MaxRetentionSec": ("Journal", 195),
}

VERIFY_VERSION = 252  # the systemd installed on these machines (systemd-facts.md)


def test_every_seed_guide_directive_is_in_the_table() -> None:
    for section, names in SEED_GUIDE_DIRECTIVES.items():
        for name in names:
            d = directives.lookup(name)
            assert d is not None, name
            # StartLimit*= are in the guide's [Service]; the table knows both placements.
            assert name in KNOWN_SECTION_KEYS[d.section]
            if section != d.section:
                assert name in {"StartLimitBurst", "StartLimitIntervalSec"}, (section, name)


@pytest.mark.skipif(not SEED_GUIDE.exists(), reason="seed guide not available")
def test_seed_guide_file_has_no_directive_missing_from_the_table() -> None:
    text = SEED_GUIDE.read_text()
    found: set[str] = set()
    for target, body in re.findall(r"tee (\S+) <<'EOF'\n(.*?)\nEOF", text, re.S):
        if "systemd" not in target:
            continue
        for line in body.splitlines():
            m = re.match(r"\s*([A-Za-z][A-Za-z0-9]*)=", line)
            if m:
                found.add(m.group(1))
    assert found == set().union(*SEED_GUIDE_DIRECTIVES.values())
    assert found <= set(DIRECTIVES)


def test_required_directives_are_in_the_table() -> None:
    missing = [name for name in REQUIRED if name not in DIRECTIVES]
    assert missing == []


@pytest.mark.parametrize(("name", "fact"), sorted(VERSION_FACTS.items()))
def test_version_facts(name: str, fact: tuple[str, int]) -> None:
    d = DIRECTIVES[name]
    assert (d.section, d.since) == fact


def test_start_limit_placements() -> None:
    # [Unit] is the home of all StartLimit*=; [Service] keeps only the old names.
    for name in ("StartLimitIntervalSec", "StartLimitInterval", "StartLimitBurst"):
        assert name in KNOWN_SECTION_KEYS["Unit"]
    assert "StartLimitIntervalSec" not in KNOWN_SECTION_KEYS["Service"]
    assert "StartLimitBurst" in KNOWN_SECTION_KEYS["Service"]
    assert "StartLimitInterval" in KNOWN_SECTION_KEYS["Service"]


def test_supported() -> None:
    assert directives.supported("RestartSteps", 254)
    assert directives.supported("RestartSteps", 257)
    assert not directives.supported("RestartSteps", 253)
    assert not directives.supported("RestartSteps", 252)
    assert directives.supported("ProtectProc", 247)
    assert not directives.supported("ProtectProc", 246)
    assert not directives.supported("NoSuchDirective", 999)
    assert directives.supported("User", directives.OLDEST_TRACKED)
    # Section-aware: StartLimitIntervalSec only works in [Unit].
    assert directives.supported("StartLimitIntervalSec", 252, section="Unit")
    assert not directives.supported("StartLimitIntervalSec", 252, section="Service")
    assert directives.supported("StartLimitBurst", 252, section="Service")
    assert not directives.supported("StartLimitBurst", 228, section="Unit")
    assert not directives.supported("User", 252, section="Unit")


def test_lookup() -> None:
    d = directives.lookup("ProcSubset")
    assert d is not None
    assert d.name == "ProcSubset"
    assert "/proc/meminfo" in d.breaks
    assert directives.lookup("procsubset") is None


def test_known_section_keys_cover_the_table() -> None:
    for d in DIRECTIVES.values():
        assert d.name in KNOWN_SECTION_KEYS[d.section]
    assert set(KNOWN_SECTION_KEYS) == {"Unit", "Service", "Install", "Timer", "Journal"}


@pytest.mark.parametrize("d", list(DIRECTIVES.values()), ids=lambda d: d.name)
def test_entry_is_complete_and_renderable(d: Directive) -> None:
    assert d.why
    assert d.why.endswith(".")
    assert not d.breaks or d.breaks.endswith(".")
    assert d.protects in directives.PROTECTS
    assert d.sample
    assert d.since >= directives.OLDEST_TRACKED
    # The sample must survive the renderer unchanged.
    text = unit.render([(d.section, [(d.name, d.sample)])])
    assert unit.parse(text).get(d.section, d.name) == [d.sample]


def test_the_ollama_breakers_are_spelled_out() -> None:
    assert "id_ed25519" in DIRECTIVES["ProtectSystem"].breaks
    assert "ReadWritePaths" in DIRECTIVES["ProtectSystem"].breaks
    assert "nvidia-modprobe" in DIRECTIVES["NoNewPrivileges"].breaks
    assert "GPU" in DIRECTIVES["PrivateDevices"].breaks
    assert "/dev/kfd" in DIRECTIVES["PrivateUsers"].breaks
    assert "JIT" in DIRECTIVES["MemoryDenyWriteExecute"].breaks


# ------------------------------------------------- real check: systemd 252

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")


@functools.cache
def _installed_version() -> int | None:
    if SYSTEMD_ANALYZE is None:
        return None
    out = proc.run([SYSTEMD_ANALYZE, "--version"], check=False).stdout
    m = re.match(r"systemd (\d+)", out)
    return int(m.group(1)) if m else None


def _verify(root: Path, section: str, key: str, value: str) -> tuple[str, int, str]:
    """Write a probe unit holding ``key`` in ``section``; return (file, key line, output)."""
    binary = root / "usr/local/bin/ollama"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True, exist_ok=True)
    if section == "Timer":
        name = "probe.timer"
        lines = ["[Unit]", "Description=probe timer", "[Timer]"]
        if key != "Unit":
            lines.append("Unit=probe.service")
        (unit_dir / "probe.service").write_text(
            "[Service]\nType=oneshot\nExecStart=/usr/local/bin/ollama\n"
        )
    else:
        name = "probe.service"
        lines = ["[Unit]", "Description=probe", "[Service]", "ExecStart=/usr/local/bin/ollama"]
        if section != "Service":
            lines.append(f"[{section}]")
    lines.append(f"{key}={value}")
    path = unit_dir / name
    path.write_text("\n".join(lines) + "\n")
    assert SYSTEMD_ANALYZE is not None
    result = proc.run([SYSTEMD_ANALYZE, "verify", f"--root={root}", name], check=False)
    return str(path), len(lines), result.stdout + result.stderr


def _unit_placements() -> list[tuple[str, str, int, str]]:
    """(section, key, since, sample) for every unit-file placement in the table."""
    out: list[tuple[str, str, int, str]] = []
    for d in DIRECTIVES.values():
        if d.section == "Journal":
            continue
        out.append((d.section, d.name, d.since, d.sample))
        out.extend((legacy, d.name, since, d.sample) for legacy, since in d.legacy_sections)
    return out


@needs_analyze
@pytest.mark.parametrize(
    ("section", "key", "since", "sample"),
    _unit_placements(),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_systemd_analyze_verify_agrees(
    tmp_path: Path, section: str, key: str, since: int, sample: str
) -> None:
    if _installed_version() != VERIFY_VERSION:
        pytest.skip(f"expects systemd {VERIFY_VERSION}")
    path, line, output = _verify(tmp_path, section, key, sample)
    unknown = f"Unknown key '{key}' in section [{section}]"
    if since <= VERIFY_VERSION:
        assert unknown not in output
        assert "Unknown section" not in output
        # Nothing at all about the key's line: the sample parses cleanly too.
        assert f"{path}:{line}:" not in output, output
    else:
        assert unknown in output, output


@needs_analyze
def test_start_limit_interval_sec_in_service_is_unknown_to_systemd(tmp_path: Path) -> None:
    # The seed guide's mistake, confirmed against the real parser.
    if _installed_version() != VERIFY_VERSION:
        pytest.skip(f"expects systemd {VERIFY_VERSION}")
    _path, _line, output = _verify(tmp_path, "Service", "StartLimitIntervalSec", "600")
    assert "Unknown key 'StartLimitIntervalSec' in section [Service]" in output


JOURNALD = Path("/lib/systemd/systemd-journald")


@pytest.mark.skipif(not JOURNALD.exists(), reason="systemd-journald not installed")
@pytest.mark.parametrize(
    "d", [d for d in DIRECTIVES.values() if d.section == "Journal"], ids=lambda d: d.name
)
def test_journald_knows_the_journal_keys(d: Directive) -> None:
    # journald's key table is compiled in as "Journal.<Key>" strings.
    if _installed_version() != VERIFY_VERSION:
        pytest.skip(f"expects systemd {VERIFY_VERSION}")
    binary = JOURNALD.read_bytes()
    assert f"Journal.{d.name}\0".encode() in binary
    assert d.since <= VERIFY_VERSION


# ---------------------------------------------------------------- grammars (issue 7, item 1)


# Directives whose value is free text on purpose; every other one has a word grammar.
_FREE_TEXT = {"Description", "OnCalendar"}


def test_every_directive_has_a_grammar_and_its_sample_fits_it() -> None:
    for d in DIRECTIVES.values():
        if d.name not in _FREE_TEXT:
            assert d.grammar is not Grammar.TEXT, f"{d.name} has no grammar"
        assert problem(d.grammar, d.sample) is None, (d.name, d.sample)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("IPAddressAllow", "fe80::1%%x any"),  # the zone id that hid "any"
        ("IPAddressAllow", "fe80::1%x"),
        ("IPAddressAllow", "10.0.0.0/8 'any'"),
        ("IPAddressAllow", "10.0.0.0/8\\ any"),
        ("IPAddressAllow", "10.0.0.0/33"),
        ("IPAddressAllow", "host.example"),
        ("IPAddressDeny", "any\u00a0"),
        ("DeviceAllow", "/dev/nvidia0 rw /dev/sda"),
        ("DeviceAllow", "/dev/sda rwx"),
        ("DeviceAllow", "/dev/sda rr"),
        ("DeviceAllow", "/etc/shadow rw"),
        ("DeviceAllow", '"/dev/sda" rw'),
        ("AllowedCPUs", "0-99999999999"),
        ("AllowedCPUs", "0-8192"),
        ("AllowedCPUs", "7-3"),
        ("AllowedCPUs", "\u0660-\u0667"),
        ("ReadWritePaths", "/etc"),
        ("ReadWritePaths", "/srv/ok /etc/."),
        ("ReadWritePaths", "/srv/a\\x20b"),
        ("ReadWritePaths", "/usr/lib/ollama"),
        ("ReadWritePaths", "relative"),
        ("SupplementaryGroups", "render 'root wheel'"),
        ("SupplementaryGroups", "render %g"),
        ("RestrictAddressFamilies", "AF_INET AF_PACKET\\"),
        ("RestrictAddressFamilies", "AF_INET ~AF_PACKET"),
        ("SystemCallFilter", '@system-service "mount"'),
        ("CapabilityBoundingSet", "CAP_SYS_ADMIN cap_net_raw"),
        ("User", "ollama root"),
        ("ExecStart", "/usr/bin/ollama serve; /bin/sh"),
        ("ExecStart", "ollama serve"),
        ("Environment", '"A=1" B'),
        ("Environment", '"A=%h"'),
        ("MemoryMax", "1G 2G"),
        ("MemoryMax", "80%%"),
        ("StartLimitBurst", "99999999999"),
        ("TimeoutStopSec", "30 min; rm"),
        ("After", "network-online.target; reboot.target"),
        ("StateDirectory", "../etc"),
        ("UMask", "0999"),
    ],
)
def test_render_refuses_values_outside_the_directives_grammar(key: str, value: str) -> None:
    section = DIRECTIVES[key].section
    with pytest.raises(UnsafeValueError, match=rf"{section}\.{key}=") as info:
        unit.render([(section, [(key, value)])])
    assert "\n" not in str(info.value)


_WORDY = st.lists(
    st.sampled_from(
        [
            *list("0123456789abcdefAF:./-%~ \"'\\,rwm@_\xa0٣"),
            "any",
            "localhost",
            "/dev/",
            "/srv/",
            "AF_",
            "CAP_",
            "@",
            ".service",
            "yes",
        ]
    ),
    max_size=12,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(k for k, d in DIRECTIVES.items() if d.name not in _FREE_TEXT)),
       value=_WORDY)  # fmt: skip
def test_an_accepted_value_is_read_by_systemd_as_exactly_its_words(key: str, value: str) -> None:
    """Whatever render accepts, systemd's word splitter yields the same words as a blank split:
    no quote, escape or specifier can turn one word into two or hide one."""
    section = DIRECTIVES[key].section
    try:
        text = unit.render([(section, [(key, value)])])
    except UnsafeValueError as exc:
        assert "\n" not in str(exc)
        return
    written = unit.parse(text).get(section, key)
    assert written == [value]
    if key != "Environment":
        assert unit.split_words(value) == value.split()
