"""The exported Ansible role against real targets: booted Debian 12 and 13 containers.

ansible-core (the dev extra) runs the role exported by `ollama-ops export ansible`
against two containers of the systemd tier, set up as Ollama's installer leaves a
host (the simulator as /usr/local/bin/ollama). Ansible reaches them through
ansible_plugins/connection/oo_nsenter.py (nsenter into the container; see its
docstring for why the tests carry one). Each container presents its own RAM the
way lxcfs does for LXC containers: a /proc/meminfo bind-mounted inside it, 16 GiB
for one and 64 GiB for the other, so ollama-ops' own probe on each host sees
different memory and sizes the drop-in from it.

The containers are shared by the tests of this module, which run in order.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ollama_ops.apply.activate import expected_properties
from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.model import config as config_mod
from ollama_ops.model import facts as facts_mod
from ollama_ops.plan import compose as plan

from .conftest import BootFactory
from .nspawn import (
    OLLAMA_OPS_BIN,
    Container,
    create_ollama_user,
    install_simulator_as_ollama,
    roots_dir,
    write_installer_unit,
)

UNIT = "ollama.service"
DROPIN = "/etc/systemd/system/ollama.service.d/50-ollama-ops.conf"
CONFIG = "/etc/ollama-ops/ollama-ops.toml"
API = "http://127.0.0.1:11434/"
PLUGINS = Path(__file__).parent / "ansible_plugins" / "connection"
PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"
GIB = 1024**3
RECAP = re.compile(
    r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+"
    r"skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)"
)
FATAL = re.compile(r"^fatal: \[([^\]]+)\]: (FAILED|UNREACHABLE)! => (\{.*\})$")


@dataclasses.dataclass
class Fleet:
    hosts: dict[str, Container]  # inventory name -> container
    deploy: Path  # the export directory
    work: Path


@dataclasses.dataclass(frozen=True)
class Run:
    rc: int
    output: str
    recap: dict[str, dict[str, int]]
    fatal: dict[str, list[str]]  # host -> the msg of each fatal line

    def ran(self, host: str) -> bool:
        return f"[{host}]" in self.output


def present_memory(c: Container, gib: int) -> None:
    """Bind a /proc/meminfo with MemTotal = gib inside the container (what lxcfs does)."""
    real = c.read_file("/proc/meminfo")
    fake = re.sub(r"^MemTotal:\s+\d+ kB", f"MemTotal: {gib * GIB // 1024} kB", real, flags=re.M)
    c.write_file("/run/oo-meminfo", fake)
    c.exec(["mount", "--bind", "/run/oo-meminfo", "/proc/meminfo"])
    assert f"MemTotal: {gib * GIB // 1024} kB" in c.read_file("/proc/meminfo")


def like_the_installer(c: Container) -> None:
    create_ollama_user(c)
    install_simulator_as_ollama(c)
    c.exec(["rm", "-f", OLLAMA_OPS_BIN])  # the role installs its own
    write_installer_unit(c, start=True)
    c.wait_active(UNIT)
    c.wait_http(API)


def export_role(deploy: Path) -> None:
    """`ollama-ops export ansible` as a user runs it, wheels from the tier's cache first."""
    links = [f"--find-links={d}" for d in sorted((roots_dir() / "wheels").glob("py3.1[13]-*"))]
    argv = ["export", "ansible", str(deploy), "--python", "3.11", "--python", "3.13", *links]
    out, err = io.StringIO(), io.StringIO()
    assert cli.main([*argv, "--json"], Env(out, err)) == 0, err.getvalue()
    summary = json.loads(out.getvalue())
    assert summary["pythons"] == ["3.11", "3.13"] and summary["health_gate"] in ("api", "command")
    assert "roles/ollama_ops/files/wheelhouse-py3.13.tar" in summary["written"]


def sha(c: Container, *paths: str) -> str:
    return c.exec(["sha256sum", *paths], check=False).stdout


