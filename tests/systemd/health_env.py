"""A container set up for the health tests and benchmark: the simulator as ollama.service under
ollama-ops' plan with [watch] enabled, and the means to inject faults, load it and read the
supervisor's journal records.

Times are CLOCK_MONOTONIC seconds: the container shares the host's kernel, so the journal's
``__MONOTONIC_TIMESTAMP`` and ``time.monotonic()`` here are one clock.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .nspawn import (
    LIB_DIR,
    Container,
    ContainerError,
    create_ollama_user,
    install_ollama_ops,
    install_simulator_as_ollama,
    write_installer_unit,
)

UNIT = "ollama.service"
WATCH = "ollama-ops-watch.service"
API = "http://127.0.0.1:11434"
METRICS = "http://127.0.0.1:9839/metrics"
CONFIG = "/etc/ollama-ops/ollama-ops.toml"
# Stand-ins for the module tools: a container cannot reload a kernel module, it records the call.
STAND_IN = '#!/bin/sh\necho "stand-in: $(basename "$0") $*"\n'

BASE_CONFIG = """\
[environment]
OLLAMA_SIM_CONTROL = "1"
OLLAMA_MAX_QUEUE = "64"
OLLAMA_KEEP_ALIVE = "30m"

[watch]
enabled = true
"""


def install_prometheus_client(c: Container) -> None:
    """prometheus-client into the container's library tree when its cached tree predates it.

    The tree is built from the venv's installed metadata of ollama-ops; until that is
    reinstalled from a pyproject that lists prometheus-client, copy the (pure Python)
    package from this venv.
    """
    import prometheus_client

    dest = c.path(LIB_DIR) / "prometheus_client"
    if not dest.exists():
        source = Path(prometheus_client.__file__).parent
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))


def setup(c: Container, config: str = BASE_CONFIG) -> None:
    """The official installer's layout, then `ollama-ops apply` with ``config``."""
    create_ollama_user(c)
    install_ollama_ops(c)
    install_prometheus_client(c)
    install_simulator_as_ollama(c)
    write_installer_unit(c, start=True)
    c.wait_active(UNIT)
    for tool in ("rmmod", "modprobe"):
        c.write_file(f"/usr/local/sbin/{tool}", STAND_IN, mode=0o755)
    c.write_file(CONFIG, config)
    done = c.exec(["ollama-ops", "apply", "--timeout", "60"], check=False, timeout=180)
    if done.returncode != 0:
        raise ContainerError(f"apply failed: {done.stdout}{done.stderr}")
    c.wait_active(WATCH, timeout=60)


def main_pid(c: Container) -> int:
    return int(c.show(UNIT, "MainPID")["MainPID"])


def signal(c: Container, pid: int, name: str) -> None:
    """kill -NAME PID with the shell's builtin (minbase Debian has no kill binary)."""
    c.exec(["/bin/sh", "-c", f"kill -{name} {pid}"], check=False)


def hang_each_new_process(c: Container, hung: set[int]) -> None:
    """A fault that never clears: hang each new, active server process once (SIGUSR1)."""
    pid = main_pid(c)
    if pid and pid not in hung and c.show(UNIT, "ActiveState")["ActiveState"] == "active":
        signal(c, pid, "USR1")
        hung.add(pid)


