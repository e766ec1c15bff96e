"""The supervisor against the simulator's faults, in a real systemd 252 (one shared container).

`apply` with ``[watch] enabled = true`` installs ollama-ops-watch.service; each test restarts it
(a fresh policy) and injects a fault. Detections are awaited in bounded loops; the times are
printed here and measured side by side with the guide's timer in benchmarks/health_faults.py.
The policy's timings are shortened for the test (start-up grace and cooldown 5 s, budget 2).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ollama_ops.health.unitplan import CHECK_SERVICE, CHECK_TIMER

from .conftest import BootFactory
from .health_env import (
    API,
    BASE_CONFIG,
    METRICS,
    UNIT,
    WATCH,
    api_up,
    fault,
    hang_each_new_process,
    load_model,
    main_pid,
    records,
    restart_watch,
    rss_kib,
    setup,
    signal,
    start_load,
    wait_for,
)
from .health_env import (
    CONFIG as CONFIG_PATH,
)
from .nspawn import Container, ContainerError

CONFIG = (
    BASE_CONFIG
    + """\
startup_grace = 5
cooldown = 5
max_actions = 2
window = 600
healthy_reset = 10
"""
)


@pytest.fixture(scope="module")
def c(module_container_factory: BootFactory) -> Container:
    container = module_container_factory("bookworm")
    setup(container, CONFIG)
    return container


@pytest.fixture
def fresh(c: Container) -> Iterator[float]:
    """A healthy server and a fresh supervisor; yields when that was."""
    if not api_up(c):
        c.systemctl("restart", UNIT, timeout=120)
    fault(c, clear=("*",))
    yield restart_watch(c)
    fault(c, clear=("*",)) if api_up(c) else None


def acted(c: Container, since: float) -> list[dict[str, Any]]:
    return records(c, "act", since)


def test_the_supervisor_is_a_hardened_notify_unit_and_ollama_waits_for_its_api(
    c: Container, fresh: float
) -> None:
    props = c.show(WATCH, "Type", "WatchdogUSec", "ActiveState", "User", "ProtectSystem")
    assert props == {
        "Type": "notify",
        "WatchdogUSec": "30s",
        "ActiveState": "active",  # it said READY=1
        "User": "",
        "ProtectSystem": "strict",
    }
    post = c.show(UNIT, "ExecStartPost", "OOMPolicy")
    assert "argv[]=/usr/local/bin/ollama-ops health --wait-ready" in post["ExecStartPost"]
    assert "code=exited ; status=0" in post["ExecStartPost"]  # it waited, and the API answered
    assert post["OOMPolicy"] == "continue"
    assert "ollama_up 1.0" in c.http("GET", METRICS).body
    check = c.exec(["ollama-ops", "health", "--deep"], check=False)
    assert check.returncode == 0 and check.stdout.startswith("OLLAMA OK"), check.stdout
    # Cost: the supervisor and its journalctl together, while watching an idle server.
    assert rss_kib(c, WATCH) < 60 * 1024


def test_a_whole_process_hang_is_restarted(c: Container, fresh: float) -> None:
    old = main_pid(c)
    hung_at = time.monotonic()
    signal(c, old, "USR1")  # OLLAMA_SIM_SIGUSR1_FAULTS defaults to "hang"
    wait_for("a restart", lambda: bool(acted(c, hung_at)), timeout=60)
    (act,) = acted(c, hung_at)[:1]
    assert (
        act["OLLAMA_OPS_ACTION"] == "restart_unit" and act["OLLAMA_OPS_PROBLEM"] == "process_hung"
    )
    evidence = json.loads(str(act["OLLAMA_OPS_EVIDENCE"]))
    assert evidence["live"]["failure"] == "timeout"
    back = wait_for("the API again", lambda: main_pid(c) not in (0, old) and api_up(c), timeout=60)
    print(
        f"\nprocess hang: detected after {float(act['at']) - hung_at:.1f}s, API back "
        f"{back - float(act['at']):.1f}s later"
    )


def test_a_generation_hang_is_found_idle_and_under_load(c: Container, fresh: float) -> None:
    load_model(c)
    time.sleep(2)
    hung_at = time.monotonic()
    fault(c, "generate-hang")
    wait_for("an action on the idle hang", lambda: bool(acted(c, hung_at)), timeout=90)
    act = acted(c, hung_at)[0]
    assert act["OLLAMA_OPS_PROBLEM"] == "generation_hung"
    assert act["OLLAMA_OPS_ACTION"] == "unload_model"
    idle = float(act["at"]) - hung_at
    # Under load: streams in flight when generation stops.
    fault(c, clear=("*",))
    restart_watch(c)
    load_model(c)
    load = start_load(c, "qwen2.5:0.5b", streams=8, seconds=40, tokens=64)
    try:
        time.sleep(5)
        hung_at = time.monotonic()
        fault(c, "generate-hang")
        wait_for("an action on the hang under load", lambda: bool(acted(c, hung_at)), timeout=90)
    finally:
        fault(c, clear=("*",))
        load.stop()
    act = acted(c, hung_at)[0]
    assert act["OLLAMA_OPS_PROBLEM"] == "generation_hung"
    print(
        f"\ngenerate-hang: detected after {idle:.1f}s idle, {float(act['at']) - hung_at:.1f}s under load"
    )


def test_a_long_load_under_a_flood_of_503s_gets_no_action(c: Container, fresh: float) -> None:
    load_model(c)  # a loaded model for the generation probe; the flood asks for another
    fault(c, "slow-load:30")
    began = time.monotonic()
    load = start_load(c, "llama3.2:1b", streams=256, seconds=30, tokens=8)
    seen: set[str] = set()
    while load.proc.poll() is None and time.monotonic() - began < 200:
        for line in c.http("GET", METRICS).body.splitlines():
            if line.startswith("ollama_health_verdict{") and line.endswith(" 1.0"):
                seen.add(line.split('"')[1])
        time.sleep(2)
    result = load.result(timeout=60)
    assert result["statuses"].get("503", 0) > 100, result  # the queue was full
    time.sleep(3)
    assert acted(c, began) == []  # the target: no action while the queue is full
    # On a heavily loaded 2-core machine the journal follower can lag behind the flood,
    # so a single check may read "hung" for a moment; the policy needs consecutive
    # failures, which is why no action follows. "busy" must have been seen.
    assert "busy" in seen, seen


def test_gpu_lost_gets_its_own_rung(c: Container, fresh: float) -> None:
    load_model(c)
    lost_at = time.monotonic()
    fault(c, "gpu-lost")
    for _ in range(3):  # clients keep asking: their loads fail with a CUDA error
        with contextlib.suppress(ContainerError):  # the supervisor may be restarting it already
            body = json.dumps({"model": "llama3.2:1b", "prompt": "x"})
            c.http("POST", API + "/api/generate", body=body)
    wait_for("the GPU rung", lambda: bool(records(c, "action_done", lost_at)), timeout=90)
    act = acted(c, lost_at)[0]
    assert (
        act["OLLAMA_OPS_PROBLEM"] == "gpu_lost" and act["OLLAMA_OPS_ACTION"] == "reload_gpu_driver"
    )
    done = records(c, "action_done", lost_at)[0]
    steps = str(done["OLLAMA_OPS_STEPS"]).splitlines()
    assert [s.split(":")[0] for s in steps] == [
        f"systemctl stop {UNIT}",
        "rmmod nvidia_uvm",
        "modprobe nvidia_uvm",
        f"systemctl reset-failed {UNIT}",
        f"systemctl start --no-block {UNIT}",
    ]
    # The container's stand-ins for the module tools said they were called.
    assert (
        "(stand-in: rmmod nvidia_uvm)" in steps[1] and "(stand-in: modprobe nvidia_uvm)" in steps[2]
    )
    wait_for("the API again", lambda: api_up(c), timeout=60)


def test_a_fault_that_never_clears_gets_the_budget_then_a_loud_wait(
    c: Container, fresh: float
) -> None:
    began = time.monotonic()
    hung: set[int] = set()

    def keep_hanging() -> bool:
        hang_each_new_process(c, hung)
        return bool(records(c, "give_up", began))

    wait_for("the supervisor to give up", keep_hanging, timeout=150, every=0.5)
    gave_up = records(c, "give_up", began)[0]
    assert gave_up["PRIORITY"] == "2"  # crit
    # It waits: no more actions while the fault stays.
    wait_for(
        "a quiet while", lambda: keep_hanging() and time.monotonic() - float(gave_up["at"]) > 15, 60
    )
    assert len(acted(c, began)) == 2  # the budget
    assert "ollama_supervisor_gave_up 1.0" in c.http("GET", METRICS).body
    # An operator clears the fault; health that holds resets the budget.
    signal(c, main_pid(c), "USR2")
    wait_for("the reset", lambda: bool(records(c, "reset", began)), timeout=60)
    assert "ollama_supervisor_gave_up 0.0" in c.http("GET", METRICS).body


def loaded_models(c: Container) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = json.loads(c.http("GET", API + "/api/ps").body)["models"]
    return models


def test_a_stuck_model_is_killed_with_its_cgroup_and_started(c: Container, fresh: float) -> None:
    load_model(c)
    old = main_pid(c)
    stuck_at = time.monotonic()
    fault(c, "stuck-unload")  # every loaded model is told to unload, and never does
    time.sleep(2)
    assert [m["name"] for m in loaded_models(c)] == ["qwen2.5:0.5b"]  # expired, still listed
    # The generation probe on the expired model hangs behind its unload (as in Ollama); after
    # 5 s past the expiry (a normal unload can take a while) that is "stuck", not "hung".
    wait_for("an action on the stuck model", lambda: bool(acted(c, stuck_at)), timeout=150)
    act = acted(c, stuck_at)[0]
    assert act["OLLAMA_OPS_PROBLEM"] == "stuck_model", act
    assert act["OLLAMA_OPS_ACTION"] == "kill_and_start"
    detected = float(act["at"]) - stuck_at
    assert detected >= 5  # never before the grace
    assert act["OLLAMA_OPS_VERDICT"] == "stuck" and "still listed" in act["OLLAMA_OPS_SUMMARY"]
    # "act" is written when the action starts; its steps are in "action_done" once they ran.
    wait_for("the kill's steps", lambda: bool(records(c, "action_done", stuck_at)), timeout=60)
    done = records(c, "action_done", stuck_at)[0]
    steps = [s.split(":")[0] for s in str(done["OLLAMA_OPS_STEPS"]).splitlines()]
    assert steps[0] == f"systemctl kill --signal=SIGKILL {UNIT}", steps
    back = wait_for(
        "the API again, without the stuck model",
        lambda: main_pid(c) not in (0, old) and api_up(c) and loaded_models(c) == [],
        timeout=60,
    )
    print(
        f"\nstuck model: detected {detected:.1f}s after it stuck, back {back - float(act['at']):.1f}s later"
    )


def test_the_guides_timer_layout_runs_our_check(c: Container, fresh: float) -> None:
    """mode = "timer": no supervisor, a timer running one round of checks; it acts on a hang."""
    timer_config = CONFIG.replace(
        "enabled = true\n", 'enabled = true\nmode = "timer"\ntimer_period = 10\n'
    )
    assert timer_config != CONFIG
    try:
        c.write_file(CONFIG_PATH, timer_config)
        c.exec(["ollama-ops", "apply", "--timeout", "60"], timeout=180)
        # apply removed its unit; a running supervisor stays until stopped
        c.systemctl("stop", WATCH)
        assert not c.path(f"/etc/systemd/system/{WATCH}").exists()
        props = c.show(CHECK_TIMER, "ActiveState", "AccuracyUSec")
        assert props["ActiveState"] == "active", props  # ollama.service Wants= it
        assert props["AccuracyUSec"] == "1s"
        check = c.show(CHECK_SERVICE, "Type", "ProtectSystem", "SuccessExitStatus")
        assert check["Type"] == "oneshot" and check["ProtectSystem"] == "strict", check
        # A round on a healthy server records its verdict and acts on nothing.
        began = time.monotonic()
        wait_for(
            "a round of checks",
            lambda: bool(records(c, None, began, unit=CHECK_SERVICE)),
            timeout=60,
        )
        assert records(c, "act", began, unit=CHECK_SERVICE) == []
        # A whole-process hang: a later round (after the start-up grace) restarts it.
        old = main_pid(c)
        hung_at = time.monotonic()
        signal(c, old, "USR1")
        wait_for(
            "the timer's restart",
            lambda: bool(records(c, "act", hung_at, unit=CHECK_SERVICE)),
            timeout=120,
            every=1,
        )
        act = records(c, "act", hung_at, unit=CHECK_SERVICE)[0]
        assert act["OLLAMA_OPS_PROBLEM"] == "process_hung", act
        assert act["OLLAMA_OPS_ACTION"] == "restart_unit"
        wait_for("the API again", lambda: main_pid(c) not in (0, old) and api_up(c), timeout=60)
        print(
            f"\ntimer mode: the hang was acted on {float(act['at']) - hung_at:.1f}s after it began"
        )
    finally:
        c.write_file(CONFIG_PATH, CONFIG)
        c.exec(["ollama-ops", "apply", "--timeout", "60"], check=False, timeout=180)
        c.systemctl("start", WATCH)
