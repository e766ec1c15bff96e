"""Logs, the journal namespace, the GPU oneshot and `memory` on a real systemd (247, 252, 257).

One container per Debian release is booted once for this module and shared
by its tests. The service is the project's simulator installed as
/usr/local/bin/ollama; ollama-ops applies a config with a journal namespace.
No GPU exists here: the GPU oneshot is rendered from a real A100 capture and
runs a stand-in nvidia-smi that records its arguments.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from pathlib import Path

import pytest

from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.gpu import plan as gpu_plan
from ollama_ops.gpu import render as gpu_render
from ollama_ops.gpu.spec import ClockSpec
from ollama_ops.host import nvidia_smi, probe
from ollama_ops.model import facts as facts_mod
from ollama_ops.model.config import GpuConfig
from ollama_ops.model.facts import OllamaInstall
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
API = "http://127.0.0.1:11434"
CONFIG = '[logs]\nnamespace = "ollama"\nnamespace_max_use = "64M"\n'
FAKE_SMI = "/usr/local/bin/nvidia-smi"
GPU_XML = Path(__file__).parents[1] / "fixtures/gpu/smi-xml/a100-sxm4-mig.xml"
TEST_DROPIN = "/etc/systemd/system/ollama.service.d/99-test.conf"


@dataclasses.dataclass(frozen=True)
class Deployed:
    c: Container
    gpu_calls: list[str]  # the nvidia-smi arguments the GPU oneshot must run, in order
    applied: float  # container time just before ollama-ops applied the namespace


def _now(c: Container) -> float:
    return float(c.exec(["date", "+%s.%N"]).stdout)


def runs_inside(c: Container) -> bool:
    return SUITES[c.suite].runs_ollama_ops


def host_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), Env(out, err))
    return code, out.getvalue(), err.getvalue()


def ollama_ops(c: Container, *argv: str, tmp: Path) -> tuple[int, str, str]:
    """ollama-ops inside (Python 3.10+), or from the host with --root (Debian 11's 3.9)."""
    if runs_inside(c):
        done = c.exec(["ollama-ops", *argv], check=False, timeout=180)
        return done.returncode, done.stdout, done.stderr
    return host_cli(*argv, "--root", str(c.root))


def _facts_247(c: Container, tmp: Path) -> Path:
    host = dataclasses.replace(
        probe.probe_host(Runtime()),
        systemd_version=SUITES[c.suite].systemd,
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
    path = tmp / f"{c.suite}-facts.json"
    path.write_text(facts_mod.dumps(host))
    return path


def install_gpu_unit(c: Container) -> list[str]:
    """The GPU oneshot for a real A100 capture, nvidia-smi replaced by a recorder."""
    readings = nvidia_smi.parse_query_xml(GPU_XML.read_text())
    planned = gpu_plan.plan(readings, GpuConfig(lock_clocks=ClockSpec(mhz=1275)))
    files = gpu_render.render(planned, UNIT, FAKE_SMI)
    c.write_file(FAKE_SMI, '#!/bin/sh\necho "$*" >> /run/nvidia-smi.calls\n', mode=0o755)
    for path, text in files.items():
        c.write_file(path, text)
    # A template for instances, to see the drop-in order them too.
    c.write_file("/etc/systemd/system/ollama@.service", "[Service]\nExecStart=/bin/sleep 600\n")
    c.systemctl("daemon-reload")
    c.systemctl("enable", gpu_render.GPU_UNIT)
    return [" ".join(line.split()[1:]) for line in gpu_render.exec_lines(planned, FAKE_SMI)]


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs-real")


@pytest.fixture(scope="module", params=["bullseye", "bookworm", "trixie"])
def deployed(
    request: pytest.FixtureRequest, module_container_factory: BootFactory, tmp_module: Path
) -> Deployed:
    c = module_container_factory(request.param)
    create_ollama_user(c)
    install_simulator_as_ollama(c)
    install_ollama_ops(c)
    c.sh("mkdir -p /var/log/journal && journalctl --flush")  # persistent, readable with --root
    write_installer_unit(c, start=True)
    c.wait_active(UNIT)
    gpu_calls = install_gpu_unit(c)
    c.write_file("/etc/ollama-ops/ollama-ops.toml", CONFIG)
    # A whole second, so that `--since @applied` excludes everything logged before.
    applied = float(math.ceil(_now(c)))
    time.sleep(max(0.0, applied - _now(c)) + 0.05)
    if runs_inside(c):
        code, out, err = ollama_ops(c, "apply", "--timeout", "60", tmp=tmp_module)
    else:
        facts = _facts_247(c, tmp_module)
        code, out, err = host_cli("apply", "--root", str(c.root), "--facts", str(facts))
        c.systemctl("daemon-reload")
        c.systemctl("restart", "systemd-journald@ollama.service")
        c.systemctl("restart", UNIT)
    assert code == 0, out + err
    c.wait_active(UNIT)
    c.wait_http(API + "/")
    return Deployed(c, gpu_calls, applied)


# ---------------------------------------------------------------- verify and boot


def test_units_verify_and_boot(deployed: Deployed) -> None:
    c, gpu_calls = deployed.c, deployed.gpu_calls
    version = SUITES[c.suite].systemd
    verify = c.exec(
        ["systemd-analyze", "verify", UNIT, gpu_render.GPU_UNIT, "ollama@x.service"], check=False
    )
    ours = [
        line
        for line in (verify.stdout + verify.stderr).splitlines()
        if any(k in line for k in ("50-ollama-ops", "ollama-ops-gpu", "Log", "journald"))
    ]
    assert ours == [], ours
    shown = c.show(UNIT, "LogNamespace", "LogRateLimitIntervalUSec", "LogRateLimitBurst")
    assert shown == {
        "LogNamespace": "ollama",
        "LogRateLimitIntervalUSec": "30s",
        "LogRateLimitBurst": "5000",
    }
    dropin = c.read_file("/etc/systemd/system/ollama.service.d/50-ollama-ops.conf")
    assert ("LogFilterPatterns=" in dropin) is (version >= 253)
    assert "SystemMaxUse=64M" in c.read_file("/etc/systemd/journald@ollama.conf")
    assert c.systemctl("is-active", "systemd-journald@ollama.service").stdout.strip() == "active"
    # The GPU oneshot: ordered after the driver, before Ollama and every instance.
    gpu = c.show(gpu_render.GPU_UNIT, "Before", "After", "UnitFileState", "ConditionResult")
    assert UNIT in gpu["Before"].split() and "nvidia-persistenced.service" in gpu["After"]
    assert gpu["UnitFileState"] == "enabled"
    assert gpu_render.GPU_UNIT in c.show("ollama@x.service", "After")["After"].split()
    # No NVIDIA driver here: the condition skips it, Ollama runs regardless.
    c.systemctl("restart", gpu_render.GPU_UNIT)
    assert c.show(gpu_render.GPU_UNIT, "ConditionResult")["ConditionResult"] == "no"
    # With the condition lifted, systemd runs every nvidia-smi line, in order.
    c.write_file(
        f"/run/systemd/system/{gpu_render.GPU_UNIT}.d/test.conf", "[Unit]\nConditionPathExists=\n"
    )
    c.systemctl("daemon-reload")
    c.exec(["rm", "-f", "/run/nvidia-smi.calls"])  # `facts` asked the stand-in too
    ran = c.systemctl("restart", gpu_render.GPU_UNIT, check=False)
    assert ran.returncode == 0, c.journal(gpu_render.GPU_UNIT, lines=30)
    assert c.read_file("/run/nvidia-smi.calls").splitlines() == gpu_calls
    state = c.show(gpu_render.GPU_UNIT, "ActiveState", "SubState")
    assert state == {"ActiveState": "active", "SubState": "exited"}
    c.wait_active(UNIT)


def test_namespace_holds_the_service_lines_and_logs_finds_them(
    deployed: Deployed, tmp_module: Path
) -> None:
    c = deployed.c
    c.exec(["journalctl", "--sync"], check=False)
    since = ["--since", f"@{int(deployed.applied)}", "-o", "cat", "--no-pager"]
    ns = c.exec(["journalctl", "--namespace=ollama", "-u", UNIT, *since]).stdout
    main = c.exec(["journalctl", "-u", UNIT, *since]).stdout
    assert "Listening on 127.0.0.1:11434" in ns
    assert "Listening on" not in main  # the service's own lines never reach the main journal
    assert "Started" in main  # systemd's lines about the unit stay there
    code, out, err = ollama_ops(c, "logs", "--json", "--since", "1 hour ago", tmp=tmp_module)
    assert code == 0, err
    data = json.loads(out)
    assert data["namespace"] == "ollama"
    assert data["counts"]["start"] >= 1 and data["counts"].get("listening", 0) >= 1


def test_probe_filter_drops_fast_probes_where_systemd_has_it(
    deployed: Deployed,
) -> None:
    c = deployed.c
    if SUITES[c.suite].systemd < 253:
        dropin = c.read_file("/etc/systemd/system/ollama.service.d/50-ollama-ops.conf")
        assert "LogFilterPatterns" not in dropin  # version-gated: nothing to drop here
        return
    marker = f"/api/probe-check-{time.time_ns()}"
    for _ in range(3):
        assert c.http("HEAD", API + "/").status == 200
    assert c.http("GET", API + marker).status in (404, 405)
    c.exec(["journalctl", "--sync"], check=False)
    lines = c.exec(
        ["journalctl", "--namespace=ollama", "-u", UNIT, "-o", "cat", "--no-pager", "-n", "50"]
    ).stdout.splitlines()
    assert any(marker in line for line in lines)  # other requests are kept
    kept = [line for line in lines if '| HEAD     "/"' in line and "| 200 |" in line]
    debug = c.sh(
        "cat /proc/$(systemctl show -p MainPID --value ollama)/cgroup; "
        "python3 -c \"import os; p='/sys/fs/cgroup/unified/system.slice/ollama.service'; "
        "print(os.listxattr(p) if os.path.exists(p) else 'no dir')\"; "
        "systemctl show -p ActiveEnterTimestampMonotonic ollama systemd-journald@ollama",
        check=False,
    )
    assert kept == [], (kept, debug)


# ---------------------------------------------------------------- faults, classified


def _faults(c: Container, *, set_: list[str] | None = None, clear: list[str] | None = None) -> None:
    body = json.dumps({"set": set_ or [], "clear": clear or []})
    assert c.http("POST", API + "/_sim/faults", body=body).status == 200


def _logs(c: Container, since: float, *extra: str) -> dict[str, object]:
    c.exec(["journalctl", "--sync"], check=False)
    done = c.exec(
        ["ollama-ops", "logs", "--json", "--since", f"@{int(since) - 1}", *extra], timeout=120
    )
    data: dict[str, object] = json.loads(done.stdout)
    return data


def _generate(c: Container, model: str, timeout: float = 60.0) -> int:
    body = json.dumps({"model": model, "prompt": "hi", "stream": False})
    return c.http("POST", API + "/api/generate", body=body, timeout=timeout).status


# The fault walk runs once, on the newest systemd (trixie, 257), in the shared container.
TRIXIE = pytest.mark.parametrize("deployed", ["trixie"], indirect=True)


@pytest.fixture(scope="module")
def faulty(deployed: Deployed) -> Container:
    c = deployed.c
    c.write_file(TEST_DROPIN, "[Service]\nEnvironment=OLLAMA_SIM_CONTROL=1\nRestartSec=1\n")
    c.systemctl("daemon-reload")
    c.systemctl("restart", UNIT)
    c.wait_active(UNIT)
    c.wait_http(API + "/")
    return c


@TRIXIE
def test_slow_load_and_gpu_lost(faulty: Container) -> None:
    c = faulty
    t0 = _now(c)
    _faults(c, set_=["slow-load:3"])
    assert _generate(c, "llama3.2:1b") == 200
    _faults(c, clear=["slow-load"])
    data = _logs(c, t0, "--slow-load", "2")
    loads = data["loads"]
    assert isinstance(loads, list) and loads and loads[-1]["slow"] is True
    assert 2.5 <= loads[-1]["seconds"] <= 10
    # GPU lost with the model loaded: its runner dies of a CUDA error, the next load goes
    # to the CPU (the simulator does what Ollama does after a suspend/resume).
    t1 = _now(c)
    _faults(c, set_=["gpu-lost"])
    assert _generate(c, "qwen2.5:0.5b") == 200  # served, slowly, from the CPU
    _faults(c, clear=["gpu-lost"])
    counts = _logs(c, t1)["counts"]
    assert isinstance(counts, dict)
    assert counts.get("gpu-error", 0) >= 1 and counts.get("cpu-fallback", 0) >= 1, counts


_CLIENT = f"""
import json, urllib.request as u
body = json.dumps({{"model": "llama3.2:1b", "prompt": "hi", "stream": False}})
req = u.Request("{API}/api/generate", data=body.encode(), method="POST")
try:
    u.urlopen(req, timeout=3).read()
    print("answered")
except Exception as exc:
    print("client gave up:", type(exc).__name__)
"""


@TRIXIE
def test_hang_shows_as_abandoned_generations(faulty: Container) -> None:
    """The whole process stops answering; a client's generation times out and leaves.
    When the server runs again, the access log shows it: 499, abandoned."""
    c = faulty
    t0 = _now(c)
    c.write_file("/root/client.py", _CLIENT)
    c.exec(
        ["sh", "-c", "systemctl kill -s SIGUSR1 ollama.service; sleep 0.5;"  # SIGUSR1: hang
         " (python3 /root/client.py > /root/client.out 2>&1 &); sleep 5;"
         " systemctl kill -s SIGUSR2 ollama.service; sleep 2"],  # SIGUSR2: clear the faults
        timeout=60,
    )  # fmt: skip
    assert "client gave up" in c.read_file("/root/client.out")
    c.wait_http(API + "/")
    data = _logs(c, t0)
    problems = data["problems"]
    assert isinstance(problems, list)
    hangs = [p for p in problems if p["kind"] == "hang"]
    assert hangs and "abandoned by its client" in hangs[0]["text"], data


@TRIXIE
def test_crash_restart_and_read_only_write(faulty: Container) -> None:
    c = faulty
    t0 = _now(c)
    before = int(c.show(UNIT, "NRestarts")["NRestarts"])
    _faults(c, set_=["crash"])
    c.wait_for(lambda: int(c.show(UNIT, "NRestarts")["NRestarts"]) > before, "restart", 30)
    c.wait_active(UNIT)
    data = _logs(c, t0)
    counts = data["counts"]
    assert isinstance(counts, dict) and counts.get("crash", 0) >= 1
    restarts = data["restarts"]
    assert isinstance(restarts, list) and restarts
    assert "exit-code" in restarts[0]["reason"] or "crash" in restarts[0]["reason"]
    # An operator's override sends the model store to a path the sandbox keeps read-only.
    t1 = _now(c)
    c.sh("mkdir -p /srv/ro-models && chown ollama:ollama /srv/ro-models")
    c.write_file(
        TEST_DROPIN,
        "[Service]\nEnvironment=OLLAMA_SIM_CONTROL=1 OLLAMA_MODELS=/srv/ro-models\nRestartSec=1\n",
    )
    c.systemctl("daemon-reload")
    c.systemctl("restart", UNIT, check=False)
    c.wait_for(lambda: int(c.show(UNIT, "NRestarts")["NRestarts"]) >= 1, "a failed start", 30)
    fixes = _logs(c, t1)["fixes"]
    assert isinstance(fixes, list) and fixes[0]["directive"] == "ReadWritePaths=/srv/ro-models"
    # The line `logs` suggests is the fix.
    c.write_file(
        TEST_DROPIN,
        "[Service]\nEnvironment=OLLAMA_SIM_CONTROL=1 OLLAMA_MODELS=/srv/ro-models\nRestartSec=1\n"
        "ReadWritePaths=/srv/ro-models\n",
    )
    c.systemctl("daemon-reload")
    c.systemctl("reset-failed", UNIT, check=False)
    c.systemctl("restart", UNIT)
    c.wait_active(UNIT)
    assert c.wait_http(API + "/").status == 200


@TRIXIE
def test_memory_growth_and_the_memory_command(faulty: Container) -> None:
    """With a memory cgroup, growth ends in an OOM kill that `logs` and `memory` both see.

    Where the kernel gives the unit no memory cgroup (cgroup v1 hosts: nspawn
    keeps the memory hierarchy read-only), MemoryMax= cannot act; then
    `memory` must say so in one line, and the growth has nothing to show.
    """
    c = faulty
    accounted = c.show(UNIT, "MemoryCurrent")["MemoryCurrent"] not in ("", "[not set]")
    if not accounted:
        done = c.exec(["ollama-ops", "memory"], check=False, timeout=120)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done
        assert "no memory accounting for ollama.service" in done.stderr
        return
    t0 = _now(c)
    c.write_file(
        TEST_DROPIN, "[Service]\nEnvironment=OLLAMA_SIM_CONTROL=1\nRestartSec=1\nMemoryMax=300M\n"
    )
    c.systemctl("daemon-reload")
    c.systemctl("restart", UNIT)
    c.wait_http(API + "/")
    reading = json.loads(c.exec(["ollama-ops", "memory", "--json"], timeout=120).stdout)
    assert reading["cgroup"]["current"] > 0
    _faults(c, set_=["memory-grow:200"])
    c.wait_for(lambda: "oom-kill" in c.show(UNIT, "Result")["Result"] or int(
        c.show(UNIT, "NRestarts")["NRestarts"]) > 0, "an OOM kill", 60)  # fmt: skip
    counts = _logs(c, t0)["counts"]
    assert isinstance(counts, dict) and counts.get("oom-kill", 0) >= 1
