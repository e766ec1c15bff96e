"""ollama-ops apply against a real systemd: 252 and 257 run it inside, 247 from the host.

The service's program is the project's simulator installed as
/usr/local/bin/ollama (no real Ollama runs here); it does what `ollama serve`
does on start: writes $HOME/.ollama/id_ed25519, creates the model store,
reads /proc/meminfo, then serves the API on OLLAMA_HOST.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import pytest

from ollama_ops.apply import activate
from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.errors import ExitStatus
from ollama_ops.host import probe
from ollama_ops.model import config
from ollama_ops.model import facts as facts_mod
from ollama_ops.model.facts import OllamaInstall
from ollama_ops.plan import compose as plan
from ollama_ops.runtime import Runtime

from .conftest import BootFactory
from .nspawn import (
    SUITES,
    Container,
    create_ollama_user,
    install_ollama_ops,
    install_simulator_as_ollama,
    write_installer_unit,
)

UNIT = "ollama.service"
DROPIN = "/etc/systemd/system/ollama.service.d/50-ollama-ops.conf"
API = "http://127.0.0.1:11434"
KEY = "/usr/share/ollama/.ollama/id_ed25519"
# The exposure targets (systemd-analyze security, 0 = best, 10 = worst).
CPU_ONLY_EXPOSURE_TARGET = 1.2


def installed_like_the_official_installer(c: Container) -> None:
    create_ollama_user(c)
    install_simulator_as_ollama(c)
    write_installer_unit(c, start=True)
    c.wait_active(UNIT)
    c.wait_http(API + "/")


def sha(c: Container, *paths: str) -> str:
    return c.exec(["sha256sum", *paths], check=False).stdout


def main_pid(c: Container) -> str:
    return c.show(UNIT, "MainPID")["MainPID"]


def expected_from_container_facts(c: Container) -> dict[str, str]:
    """What `systemctl show` must report: the plan for the container's own facts."""
    host = facts_mod.loads(c.exec(["ollama-ops", "facts", "--json"]).stdout, "container facts")
    assert host.systemd_version == SUITES[c.suite].systemd
    return activate.expected_properties(plan.build(host, config.DeploymentConfig()))


def verify_warnings(c: Container, needle: str) -> list[str]:
    """What this systemd version's `systemd-analyze verify` says on lines matching needle."""
    verify = c.exec(["systemd-analyze", "verify", UNIT], check=False)
    return [line for line in (verify.stdout + verify.stderr).splitlines() if needle in line]


def exposure(c: Container) -> float:
    """The exposure score as this systemd version's own systemd-analyze gives it."""
    text = c.exec(["systemd-analyze", "security", "--no-pager", UNIT], check=False).stdout
    match = re.search(r"Overall exposure level for ollama.service: ([0-9.]+)", text)
    assert match, text[-500:]
    return float(match.group(1))