def host_vars(c: Container) -> dict[str, Any]:
    return {
        "ansible_connection": "oo_nsenter",
        "ansible_oo_nsenter_pid": c.pid,
        "ansible_become": False,  # already root inside; the containers have no sudo
        "ansible_python_interpreter": "/usr/bin/python3",
    }


def play(
    fleet: Fleet,
    hosts: Mapping[str, Mapping[str, Any]],
    group: Mapping[str, Any],
    *flags: str,
    playbook: str = "playbook.yml",
) -> Run:
    """ansible-playbook with an inventory of ``hosts`` (in this order) in ollama_servers."""
    inventory = {"ollama_servers": {"hosts": dict(hosts), "vars": dict(group)}}
    path = fleet.work / "inventory.json"
    path.write_text(json.dumps(inventory))
    env = {
        **os.environ,
        "ANSIBLE_CONNECTION_PLUGINS": str(PLUGINS),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PIPELINING": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }
    done = subprocess.run(
        [str(PLAYBOOK_BIN), "-i", str(path), str(fleet.deploy / playbook), *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    recap = {
        m.group(1): dict(
            zip(
                ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored"),
                map(int, m.groups()[1:]),
                strict=True,
            )
        )
        for m in map(RECAP.match, output.splitlines())
        if m
    }
    fatal: dict[str, list[str]] = {}
    for m in map(FATAL.match, output.splitlines()):
        if m:
            fatal.setdefault(m.group(1), []).append(json.loads(m.group(3))["msg"])
    print(output)  # shown by pytest when a test fails
    return Run(done.returncode, output, recap, fatal)


@pytest.fixture(scope="module")
def fleet(module_container_factory: BootFactory, tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    hosts = {"bookworm-16g": module_container_factory("bookworm")}
    hosts["trixie-64g"] = module_container_factory("trixie")
    for c, gib in zip(hosts.values(), (16, 64), strict=True):
        like_the_installer(c)
        present_memory(c, gib)
    work = tmp_path_factory.mktemp("ansible")
    export_role(work / "deploy")
    return Fleet(hosts, work / "deploy", work)


def inventory(fleet: Fleet, **overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: {**host_vars(c), **overrides.get(name.replace("-", "_"), {})}
        for name, c in fleet.hosts.items()
    }


def planned(c: Container, cfg: Mapping[str, Any]) -> tuple[int, dict[str, str]]:
    """The container's RAM as its own ollama-ops sees it, and `systemctl show` per the plan."""
    host = facts_mod.loads(c.exec(["ollama-ops", "facts", "--json"]).stdout, c.name)
    return host.memory_bytes, expected_properties(plan.build(host, config_mod.from_dict(cfg)))


GROUP = {"ollama_ops_limits": {"os_reserve": "2G"}, "ollama_ops_health_soak": 2}
BOTH = ("-e", "ollama_ops_serial=2")


def test_first_run_changes_both_second_changes_nothing_each_sized_by_its_own_facts(
    fleet: Fleet,
) -> None:
    # One batch of both hosts (-e ollama_ops_serial=2): the one-at-a-time stop is the next test.
    # Check mode on hosts that never had the role: changes reported, nothing installed.
    fresh = play(fleet, inventory(fleet), GROUP, "--check", *BOTH)
    assert fresh.rc == 0
    for name, c in fleet.hosts.items():
        assert fresh.recap[name]["changed"] > 0
        assert not c.exists("/opt/ollama-ops/releases") and not c.exists(DROPIN)
    first = play(fleet, inventory(fleet), GROUP, *BOTH)
    assert first.rc == 0
    memory_max = {}
    for (name, c), gib in zip(fleet.hosts.items(), (16, 64), strict=True):
        assert first.recap[name]["changed"] > 0 and first.recap[name]["failed"] == 0
        assert c.wait_http(API).status == 200
        assert 'os_reserve = "2G"' in c.read_file(CONFIG)
        ram, expected = planned(c, {"limits": {"os_reserve": "2G"}})
        assert ram == gib * GIB  # ollama-ops' probe on that host saw that host's RAM
        assert c.show(UNIT, *expected) == expected
        memory_max[name] = int(expected["MemoryMax"])
    # 93 % of (16 - 2) GiB and of (64 - 2) GiB, in whole MiB: each host's own RAM.
    assert memory_max == {
        "bookworm-16g": int(14 * 1024 * 0.93) * 2**20,
        "trixie-64g": int(62 * 1024 * 0.93) * 2**20,
    }

    pids = {name: c.show(UNIT, "MainPID")["MainPID"] for name, c in fleet.hosts.items()}
    second = play(fleet, inventory(fleet), GROUP, *BOTH)
    assert second.rc == 0
    for name, c in fleet.hosts.items():
        assert second.recap[name]["changed"] == 0 and second.recap[name]["ok"] > 0
        assert c.show(UNIT, "MainPID")["MainPID"] == pids[name]  # not even restarted

    before = {name: sha(c, DROPIN, CONFIG) for name, c in fleet.hosts.items()}
    tighter = {**GROUP, "ollama_ops_limits": {"os_reserve": "2G", "memory_max_percent": 90}}
    check = play(fleet, inventory(fleet), tighter, "--check", "--diff", *BOTH)
    assert check.rc == 0
    for name, c in fleet.hosts.items():
        assert check.recap[name]["changed"] > 0
        assert sha(c, DROPIN, CONFIG) == before[name]  # check mode changed nothing
    assert len(re.findall(r"^-MemoryMax=", check.output, re.M)) == 2
    assert len(re.findall(r"^\+MemoryMax=", check.output, re.M)) == 2
    assert len(re.findall(r"^\+memory_max_percent = 90$", check.output, re.M)) == 2


def test_a_failing_host_is_rolled_back_and_the_play_stops_before_the_next(
    fleet: Fleet,
) -> None:
    first, second = fleet.hosts["trixie-64g"], fleet.hosts["bookworm-16g"]
    tighter = {**GROUP, "ollama_ops_limits": {"os_reserve": "2G", "memory_max_percent": 90}}
    files = (DROPIN, CONFIG, "/var/lib/ollama-ops/owned.json")
    before = {c.name: sha(c, *files) for c in (first, second)}
    hosts = inventory(fleet)
    ordered = {"trixie-64g": hosts["trixie-64g"], "bookworm-16g": hosts["bookworm-16g"]}

    # 1. Its service cannot start: a model store it may not write. apply restores itself.
    first.sh("mkdir -p /srv/models && chmod 0755 /srv/models")
    ordered["trixie-64g"] = {
        **hosts["trixie-64g"],
        "ollama_ops_service": {"models_dir": "/srv/models"},
    }
    broken = play(fleet, ordered, tighter)
    assert broken.rc != 0
    messages = broken.fatal["trixie-64g"]
    assert "the previous configuration was restored" in messages[-1]
    assert all("\n" not in m for m in messages) and "Traceback" not in broken.output
    assert not broken.ran("bookworm-16g")  # the play stopped before the next host
    for c in (first, second):
        assert sha(c, *files) == before[c.name]
    first.wait_active(UNIT)

    # 2. It starts, answers, then crashes: the health gate catches it, the role rolls back.
    ordered["trixie-64g"] = {
        **hosts["trixie-64g"],
        "ollama_ops_environment": {"OLLAMA_SIM_FAULTS": "crash:8"},
        "ollama_ops_health_soak": 12,
    }
    unhealthy = play(fleet, ordered, tighter)
    assert unhealthy.rc != 0
    assert unhealthy.recap["trixie-64g"]["rescued"] == 1
    final = unhealthy.fatal["trixie-64g"][-1]
    # The gate is `ollama-ops health --deep` since health landed (API and unit state before).
    assert final.startswith("health gate: "), final
    # the one-line summary of `ollama-ops rollback --json`
    assert "; rolled back: rollback: the files under / are as they were before generation " in final
    assert "\n" not in final
    assert "\n" not in final and "Traceback" not in unhealthy.output
    assert not unhealthy.ran("bookworm-16g")
    for c in (first, second):
        assert sha(c, *files) == before[c.name]
    first.wait_active(UNIT)
    assert "OLLAMA_SIM_FAULTS" not in first.show(UNIT, "Environment")["Environment"]
    assert first.wait_http(API).status == 200


BAD_INPUT_PLAYBOOK = """\
# Every host on its own (no serial, no any_errors_fatal): each fails with its own line.
- name: Bad targets
  hosts: ollama_servers
  gather_facts: false
  roles:
    - role: ollama_ops
"""


class Unbooted(Container):
    """A container whose PID 1 is /bin/sleep: a Debian with Python but no running systemd."""

    PID1_NAME = "sleep"

    def _boot(self) -> None:
        argv = ["systemd-nspawn", f"--directory={self.root}", f"--machine={self.name}"]
        argv += ["--register=no", "--keep-unit", "--private-network", "--link-journal=no"]
        self._spawn([*argv, "/bin/sleep", "infinity"])


@pytest.fixture
def unbooted() -> Iterator[Container]:
    c = Unbooted("bookworm")
    c.start()
    try:
        yield c
    finally:
        c.stop()


def dead_pid() -> int:
    child = subprocess.Popen(["sleep", "60"])
    child.send_signal(signal.SIGKILL)
    child.wait()
    return child.pid


def test_targets_that_cannot_take_it_fail_with_one_line_each(
    fleet: Fleet, unbooted: Container, container_factory: BootFactory
) -> None:
    debian11 = container_factory("bullseye")  # systemd 247, Python 3.9
    (fleet.deploy / "bad-input.yml").write_text(BAD_INPUT_PLAYBOOK)
    nopython = fleet.hosts["trixie-64g"]
    nopython.exec(["mv", "/usr/bin/python3", "/usr/bin/python3.away"])
    try:
        hosts = {
            "refused-config": {
                **host_vars(fleet.hosts["bookworm-16g"]),
                "ollama_ops_limits": {"memory_max_percent": 120},
            },
            "no-python": host_vars(nopython),
            "old-python": host_vars(debian11),
            "no-systemd": host_vars(unbooted),
            "unreachable": {**host_vars(unbooted), "ansible_oo_nsenter_pid": dead_pid()},
        }
        before = sha(fleet.hosts["bookworm-16g"], DROPIN, CONFIG)
        bad = play(fleet, hosts, GROUP, playbook="bad-input.yml")
    finally:
        nopython.exec(["mv", "/usr/bin/python3.away", "/usr/bin/python3"])
    assert bad.rc != 0 and "Traceback" not in bad.output
    expected = {
        "refused-config": "ollama-ops: error: /etc/ollama-ops/ollama-ops.toml: "
        "limits.memory_max_percent = 120 must be a percentage between 0 and 100",
        "no-python": "error: no Python 3 at /usr/bin/python3 on this host; install python3 "
        "(3.10 or newer) or set ollama_ops_python",
        "old-python": "error: /usr/bin/python3 is Python 3.9; ollama-ops needs 3.10 or newer",
        "no-systemd": "error: this host does not run systemd (no /run/systemd/system), so "
        "ollama-ops cannot manage a service here",
        "unreachable": "no process",
    }
    for host, text in expected.items():
        assert bad.fatal[host] and all("\n" not in m for m in bad.fatal[host]), bad.fatal
        assert text in bad.fatal[host][-1], (host, bad.fatal[host])
    assert bad.recap["unreachable"]["unreachable"] == 1
    assert sha(fleet.hosts["bookworm-16g"], DROPIN, CONFIG) == before
