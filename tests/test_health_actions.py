"""The ladder's rungs as commands, through a recording runner (no systemd, no time passing)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

from ollama_ops.health.actions import Actor
from ollama_ops.health.http import Http
from ollama_ops.health.notify import Journal
from ollama_ops.health.policy import Action
from ollama_ops.health.supervisor import Supervisor, WatchOptions
from ollama_ops.host import proc
from ollama_ops.runtime import Runtime

from .health_helpers import LogEvidence, RecordingRunner
from .helpers import FakeSystemctl

UNIT = "ollama.service"


class DyingUnit(FakeSystemctl):
    """Active for the first look after a kill, then failed: the cgroup takes a moment to die."""

    def __init__(self) -> None:
        super().__init__({"ActiveState": "active"})
        self.looks = 0

    def show(self, unit: str, props: Sequence[str]) -> dict[str, str]:
        self.looks += 1
        return {"ActiveState": "active" if self.looks < 2 else "failed"}


def actor(runner: RecordingRunner, systemctl: FakeSystemctl | None = None) -> Actor:
    fake = systemctl or FakeSystemctl({"ActiveState": "inactive"})
    rt = Runtime(
        root=Path("/nonexistent"),
        run=runner,
        make_systemctl=lambda: fake,
        live_override=True,
        sleep=lambda s: None,
    )
    return Actor(rt, UNIT, Http("http://127.0.0.1:9"))


def test_a_stuck_unit_is_killed_as_a_whole_then_started_once_dead() -> None:
    runner = RecordingRunner()
    unit = DyingUnit()
    result = actor(runner, unit).execute(Action.KILL_AND_START)
    assert runner.calls == [
        ("systemctl", "kill", "--signal=SIGKILL", UNIT),
        ("systemctl", "reset-failed", UNIT),
        ("systemctl", "start", "--no-block", UNIT),
    ]
    assert unit.looks >= 2 and result.ok
    assert f"{UNIT} is failed" in result.steps


def test_a_lost_gpu_is_stop_reload_start_even_when_rmmod_fails() -> None:
    runner = RecordingRunner(
        {"rmmod": proc.Completed(("rmmod",), 1, "", "rmmod: ERROR: Module nvidia_uvm is in use")}
    )
    result = actor(runner).execute(Action.RELOAD_GPU_DRIVER)
    assert runner.calls == [
        ("systemctl", "stop", UNIT),
        ("rmmod", "nvidia_uvm"),
        ("modprobe", "nvidia_uvm"),
        ("systemctl", "reset-failed", UNIT),
        ("systemctl", "start", "--no-block", UNIT),
    ]
    assert not result.ok and "Module nvidia_uvm is in use" in result.steps[1]


def test_restart_and_start_are_queued_not_waited_for() -> None:
    runner = RecordingRunner()
    actor(runner).execute(Action.RESTART_UNIT)
    actor(runner).execute(Action.START_UNIT)
    assert runner.calls == [
        ("systemctl", "reset-failed", UNIT),  # our budget, not systemd's start limit, counts
        ("systemctl", "restart", "--no-block", UNIT),
        ("systemctl", "reset-failed", UNIT),
        ("systemctl", "start", "--no-block", UNIT),
    ]


def test_unloading_nothing_is_not_a_success() -> None:
    result = actor(RecordingRunner()).execute(Action.UNLOAD_MODEL, ())
    assert not result.ok and result.steps == ("unload: no model loaded",)


def test_a_clock_jump_is_recorded_and_suspends_expiry_judgement() -> None:
    wall = [1_000_000.0]
    mono = [50.0]
    records = io.StringIO()
    rt = Runtime(
        root=Path("/nonexistent"),
        run=RecordingRunner(),
        make_systemctl=FakeSystemctl,
        live_override=True,
        clock=lambda: mono[0],
        wall_clock=lambda: wall[0],
    )
    sup = Supervisor(
        rt,
        WatchOptions(url="http://127.0.0.1:9", deep=False),
        evidence=LogEvidence(),
        journal=Journal(socket_path="/nonexistent", fallback=records),
    )
    assert not sup._clock_jumped(mono[0])
    mono[0] += 1
    wall[0] += 3600  # an hour forward in one second
    assert sup._clock_jumped(mono[0])
    mono[0] += 1
    wall[0] += 1
    assert sup._clock_jumped(mono[0])  # still held: expiry times from before mean nothing
    (record,) = [json.loads(line) for line in records.getvalue().splitlines()]
    assert record["OLLAMA_OPS_EVENT"] == "clock_jump" and "+3599s" in record["MESSAGE"]
