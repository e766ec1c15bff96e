"""Two Ollama instances under a real systemd: 252 and 257 inside, 247 from the host with --root.

The instances' program is the project's simulator installed as
/usr/local/bin/ollama. The facts are the container's own, with two GPUs
(UUIDs, device nodes) and a second NUMA node added: there is no GPU here,
so systemd accepts the device ACLs for absent nodes, and everything else
(ports, limits, NUMA policy, state directories, the shared read-only store,
crashes, removal) runs for real. The bookworm container is booted once and
shared by its tests, which run in file order.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest

from ollama_ops.apply import activate
from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.host import probe
from ollama_ops.model import config
from ollama_ops.model import facts as facts_mod
from ollama_ops.model.deployment import Deployment
from ollama_ops.model.facts import HostFacts, NumaNode, OllamaInstall, format_cpu_list
from ollama_ops.plan import compose
from ollama_ops.runtime import Runtime
from tests.instances_helpers import UUIDS, two_gpu_host

from .conftest import BootFactory
from .nspawn import (
    SUITES,
    Container,
    create_ollama_user,
    install_ollama_ops,
    install_simulator_as_ollama,
    write_installer_unit,
)

MAIN = "ollama.service"
A, B = "ollama@a.service", "ollama@b.service"
DROPIN = "/etc/systemd/system/{}.d/50-ollama-ops.conf"
TEMPLATE = "/etc/systemd/system/ollama@.service"
STORE = "/usr/share/ollama/.ollama/models"
HEADER = """\
# The simulator's control API lets the tests crash an instance.
[environment]
OLLAMA_SIM_CONTROL = "1"
"""
INSTANCE_A = """
[instances.a]
gpus = [0]
port = 11435
"""
INSTANCE_B = f"""
[instances.b]
gpus = ["{UUIDS[1]}"]
port = 11436
models_dir = "shared"
"""
CONFIG = HEADER + INSTANCE_A + INSTANCE_B


def gpu_facts(own: HostFacts) -> HostFacts:
    """The container as a two-GPU host: its CPUs, RAM and systemd; GPUs on NUMA node 0 of 2."""
    real = format_cpu_list(list(range(own.cpus)))
    fake = format_cpu_list(list(range(own.cpus, 2 * own.cpus)))
    return dataclasses.replace(
        two_gpu_host(),
        memory_bytes=own.memory_bytes,
        cpus=2 * own.cpus,
        numa_nodes=(NumaNode(0, real), NumaNode(1, fake)),
        systemd_version=own.systemd_version,
        ollama=own.ollama,
        hostname=own.hostname,
    )


def planned(host: HostFacts) -> Deployment:
    return compose.build(host, config.loads(CONFIG, "test config"))


def instance(d: Deployment, unit: str) -> Deployment:
    assert d.instances is not None
    return next(i for i in d.instances.instances if i.unit_name == unit)


def prepare(c: Container) -> HostFacts:
    """The official installer's setup, ollama-ops, the facts and the config inside ``c``."""
    create_ollama_user(c)
    install_simulator_as_ollama(c)
    write_installer_unit(c, start=True)
    c.wait_active(MAIN)
    c.wait_http("http://127.0.0.1:11434/")
    install_ollama_ops(c)
    own = facts_mod.loads(c.exec(["ollama-ops", "facts", "--json"]).stdout, "container facts")
    assert own.systemd_version == SUITES[c.suite].systemd
    host = gpu_facts(own)
    c.write_file("/root/facts.json", facts_mod.dumps(host))
    c.write_file("/etc/ollama-ops/ollama-ops.toml", CONFIG)
    return host


