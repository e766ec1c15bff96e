"""The ladder's rungs, carried out through the Runtime (systemctl, modprobe, the API).

Restarts and starts are queued with ``--no-block``: the unit's own start-up
(ExecStartPost= waits for the API) may take a minute and the supervisor must
keep probing and pinging its watchdog meanwhile. A stuck unit is killed as a
whole cgroup (``systemctl kill --signal=SIGKILL``: every process, runners
included) before it is started again. Every command and its outcome is
returned, for the journal record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ollama_ops.errors import CommandError, OpsError
from ollama_ops.health import api
from ollama_ops.health.http import Http
from ollama_ops.health.policy import Action
from ollama_ops.runtime import Runtime

GPU_MODULE = "nvidia_uvm"


@dataclass(frozen=True)
class ActionResult:
    action: Action
    ok: bool
    steps: tuple[str, ...]  # "systemctl restart --no-block ollama.service: ok", ...


class Actor:
    """Carries out one Action on one unit."""

    def __init__(
        self,
        rt: Runtime,
        unit: str,
        http: Http,
        *,
        unload_deadline: float = 10.0,
        stop_timeout: float = 120.0,
        gpu_module: str = GPU_MODULE,
    ) -> None:
        self.rt = rt
        self.unit = unit
        self.http = http
        self.unload_deadline = unload_deadline
        self.stop_timeout = stop_timeout
        self.gpu_module = gpu_module

    def _cmd(self, argv: Sequence[str], steps: list[str], timeout: float = 60.0) -> bool:
        shown = " ".join(argv)
        try:
            done = self.rt.run(argv, check=False, timeout=timeout)
        except CommandError as exc:
            steps.append(f"{shown}: {exc}")
            return False
        if done.returncode != 0:
            tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
            steps.append(f"{shown}: exit {done.returncode}: {tail[0][:160]}")
            return False
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()[-1:]
        steps.append(f"{shown}: ok" + (f" ({said[0][:160]})" if said else ""))
        return True

    def _start(self, steps: list[str]) -> bool:
        self._cmd(["systemctl", "reset-failed", self.unit], steps)  # clears the start limit too
        return self._cmd(["systemctl", "start", "--no-block", self.unit], steps)

    def _wait_inactive(self, steps: list[str], timeout: float = 15.0) -> None:
        deadline = self.rt.clock() + timeout
        state = ""
        while self.rt.clock() < deadline:
            try:
                state = self.rt.systemctl().show(self.unit, ["ActiveState"]).get("ActiveState", "")
            except OpsError as exc:
                steps.append(f"systemctl show {self.unit}: {exc}")
                return
            if state not in ("active", "deactivating"):
                steps.append(f"{self.unit} is {state}")
                return
            self.rt.sleep(0.2)
        steps.append(f"{self.unit} still {state} after {timeout:g}s")

    def execute(self, action: Action, models: Sequence[str] = ()) -> ActionResult:
        steps: list[str] = []
        if action is Action.UNLOAD_MODEL:
            ok = bool(models)
            for model in models:
                reply = api.unload(self.http, model, self.unload_deadline)
                done = reply.ok and reply.status == 200
                steps.append(
                    f"unload {model}: " + ("ok" if done else reply.detail or f"HTTP {reply.status}")
                )
                ok = ok and done
            if not models:
                steps.append("unload: no model loaded")
        elif action is Action.RESTART_UNIT:
            # Our restarts are budgeted already: systemd's start limit is for crash loops.
            self._cmd(["systemctl", "reset-failed", self.unit], steps)
            ok = self._cmd(["systemctl", "restart", "--no-block", self.unit], steps)
        elif action is Action.KILL_AND_START:
            killed = self._cmd(["systemctl", "kill", "--signal=SIGKILL", self.unit], steps)
            self._wait_inactive(steps)  # a start queued while it still dies would be a no-op
            ok = self._start(steps) and killed
        elif action is Action.RELOAD_GPU_DRIVER:
            stopped = self._cmd(["systemctl", "stop", self.unit], steps, timeout=self.stop_timeout)
            # rmmod fails when another process still holds the module; modprobe is still worth it.
            removed = self._cmd(["rmmod", self.gpu_module], steps)
            loaded = self._cmd(["modprobe", self.gpu_module], steps)
            ok = self._start(steps) and stopped and removed and loaded
        else:  # Action.START_UNIT
            ok = self._start(steps)
        return ActionResult(action, ok, tuple(steps))
