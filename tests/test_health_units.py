"""What [watch] adds to the plan: OOMPolicy=, the ExecStartPost= wait, the watch units."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ollama_ops.errors import ConfigError
from ollama_ops.health.settings import WatchConfig
from ollama_ops.health.unitplan import CHECK_SERVICE, CHECK_TIMER, WATCH_UNIT
from ollama_ops.host import proc
from ollama_ops.model import config
from ollama_ops.plan.compose import build
from ollama_ops.render.systemd import render
from ollama_ops.unitfile import syntax

from .helpers import host

WATCH_PATH = f"/etc/systemd/system/{WATCH_UNIT}"
DROPIN = "/etc/systemd/system/ollama.service.d/50-ollama-ops.conf"


def files(toml: str, facts: str = "cpu-small") -> dict[str, str]:
    return render(build(host(facts), config.loads(toml)))


def values(text: str, section: str, key: str) -> list[str]:
    return syntax.parse(text).get(section, key)


def test_every_plan_decides_oom_policy_and_nothing_else_by_default() -> None:
    out = files("")
    assert values(out[DROPIN], "Service", "OOMPolicy") == ["continue"]
    assert values(out[DROPIN], "Service", "ExecStartPost") == []
    assert WATCH_PATH not in out


def test_watch_enabled_installs_the_supervisor_and_the_ready_wait() -> None:
    out = files("[watch]\nenabled = true\n")
    dropin = out[DROPIN]
    assert values(dropin, "Service", "ExecStartPost") == [
        "/usr/local/bin/ollama-ops health --wait-ready --timeout 60 --url http://127.0.0.1:11434"
    ]
    assert values(dropin, "Unit", "Wants") == ["network-online.target", WATCH_UNIT]
    watch = out[WATCH_PATH]
    for key, value in [
        ("Type", "notify"),
        ("WatchdogSec", "30"),
        ("Restart", "on-failure"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("PrivateDevices", "yes"),
        ("ProtectKernelModules", "yes"),
        ("IPAddressDeny", "any"),
    ]:
        assert values(watch, "Service", key) == [value], key
    (cmd,) = values(watch, "Service", "ExecStart")
    assert cmd.startswith(
        "/usr/local/bin/ollama-ops watch --unit ollama.service --url http://127.0.0.1:11434"
    )
    assert "--metrics 127.0.0.1:9839" in cmd
    assert values(watch, "Service", "IPAddressAllow") == ["localhost"]


def test_on_an_nvidia_host_the_supervisor_may_reload_the_uvm_module() -> None:
    watch = files("[watch]\nenabled = true\n", "nvidia-1x24g")[WATCH_PATH]
    assert values(watch, "Service", "CapabilityBoundingSet") == ["CAP_SYS_MODULE"]
    assert values(watch, "Service", "ProtectKernelModules") == ["no"]
    assert values(watch, "Service", "SystemCallFilter") == ["@system-service @module"]
    assert "/dev/nvidiactl rw" in values(watch, "Service", "DeviceAllow")
    assert values(watch, "Service", "PrivateDevices") == []


def test_the_timer_layout_runs_our_check_with_the_policy_state_kept() -> None:
    out = files('[watch]\nenabled = true\nmode = "timer"\ntimer_period = 120\n')
    assert WATCH_PATH not in out
    check = out[f"/etc/systemd/system/{CHECK_SERVICE}"]
    timer = out[f"/etc/systemd/system/{CHECK_TIMER}"]
    (cmd,) = values(check, "Service", "ExecStart")
    assert (
        " watch " in cmd
        and "--once" in cmd
        and "--state-file /var/lib/ollama-ops-check/state.json" in cmd
    )
    assert values(check, "Service", "SuccessExitStatus") == ["1 2 3"]
    assert values(timer, "Timer", "OnUnitActiveSec") == ["120"]
    assert CHECK_TIMER in values(out[DROPIN], "Unit", "Wants")


def test_a_long_ready_wait_lengthens_the_start_timeout() -> None:
    dropin = files("[watch]\nready_wait = true\nready_timeout = 120\n")[DROPIN]
    assert values(dropin, "Service", "TimeoutStartSec") == ["150"]
    assert WATCH_PATH not in files("[watch]\nready_wait = true\n")


def test_policy_settings_reach_the_supervisors_command_line() -> None:
    toml = '[watch]\nenabled = true\nmax_actions = 2\ncooldown = 10\nmetrics = ""\nobserve_only = true\n'
    (cmd,) = values(files(toml)[WATCH_PATH], "Service", "ExecStart")
    assert "--max-actions 2" in cmd and "--cooldown 10" in cmd
    assert "--no-metrics" in cmd and "--observe-only" in cmd


def test_oom_policy_from_the_config_is_marked_as_config() -> None:
    deployment = build(host("cpu-small"), config.loads('[watch]\noom_policy = "stop"\n'))
    (setting,) = [s for s in deployment.settings if s.key == "OOMPolicy"]
    assert setting.value == "stop" and setting.source.value == "config"


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[watch]\nenabled = 1\n", "must be true or false"),
        ('[watch]\nmode = "cron"\n', "must be one of"),
        ("[watch]\nmax_actions = 0\n", "from 1 to"),
        ("[watch]\nwindow = 5\n", "from 60 to"),
        ('[watch]\nmetrics = "0.0.0.0:9839"\n', "must be a loopback address"),
        ('[watch]\nollama_ops = "ollama-ops"\n', "absolute path"),
        ("[watch]\nenable = true\n", "did you mean 'enabled'"),
    ],
)
def test_bad_watch_settings_are_one_line_errors(toml: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.loads(toml, "ops.toml")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_defaults() -> None:
    w = WatchConfig()
    assert not w.enabled and not w.waits_ready
    assert WatchConfig(enabled=True).waits_ready
    assert not WatchConfig(enabled=True, ready_timeout=0).waits_ready


ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("mode", ["supervisor", "timer"])
def test_systemd_reads_the_watch_units_cleanly(tmp_path: Path, mode: str) -> None:
    out = files(f'[watch]\nenabled = true\nmode = "{mode}"\n', "nvidia-1x24g")
    binary = tmp_path / "usr/local/bin/ollama-ops"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    names = []
    for path, text in out.items():
        if path.startswith("/etc/systemd/system/ollama-ops-"):
            target = tmp_path / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            names.append(Path(path).name)
    assert ANALYZE is not None
    done = proc.run([ANALYZE, "verify", f"--root={tmp_path}", *names], check=False)
    # Only what it says about our files' lines and keys; the bare --root lacks sysinit.target.
    markers = (
        "/etc/systemd/system/ollama-ops-",
        "Unknown",
        "Invalid",
        "Failed to parse",
        "Ignoring",
    )
    said = (done.stdout + done.stderr).splitlines()
    complaints = [line for line in said if any(m in line for m in markers)]
    assert complaints == [], said