def apply_inside(c: Container, *extra: str) -> str:
    done = c.exec(["ollama-ops", *extra, "--facts", "/root/facts.json"], check=False, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def device_allow(c: Container, unit: str) -> list[str]:
    out = c.systemctl("show", unit, "-p", "DeviceAllow").stdout
    return [line.split("=", 1)[1] for line in out.splitlines() if line.startswith("DeviceAllow=")]


def exposure(c: Container, unit: str) -> float:
    text = c.exec(["systemd-analyze", "security", "--no-pager", unit], check=False).stdout
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", text)
    assert match, text[-500:]
    return float(match.group(1))


def verify_warnings(c: Container, unit: str) -> list[str]:
    done = c.exec(["systemd-analyze", "verify", unit], check=False)
    return [line for line in (done.stdout + done.stderr).splitlines() if "ollama" in line]


def sha(c: Container, *paths: str) -> str:
    return c.exec(["sha256sum", *paths]).stdout


def main_pid(c: Container, unit: str) -> str:
    return c.show(unit, "MainPID")["MainPID"]


def check_running(c: Container, d: Deployment) -> None:
    """Both instances up on their own ports with their own limits, ACLs, policy and store."""
    for unit, port, gpu, other in ((A, 11435, 0, 1), (B, 11436, 1, 0)):
        c.wait_active(unit, timeout=60)
        reply = c.wait_http(f"http://127.0.0.1:{port}/")
        assert reply.status == 200 and reply.body == "Ollama is running"
        expected = activate.expected_properties(instance(d, unit))
        assert {"MemoryMax", "MemoryHigh", "AllowedCPUs"} <= set(expected)
        shown = c.show(unit, *expected)
        shown["AllowedCPUs"] = shown["AllowedCPUs"].replace(" ", ",")
        assert shown == expected, unit
        allowed = device_allow(c, unit)
        assert f"/dev/nvidia{gpu} rw" in allowed and f"/dev/nvidia{other} rw" not in allowed
        assert "/dev/nvidiactl rw" in allowed
        assert not any("nvidia-frontend" in a for a in allowed)
        assert c.show(unit, "DevicePolicy", "NUMAPolicy", "NUMAMask") == {
            "DevicePolicy": "closed",
            "NUMAPolicy": "preferred",
            "NUMAMask": "0",
        }
        name = unit.split("@")[1].split(".")[0]
        assert c.sh(f"stat -c '%a %U' /var/lib/ollama-{name}/.ollama/id_ed25519").split() == [
            "600",
            "ollama",
        ]
    env_b = c.show(B, "Environment")["Environment"]
    assert f"CUDA_VISIBLE_DEVICES={UUIDS[1]}" in env_b and "OLLAMA_NOPRUNE=1" in env_b
    assert f"OLLAMA_MODELS={STORE}" in env_b
    # b reads the main unit's store and cannot write it; a has its own, writable.
    pid_b = main_pid(c, B)
    denied = c.exec(["nsenter", "-t", pid_b, "-m", "touch", f"{STORE}/probe"], check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    pid_a = main_pid(c, A)
    own = c.exec(
        ["nsenter", "-t", pid_a, "-m", "touch", "/var/lib/ollama-a/models/probe"], check=False
    )
    assert own.returncode == 0, own


def check_verify_and_exposure(c: Container) -> None:
    main = exposure(c, MAIN)
    for unit in (A, B):
        assert verify_warnings(c, unit) == [], unit
        mine = exposure(c, unit)
        print(f"systemd {SUITES[c.suite].systemd}: exposure {unit} {mine} vs {MAIN} {main}")
        assert abs(mine - main) <= 0.1, unit


@pytest.fixture(scope="module")
def bookworm(module_container_factory: BootFactory) -> tuple[Container, HostFacts]:
    c = module_container_factory("bookworm")
    return c, prepare(c)


def test_two_instances_start_with_their_own_port_limits_and_devices(
    bookworm: tuple[Container, HostFacts],
) -> None:
    c, host = bookworm
    out = apply_inside(c, "apply", "--timeout", "90")
    assert "applied generation 1" in out
    check_running(c, planned(host))
    check_verify_and_exposure(c)
    again = apply_inside(c, "apply")
    assert "nothing to change" in again
    audit = c.exec(
        ["ollama-ops", "audit", "--facts", "/root/facts.json", "--json"], check=False, timeout=120
    )
    assert audit.returncode == 0, audit.stdout[-2000:]


def test_a_crash_of_one_leaves_the_other_running(bookworm: tuple[Container, HostFacts]) -> None:
    c, _host = bookworm
    before = {u: main_pid(c, u) for u in (MAIN, A, B)}
    crash = c.http("POST", "http://127.0.0.1:11435/_sim/faults", body='{"set": ["crash:1"]}')
    assert crash.status == 200, crash

    def restarted() -> bool:
        now = c.show(A, "NRestarts", "ActiveState", "MainPID")
        return now["NRestarts"] == "1" and now["ActiveState"] == "active"

    c.wait_for(restarted, f"{A} restarted by its Restart= policy", timeout=40)
    assert main_pid(c, A) != before[A]
    assert main_pid(c, B) == before[B] and main_pid(c, MAIN) == before[MAIN]
    assert c.wait_http("http://127.0.0.1:11435/").status == 200


def test_removing_one_leaves_the_other_byte_for_byte(bookworm: tuple[Container, HostFacts]) -> None:
    c, _host = bookworm
    kept = [DROPIN.format(B), TEMPLATE, DROPIN.format(MAIN)]
    files_before = sha(c, *kept)
    pids = {u: main_pid(c, u) for u in (MAIN, B)}
    # The operator deletes [instances.a] from the config (`instance remove a` does the same).
    c.write_file("/etc/ollama-ops/ollama-ops.toml", HEADER + INSTANCE_B)
    apply_inside(c, "apply", "--timeout", "90")
    assert c.show(A, "ActiveState")["ActiveState"] == "inactive"
    assert not c.exists(DROPIN.format(A))
    assert sha(c, *kept) == files_before
    assert {u: main_pid(c, u) for u in (MAIN, B)} == pids
    assert c.wait_http("http://127.0.0.1:11436/").status == 200
    # rollback brings a back as the whole generation was: its files and its process.
    back = c.exec(["ollama-ops", "rollback"], check=False, timeout=180)
    assert back.returncode == 0, back.stdout + back.stderr
    assert c.exists(DROPIN.format(A))
    c.wait_active(A, timeout=60)
    assert main_pid(c, B) == pids[B]


def test_systemd_257_runs_both(container_factory: BootFactory) -> None:
    c = container_factory("trixie")
    host = prepare(c)
    apply_inside(c, "apply", "--timeout", "90")
    check_running(c, planned(host))
    check_verify_and_exposure(c)


def test_systemd_247_from_the_host_with_root(
    container_factory: BootFactory, tmp_path: Path
) -> None:
    """Debian 11's Python is 3.9: ollama-ops writes the files with --root from here."""
    c = container_factory("bullseye")
    create_ollama_user(c)
    install_simulator_as_ollama(c)
    write_installer_unit(c, start=True)
    c.wait_active(MAIN)
    own = dataclasses.replace(
        probe.probe_host(Runtime()),
        systemd_version=SUITES["bullseye"].systemd,
        gpus=(),
        device_nodes=(),
        ollama=OllamaInstall(
            binary="/usr/local/bin/ollama",
            user="ollama",
            group="ollama",
            home="/usr/share/ollama",
            unit_path="/etc/systemd/system/ollama.service",
        ),
    )
    host = gpu_facts(dataclasses.replace(own, cpus=len(_container_cpus(c))))
    facts_file = tmp_path / "bullseye.json"
    facts_file.write_text(facts_mod.dumps(host))
    config_file = tmp_path / "instances.toml"
    config_file.write_text(CONFIG)
    out, err = io.StringIO(), io.StringIO()
    argv = [
        "apply",
        "--root",
        str(c.root),
        "--facts",
        str(facts_file),
        "--config",
        str(config_file),
    ]
    assert cli.main(argv, Env(out, err)) == 0, err.getvalue()
    assert "RestartSteps" not in c.read_file(TEMPLATE)  # 254+ keys left out for 247
    c.systemctl("daemon-reload")
    c.systemctl("restart", MAIN)
    c.wait_http("http://127.0.0.1:11434/")
    c.systemctl("start", A, B)
    check_running(c, planned(host))
    check_verify_and_exposure(c)


def _container_cpus(c: Container) -> list[int]:
    text = c.read_file("/sys/devices/system/cpu/online").strip()
    return facts_mod.parse_cpu_list(text)