def records(
    c: Container, event: str | None = None, since: float = 0.0, unit: str = WATCH
) -> list[dict[str, Any]]:
    """The supervisor's (or ``unit``'s) structured journal records, oldest first."""
    out = c.exec(
        ["journalctl", "-u", unit, "-o", "json", "--no-pager", "-q"], check=False, timeout=60
    ).stdout
    found = []
    for line in out.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "OLLAMA_OPS_EVENT" not in rec:
            continue
        rec["at"] = int(rec["__MONOTONIC_TIMESTAMP"]) / 1e6
        if rec["at"] >= since and (event is None or rec["OLLAMA_OPS_EVENT"] == event):
            found.append(rec)
    return found


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, every: float = 0.2) -> float:
    """Poll until true; the monotonic time it became true. ContainerError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ContainerError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)
    return time.monotonic()


def api_up(c: Container) -> bool:
    try:
        return c.http("GET", API + "/", timeout=2).status == 200
    except ContainerError:
        return False


def fault(c: Container, *specs: str, clear: tuple[str, ...] = ()) -> None:
    body = json.dumps({"set": list(specs), "clear": list(clear)})
    reply = c.http("POST", API + "/_sim/faults", body=body)
    if reply.status != 200:
        raise ContainerError(f"fault {specs}: HTTP {reply.status} {reply.body}")


def load_model(c: Container, model: str = "qwen2.5:0.5b") -> None:
    body = json.dumps({"model": model, "prompt": ""})
    reply = c.http("POST", API + "/api/generate", body=body, timeout=60)
    if reply.status != 200:
        raise ContainerError(f"loading {model}: HTTP {reply.status} {reply.body}")


def restart_watch(c: Container) -> float:
    """A fresh supervisor (fresh policy state); when it is ready."""
    c.systemctl("restart", WATCH)
    c.wait_active(WATCH, timeout=60)
    return time.monotonic()


def unit_pids(c: Container, unit: str) -> list[int]:
    """Every process of ``unit``: cgroup v2, or the hybrid layout's unified or systemd tree."""
    group = c.exec(["systemctl", "show", unit, "-p", "ControlGroup", "--value"]).stdout.strip()
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
        done = c.exec(["cat", f"{base}{group}/cgroup.procs"], check=False)
        if done.returncode == 0:
            return [int(p) for p in done.stdout.split()]
    raise ContainerError(f"no cgroup.procs for {unit} ({group})")


def _status(c: Container, pid: int) -> str:
    return c.exec(["cat", f"/proc/{pid}/status", f"/proc/{pid}/stat"], check=False).stdout


def rss_kib(c: Container, unit: str) -> int:
    """Resident memory of every process of ``unit`` (the supervisor and its journalctl)."""
    total = 0
    for pid in unit_pids(c, unit):
        for line in _status(c, pid).splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def cpu_seconds(c: Container, unit: str) -> float:
    """User + system CPU time of every process of ``unit`` so far (from /proc/PID/stat)."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in unit_pids(c, unit):
        stat = c.exec(["cat", f"/proc/{pid}/stat"], check=False).stdout
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 13:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


# ---------------------------------------------------------------- load from the host, in the container's network

LOADGEN = textwrap.dedent(
    """\
    import asyncio, json, sys, time
    import aiohttp
    url, model, streams, seconds, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    counts = {}
    done_at = []
    async def worker(session, end):
        while time.monotonic() < end:
            try:
                body = {"model": model, "prompt": "hello", "options": {"num_predict": tokens}}
                async with session.post(url + "/api/generate", json=body) as r:
                    async for _ in r.content:
                        if time.monotonic() > end + 120:
                            break
                    counts[r.status] = counts.get(r.status, 0) + 1
                    if r.status == 200:
                        done_at.append(time.monotonic())
                    else:
                        await asyncio.sleep(0.05)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                counts[0] = counts.get(0, 0) + 1
                await asyncio.sleep(0.05)
    async def main():
        end = time.monotonic() + seconds
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as s:
            tasks = [asyncio.create_task(worker(s, end)) for _ in range(streams)]
            await asyncio.wait(tasks, timeout=seconds + 5)
            for t in tasks:
                t.cancel()
    asyncio.run(main())
    print(json.dumps({"statuses": counts, "completed": len(done_at)}))
    """
)


@dataclass
class Load:
    """Streams against the container's API from a host process in its network namespace."""

    proc: subprocess.Popen[str]

    def result(self, timeout: float = 300.0) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise ContainerError(f"load generator failed: {err[-500:]}")
        data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return data

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_load(c: Container, model: str, streams: int, seconds: float, tokens: int = 16) -> Load:
    argv = ["nsenter", f"--target={c.pid}", "--net", "--", sys.executable, "-c", LOADGEN]
    argv += [API, model, str(streams), str(seconds), str(tokens)]
    return Load(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
