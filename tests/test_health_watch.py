"""`health` and `watch` in-process against the simulator on 127.0.0.1, systemd faked.

Detections are asserted to happen within bounded loops of checks, never
within a wall-clock time: the timings are the benchmark's business
(benchmarks/health_faults.py).
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.errors import HealthStatus
from ollama_ops.health.check import wait_ready
from ollama_ops.health.metrics import Board, registry_for
from ollama_ops.health.model import Problem, State
from ollama_ops.health.notify import Journal
from ollama_ops.health.policy import Action, Kind, PolicyConfig
from ollama_ops.health.supervisor import Supervisor, WatchOptions
from ollama_ops.host import proc
from ollama_ops.runtime import Runtime

from .health_helpers import LogEvidence, RecordingRunner
from .helpers import FakeSystemctl
from .sim_helpers import SimThread, free_port

UNIT = "ollama.service"
FAST = PolicyConfig(
    failures_before_action=2,
    startup_grace_s=0.0,
    cooldown_s=0.5,
    max_actions=3,
    window_s=600.0,
    healthy_reset_s=600.0,
)


class SimJournal(RecordingRunner):
    """A runner whose `journalctl` prints the simulator's log lines as journal JSON entries.

    A thread stamps each line with the monotonic time it appeared, as journald does.
    """

    def __init__(self, sim: SimThread) -> None:
        super().__init__()
        self.sim = sim
        self.entries: list[tuple[float, str]] = []
        self._seen = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.collect()

    def collect(self) -> None:
        with self._lock:
            lines = (self.sim.access_buf.getvalue() + self.sim.logs()).splitlines()
            now = time.monotonic()
            # The two buffers grow separately: stamp what is new, in any order.
            known = {line for _, line in self.entries}
            self.entries += [(now, line) for line in lines if line not in known]

    def close(self) -> None:
        self._stop.set()

    def __call__(self, argv: Sequence[str], **kw: Any) -> proc.Completed:
        if argv and argv[0] == "journalctl":
            self.calls.append(tuple(argv))
            self.collect()
            out = [
                json.dumps({"MESSAGE": line, "__MONOTONIC_TIMESTAMP": str(int(at * 1e6))})
                for at, line in self.entries
            ]
            return proc.Completed(tuple(argv), 0, "\n".join(out) + "\n", "")
        return super().__call__(argv, **kw)


def active_unit() -> FakeSystemctl:
    return FakeSystemctl(
        {
            "LoadState": "loaded",
            "ControlGroup": "",
            "MainPID": "4242",
            "ActiveEnterTimestampMonotonic": "0",
        }
    )


def runtime(runner: RecordingRunner, systemctl: FakeSystemctl | None = None) -> Runtime:
    fake = systemctl or active_unit()
    return Runtime(
        root=Path("/nonexistent-root"), run=runner, make_systemctl=lambda: fake, live_override=True
    )


def health(args: list[str], rt: Runtime) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["health", *args], Env(out, err, make_runtime=lambda root: rt))
    assert err.getvalue() == "", err.getvalue()
    return code, out.getvalue()


def load(sim: SimThread, model: str = "tiny:latest") -> None:
    reply = httpx.post(sim.url + "/api/generate", json={"model": model, "prompt": ""}, timeout=10)
    assert reply.status_code == 200, reply.text


@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread() as s:
        yield s


# ---------------------------------------------------------------- ollama-ops health


def test_health_ok_is_one_plugin_line_with_perfdata(sim: SimThread) -> None:
    load(sim)
    code, out = health(["--url", sim.url, "--deep"], runtime(SimJournal(sim)))
    first = out.splitlines()[0]
    assert code == HealthStatus.OK
    assert first.startswith("OLLAMA OK - ok: ") and " | " in first
    assert "'live'=" in first and "'generate'=" in first and "'models'=1" in first


def test_health_json_twin(sim: SimThread) -> None:
    code, out = health(["--url", sim.url, "--json"], runtime(SimJournal(sim)))
    data = json.loads(out)
    assert code == data["exit_code"] == 0 and data["verdict"] == "ok"
    assert data["snapshot"]["api"]["live"]["status"] == 200


def test_health_tells_a_hung_generation_from_a_busy_one(sim: SimThread) -> None:
    journal = SimJournal(sim)
    load(sim)
    time.sleep(1.6)  # the load's own completion must not count as progress during the probe
    sim.faults(set_=["generate-hang"])
    code, out = health(["--url", sim.url, "--deep", "--timeout", "0.5"], runtime(journal))
    journal.close()
    assert code == HealthStatus.CRITICAL and "hung:" in out.splitlines()[0], out


def test_a_hung_generation_without_log_evidence_is_unknown(sim: SimThread) -> None:
    load(sim)
    sim.faults(set_=["generate-hang"])
    runner = RecordingRunner(
        {
            "journalctl": proc.Completed(
                ("journalctl",), 1, "", "Failed to get journal: Permission denied"
            )
        }
    )
    code, out = health(["--url", sim.url, "--deep", "--timeout", "0.5"], runtime(runner))
    assert code == HealthStatus.UNKNOWN and "cannot tell busy from hung" in out, out


def test_a_hung_process_is_critical(sim: SimThread) -> None:
    sim.faults(set_=["hang"])
    time.sleep(0.2)  # the simulator blocks its loop 50 ms after answering
    code, out = health(["--url", sim.url, "--deep", "--timeout", "0.5"], runtime(SimJournal(sim)))
    sim.server.release_hang()
    assert code == HealthStatus.CRITICAL and "answers nothing" in out, out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--url", "ftp://h"], "not an http:// URL"),
        (["--url", "http://does-not-resolve.invalid:1"], "host name not resolved"),
        (["--timeout", "0"], "must be positive"),
    ],
)
def test_the_checkers_own_faults_are_unknown_one_line(args: list[str], needle: str) -> None:
    code, out = health(args, runtime(RecordingRunner()))
    assert code == HealthStatus.UNKNOWN and needle in out and out.count("\n") <= 4, out


def test_nothing_listening_is_critical_down() -> None:
    code, out = health(["--url", f"http://127.0.0.1:{free_port()}"], runtime(RecordingRunner()))
    assert code == HealthStatus.CRITICAL and "down:" in out


def test_no_systemd_bus_is_a_note_not_a_traceback(sim: SimThread) -> None:
    def no_bus() -> Any:
        from ollama_ops.errors import CommandError

        raise CommandError("systemctl show exited 1: Failed to connect to bus: No such file")

    rt = Runtime(
        root=Path("/nonexistent-root"),
        run=RecordingRunner(),
        make_systemctl=no_bus,
        live_override=True,
    )
    code, out = health(["--url", sim.url], rt)
    assert code == HealthStatus.OK and "note: unit state not checked" in out


def test_wait_ready_waits_without_time_passing() -> None:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    rt = Runtime(clock=lambda: clock[0], sleep=sleep)
    ready, message = wait_ready(rt, f"http://127.0.0.1:{free_port()}", 3.0)
    assert not ready and "did not answer within 3s" in message


def test_wait_ready_returns_when_the_api_answers(sim: SimThread) -> None:
    code, out = health(
        ["--url", sim.url, "--wait-ready", "--timeout", "5"], runtime(RecordingRunner())
    )
    assert code == 0 and out.startswith("OLLAMA OK")


# ---------------------------------------------------------------- the supervisor


def supervisor(
    sim: SimThread, runner: RecordingRunner, *, policy: PolicyConfig = FAST, observe: bool = False
) -> tuple[Supervisor, io.StringIO]:
    evidence = LogEvidence()
    evidence.sources = [sim.access_buf, sim.log_buf]
    records = io.StringIO()
    opts = WatchOptions(
        url=sim.url,
        unit=UNIT,
        interval_s=0.05,
        live_deadline_s=0.3,
        deep_interval_s=0.1,
        deep_deadline_s=0.4,
        unload_check_deadline_s=0.5,
        slow_every_s=0.2,
        observe_only=observe,
        policy=policy,
    )
    journal = Journal(socket_path="/nonexistent/socket", fallback=records)
    return Supervisor(runtime(runner), opts, evidence=evidence, journal=journal), records


def checks_until(sup: Supervisor, kind: Kind, limit: int) -> list[Any]:
    """Run checks (the deep probe inline) until a decision of ``kind``; fail after ``limit``."""
    seen = []
    for _ in range(limit):
        if sup.deep is not None:
            sup.deep.probe_once()
        _, verdict, decision = sup.check()
        seen.append((verdict.state, decision.kind, decision.action))
        if decision.kind is kind:
            return seen
        time.sleep(0.05)
    pytest.fail(f"no {kind} within {limit} checks: {seen[-5:]}")


def records(buf: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_a_whole_process_hang_is_restarted(sim: SimThread) -> None:
    runner = RecordingRunner()
    sup, log = supervisor(sim, runner)
    checks_until(sup, Kind.OK, 5)
    sim.faults(set_=["hang"])
    try:
        seen = checks_until(sup, Kind.ACT, 40)
    finally:
        sim.server.release_hang()
    assert seen[-1][2] is Action.RESTART_UNIT
    sup._action_thread.join(10)  # type: ignore[union-attr]
    assert ("systemctl", "restart", "--no-block", UNIT) in runner.calls
    acted = [r for r in records(log) if r["OLLAMA_OPS_EVENT"] == "act"]
    assert acted and acted[0]["OLLAMA_OPS_PROBLEM"] == "process_hung"
    evidence = json.loads(acted[0]["OLLAMA_OPS_EVIDENCE"])
    assert evidence["live"]["failure"] == "timeout"
    assert any(r["OLLAMA_OPS_EVENT"] == "action_done" for r in records(log))


def test_a_hung_generation_climbs_from_unloading(sim: SimThread) -> None:
    load(sim)
    runner = RecordingRunner()
    sup, log = supervisor(sim, runner)
    checks_until(sup, Kind.OK, 5)
    sim.faults(set_=["generate-hang"])
    try:
        seen = checks_until(sup, Kind.ACT, 60)
        assert seen[-1][2] is Action.UNLOAD_MODEL
        assert State.HUNG in [s for s, _, _ in seen]
        sup._action_thread.join(10)  # type: ignore[union-attr]
        done = [r for r in records(log) if r["OLLAMA_OPS_EVENT"].startswith("action_")]
        assert done and "unload tiny:latest" in done[0]["MESSAGE"]
        # Unloading did not help (the simulator's hang outlives it): asking the model again
        # finds that out, and the next rung restarts the unit.
        seen = checks_until(sup, Kind.ACT, 80)
        assert seen[-1][2] is Action.RESTART_UNIT
    finally:
        sim.faults(clear=["*"])


def test_a_full_queue_and_a_long_load_are_never_acted_on(tmp_path: Path) -> None:
    """503s from a queue of 2 while a 2 s load blocks the scheduler: busy, zero actions."""
    env = {"OLLAMA_MAX_QUEUE": "2", "OLLAMA_NUM_PARALLEL": "1"}
    with SimThread(env=env, faults=[("slow-load", 2.0)]) as sim:
        runner = RecordingRunner()
        sup, _ = supervisor(sim, runner)
        stop = threading.Event()
        statuses: list[int] = []

        def flood() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    try:
                        r = client.post(
                            sim.url + "/api/generate", json={"model": "other:1b", "prompt": "x"}
                        )
                        statuses.append(r.status_code)
                    except httpx.HTTPError:
                        statuses.append(0)

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        kinds = []
        try:
            for _ in range(40):
                sup.deep.probe_once() if sup.deep else None
                _, verdict, decision = sup.check()
                kinds.append((verdict.state, decision.kind))
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert 503 in statuses
    assert all(k is not Kind.ACT for _, k in kinds), kinds
    assert State.BUSY in [s for s, _ in kinds]
    assert not [c for c in runner.calls if c[:1] == ("systemctl",)]


def test_observe_only_decides_but_never_acts(sim: SimThread) -> None:
    runner = RecordingRunner()
    sup, log = supervisor(sim, runner, observe=True)
    sim.faults(set_=["hang"])
    try:
        checks_until(sup, Kind.ACT, 40)
    finally:
        sim.server.release_hang()
    assert runner.calls == []
    assert any(r["OLLAMA_OPS_EVENT"] == "observed" for r in records(log))


def test_a_stopped_unit_is_left_alone(sim: SimThread) -> None:
    stopped = FakeSystemctl({"ActiveState": "inactive", "SubState": "dead", "LoadState": "loaded"})
    runner = RecordingRunner()
    sup, _ = supervisor(sim, runner)
    sup.rt = runtime(runner, stopped)
    for _ in range(10):
        _, verdict, decision = sup.check()
        assert decision.kind is Kind.HOLD and verdict.problem is Problem.UNIT_STOPPED
    assert runner.calls == []


def test_metrics_follow_the_naming_rules(sim: SimThread) -> None:
    load(sim)
    runner = RecordingRunner()
    sup, _ = supervisor(sim, runner)
    board = Board()
    sup.board = board
    sup.deep.probe_once() if sup.deep else None
    sup.check()
    text = generate_latest(registry_for(board)).decode()
    for needle in (
        "ollama_up 1.0",
        'ollama_health_verdict{verdict="ok"} 1.0',
        'ollama_model_loaded{model="tiny:latest"} 1.0',
        'ollama_model_vram_bytes{model="tiny:latest"}',
        'ollama_probe_duration_seconds{probe="liveness"}',
        "ollama_health_checks_total 1.0",
        "ollama_supervisor_gave_up 0.0",
    ):
        assert needle in text, needle
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    for name in names:
        kind = next(
            line.split()[3] for line in text.splitlines() if line.startswith(f"# TYPE {name} ")
        )
        if kind == "counter":
            assert name.endswith("_total"), name
    assert not any(n.endswith(("_ms", "_percent", "_mb")) for n in names)


def test_watch_once_persists_the_policy_between_runs(sim: SimThread, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    sim.faults(set_=["hang"])
    try:
        runner = SimJournal(sim)
        out, err = io.StringIO(), io.StringIO()
        env = Env(out, err, make_runtime=lambda root: runtime(runner))
        args = [
            "watch",
            "--url",
            sim.url,
            "--once",
            "--state-file",
            str(state),
            "--interval",
            "0.1",
        ]
        args += ["--failures", "2", "--startup-grace", "0", "--no-deep"]
        code = cli.main(args, env)
    finally:
        sim.server.release_hang()
    assert code == HealthStatus.CRITICAL, out.getvalue() + err.getvalue()
    saved = json.loads(state.read_text())
    assert saved["policy"]["actions"], saved
    assert ("systemctl", "restart", "--no-block", UNIT) in runner.calls