def check_running_hardened(c: Container, expected: dict[str, str]) -> None:
    c.wait_active(UNIT)
    reply = c.wait_http(API + "/")
    assert reply.status == 200 and reply.body == "Ollama is running"
    assert c.show(UNIT, *expected) == expected
    # The key `ollama serve` writes at every start, private to the service user.
    assert c.sh(f"stat -c '%a %U' {KEY}").split() == ["600", "ollama"]
    # Inside the service's mount namespace: the OS is read-only, its home is not.
    pid = main_pid(c)
    denied = c.exec(["nsenter", "-t", pid, "-m", "touch", "/usr/lib/ollama-ops-probe"], check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    allowed = c.exec(
        ["nsenter", "-t", pid, "-m", "touch", "/usr/share/ollama/.ollama/probe"], check=False
    )
    assert allowed.returncode == 0, allowed
    hidden = c.exec(["nsenter", "-t", pid, "-m", "ls", "/home"], check=False)
    assert hidden.stdout.strip() == "", hidden  # ProtectHome=yes: an empty, inaccessible /home
    # This systemd version reads every line of the drop-in without a warning.
    assert verify_warnings(c, "50-ollama-ops") == []
    # Exposure as this version's own systemd-analyze scores it.
    assert exposure(c) <= CPU_ONLY_EXPOSURE_TARGET


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_apply_inside_hardens_verifies_and_is_idempotent(
    container_factory: BootFactory, suite: str
) -> None:
    c = container_factory(suite)
    installed_like_the_official_installer(c)
    install_ollama_ops(c)
    packaged = sha(c, "/etc/systemd/system/ollama.service")

    done = c.exec(["ollama-ops", "apply", "--timeout", "60"], check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "applied generation 1" in done.stdout
    check_running_hardened(c, expected_from_container_facts(c))
    assert sha(c, "/etc/systemd/system/ollama.service") == packaged  # never edits the packaged unit

    pid = main_pid(c)
    again = c.exec(["ollama-ops", "apply"], check=False, timeout=120)
    assert again.returncode == 0 and "nothing to change" in again.stdout, again
    assert main_pid(c) == pid  # no restart either

    audit = c.exec(["ollama-ops", "audit", "--json"], check=False, timeout=120)
    report = json.loads(audit.stdout)
    assert report["worst"] == "info", [f for f in report["findings"] if f["severity"] != "info"]
    assert audit.returncode == 0


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_config_that_cannot_start_is_rolled_back(
    container_factory: BootFactory, suite: str
) -> None:
    c = container_factory(suite)
    installed_like_the_official_installer(c)
    install_ollama_ops(c)
    assert c.exec(["ollama-ops", "apply"], check=False, timeout=120).returncode == 0
    files = [DROPIN, "/var/lib/ollama-ops/owned.json"]
    before = sha(c, *files)
    env_before = c.show(UNIT, "Environment")["Environment"]

    # A model store the service may not write: root-owned, 0755.
    c.sh("mkdir -p /srv/models && chmod 0755 /srv/models")
    c.write_file("/etc/ollama-ops/ollama-ops.toml", '[service]\nmodels_dir = "/srv/models"\n')
    failed = c.exec(["ollama-ops", "apply", "--timeout", "30"], check=False, timeout=120)
    assert failed.returncode == ExitStatus.APPLY_FAILED, failed
    assert "previous configuration was restored" in failed.stderr
    assert failed.stderr.count("\n") == 1
    assert sha(c, *files) == before  # byte for byte
    c.wait_active(UNIT)
    assert c.show(UNIT, "Environment")["Environment"] == env_before
    assert c.wait_http(API + "/").status == 200

    # And `rollback` takes the first generation back: only the packaged unit is left.
    c.exec(["rm", "/etc/ollama-ops/ollama-ops.toml"])
    back = c.exec(["ollama-ops", "rollback"], check=False, timeout=120)
    assert back.returncode == 0, back
    assert not c.exists(DROPIN)
    c.wait_active(UNIT)
    assert c.show(UNIT, "ProtectSystem")["ProtectSystem"] == "no"


def test_no_unit_installed_gets_a_full_unit_with_dynamic_user(
    container_factory: BootFactory,
) -> None:
    c = container_factory("bookworm")
    install_simulator_as_ollama(c)
    install_ollama_ops(c)
    done = c.exec(["ollama-ops", "apply", "--timeout", "60"], check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert c.show(UNIT, "DynamicUser", "UnitFileState") == {
        "DynamicUser": "yes",
        "UnitFileState": "enabled",
    }
    assert c.exists("/var/lib/ollama/.ollama/id_ed25519")
    assert c.wait_http(API + "/api/version").status == 200
    assert verify_warnings(c, "ollama") == []
    # Rolling back removes the unit it wrote, after stopping and disabling it.
    back = c.exec(["ollama-ops", "rollback"], check=False, timeout=120)
    assert back.returncode == 0, back
    assert not c.exists("/etc/systemd/system/ollama.service")
    assert not c.exists("/etc/systemd/system/multi-user.target.wants/ollama.service")
    assert c.show(UNIT, "ActiveState", "LoadState") == {
        "ActiveState": "inactive",
        "LoadState": "not-found",
    }


def test_systemd_247_from_the_host_with_root(
    container_factory: BootFactory, tmp_path: Path
) -> None:
    """Debian 11's Python is 3.9, so ollama-ops writes the files with --root from here."""
    c = container_factory("bullseye")
    installed_like_the_official_installer(c)
    host = dataclasses.replace(
        probe.probe_host(Runtime()),
        systemd_version=SUITES["bullseye"].systemd,
        gpus=(),
        device_nodes=(),
        numa_nodes=(),
        ollama=OllamaInstall(
            binary="/usr/local/bin/ollama",
            user="ollama",
            group="ollama",
            home="/usr/share/ollama",
            unit_path="/etc/systemd/system/ollama.service",
        ),
    )
    facts_file = tmp_path / "bullseye.json"
    facts_file.write_text(facts_mod.dumps(host))
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["apply", "--root", str(c.root), "--facts", str(facts_file)], Env(out, err))
    assert code == 0, err.getvalue()
    dropin = c.read_file(DROPIN)
    assert "RestartSteps" not in dropin and "PrivateIPC" not in dropin  # 254 and 248 keys left out
    c.systemctl("daemon-reload")
    c.systemctl("restart", UNIT)
    expected = activate.expected_properties(plan.build(host, config.DeploymentConfig()))
    check_running_hardened(c, expected)


# The target for hosts with NVIDIA GPUs.
NVIDIA_EXPOSURE_TARGET = 1.5


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_nvidia_plan_boots_and_verifies(container_factory: BootFactory, suite: str) -> None:
    """The GPU flavour (DevicePolicy=closed, DeviceAllow=, modules-load) on a real systemd.

    There is no GPU here: the device nodes are absent, which systemd tolerates,
    so this proves the drop-in is read cleanly and the service still starts.
    """
    c = container_factory(suite)
    installed_like_the_official_installer(c)
    install_ollama_ops(c)
    own = facts_mod.loads(c.exec(["ollama-ops", "facts", "--json"]).stdout, "container facts")
    gpu_host = dataclasses.replace(
        facts_mod.loads(
            (Path(__file__).parents[1] / "fixtures/hosts/nvidia-1x24g.json").read_text()
        ),
        systemd_version=own.systemd_version,
        memory_bytes=own.memory_bytes,
        cpus=own.cpus,
        numa_nodes=own.numa_nodes,
        ollama=own.ollama,
    )
    c.write_file("/root/gpu-facts.json", facts_mod.dumps(gpu_host))
    done = c.exec(
        ["ollama-ops", "apply", "--facts", "/root/gpu-facts.json"], check=False, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert c.read_file("/etc/modules-load.d/ollama-ops-nvidia.conf").split("\n")[1:3] == [
        "nvidia",
        "nvidia_uvm",
    ]
    assert c.show(UNIT, "DevicePolicy")["DevicePolicy"] == "closed"
    assert verify_warnings(c, "50-ollama-ops") == []
    assert exposure(c) <= NVIDIA_EXPOSURE_TARGET
    assert c.wait_http(API + "/").status == 200


def test_a_crash_is_restarted_by_the_planned_policy(container_factory: BootFactory) -> None:
    """Restart=on-failure with RestartSec=5 brings a crashed Ollama back, under the hardening."""
    c = container_factory("bookworm")
    installed_like_the_official_installer(c)
    install_ollama_ops(c)
    # The simulator's control endpoint lets the test make `ollama serve` crash on demand.
    c.write_file("/etc/ollama-ops/ollama-ops.toml", '[environment]\nOLLAMA_SIM_CONTROL = "1"\n')
    done = c.exec(["ollama-ops", "apply"], check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    before = c.show(UNIT, "MainPID", "NRestarts")
    assert before["NRestarts"] == "0"
    crash = c.http("POST", API + "/_sim/faults", body='{"set": ["crash:1"]}')  # exit 2 in 1 s
    assert crash.status == 200, crash

    def restarted() -> bool:
        now = c.show(UNIT, "MainPID", "NRestarts", "ActiveState")
        return now["NRestarts"] == "1" and now["ActiveState"] == "active"

    c.wait_for(restarted, "ollama.service restarted once", timeout=30)
    assert c.show(UNIT, "MainPID")["MainPID"] != before["MainPID"]
    assert c.wait_http(API + "/").status == 200
    assert "status=2" in c.journal(UNIT)


def test_a_system_user_without_a_home_gets_a_state_directory(
    container_factory: BootFactory,
) -> None:
    """`useradd -r -d /` (systemd-sysusers' habit): systemd sets no $HOME for "/"."""
    c = container_factory("bookworm")
    c.exec(["useradd", "-r", "-U", "-M", "-d", "/", "ollama"])
    install_simulator_as_ollama(c)
    write_installer_unit(c)
    install_ollama_ops(c)
    done = c.exec(["ollama-ops", "apply", "--timeout", "60"], check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert c.sh("stat -c '%a %U' /var/lib/ollama/.ollama/id_ed25519").split() == ["600", "ollama"]
    assert "ReadWritePaths=/\n" not in c.read_file(DROPIN)
    assert c.wait_http(API + "/").status == 200
