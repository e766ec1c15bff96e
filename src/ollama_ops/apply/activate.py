"""After the files are written: reload, restart, and prove the service took them.

Activation reads ``systemctl show`` for the keys our drop-in still decides
and waits for the API, all through the injected runtime (systemctl, the
Ollama client, the clock), so tests run it without systemd or time passing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ollama_ops.apply.diff import Change
from ollama_ops.errors import CommandError, FactsError, OpsError
from ollama_ops.host.systemd import SystemManager
from ollama_ops.model.deployment import Deployment
from ollama_ops.model.facts import parse_cpu_list
from ollama_ops.runtime import Runtime
from ollama_ops.unitfile import directives, effective
from ollama_ops.unitfile.directives import Shown

WAIT_PROPS = ("ActiveState", "SubState", "Result", "NRestarts", "ExecMainStatus")


def expected_properties(deployment: Deployment) -> dict[str, str]:
    """The `systemctl show` values that prove systemd read the planned settings.

    The keys are the directive table's rows with a ``verify`` column; sizes are
    compared in bytes as systemctl prints them.
    """
    expected: dict[str, str] = {}
    for setting in deployment.active():
        row = directives.lookup(setting.key)
        if row is None or row.verify is None or setting.value is None:
            continue
        value = deployment.value(setting.key) or setting.value
        if row.verify is Shown.BYTES and value[-1:] in _SIZE_SUFFIX:
            value = str(int(value[:-1]) * _SIZE_SUFFIX[value[-1]])
        expected[setting.key] = value
    return expected


_SIZE_SUFFIX = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _wait_healthy(
    rt: Runtime, systemctl: SystemManager, deployment: Deployment, timeout: float
) -> str | None:
    """None when the unit is running and the API answers; otherwise why not."""
    unit = deployment.unit_name
    first = systemctl.show(unit, WAIT_PROPS)
    restarts = first.get("NRestarts", "0")
    deadline = rt.clock() + timeout
    while True:
        props = systemctl.show(unit, WAIT_PROPS)
        state, sub = props.get("ActiveState", ""), props.get("SubState", "")
        if state == "failed" or sub == "auto-restart" or props.get("NRestarts", "0") != restarts:
            return f"{unit} failed to stay up ({state}/{sub}, result {props.get('Result', '?')}, exit status {props.get('ExecMainStatus', '?')})"
        if state == "active" and rt.ollama.is_up(deployment.api_url, timeout=2.0):
            return None
        if rt.clock() >= deadline:
            return f"{unit} is {state}/{sub} but {deployment.api_url} did not answer within {timeout:g}s"
        rt.sleep(0.5)


def _same(key: str, shown: str | None, planned: str) -> bool:
    if shown is None:
        return False
    row = directives.lookup(key)
    if row is not None and row.verify is Shown.CPUSET:
        # systemctl show prints CPU sets as space-separated ranges ("0-31 64-95").
        try:
            return parse_cpu_list(shown.replace(" ", ",")) == parse_cpu_list(planned)
        except FactsError:
            return False
    return shown == planned


def _ours(root: Path, deployment: Deployment, keys: list[str]) -> list[str]:
    """The keys whose effective value is the one in our drop-in.

    A later drop-in (the operator's override.conf) wins over ours by design;
    its values are not a failed apply.
    """
    try:
        assembled = effective.load_effective(root, deployment.unit_name)
    except OpsError:
        return keys
    kept = []
    for key in keys:
        last = assembled.last("Service", key)
        if last is None or last.path == deployment.dropin_path:
            kept.append(key)
    return kept


def _check_properties(systemctl: SystemManager, deployment: Deployment, root: Path) -> str | None:
    planned = expected_properties(deployment)
    expected = {k: planned[k] for k in _ours(root, deployment, list(planned))}
    if not expected:
        return None
    actual = systemctl.show(deployment.unit_name, list(expected))
    wrong = [
        f"{k}={actual.get(k)!r} (planned {v!r})"
        for k, v in expected.items()
        if not _same(k, actual.get(k), v)
    ]
    return "systemd reports " + ", ".join(wrong) if wrong else None


def activate(
    rt: Runtime,
    systemctl: SystemManager,
    deployment: Deployment,
    *,
    enable: bool,
    timeout: float,
    changes: Sequence[Change] | None = None,
) -> str | None:
    """Reload, (enable,) restart, verify; None when the service runs the plan, else why not.

    With ``changes``, the main unit restarts only when its own files changed, and the
    instances and the front door follow theirs (apply/instances.py).
    """
    from ollama_ops.apply import instances

    systemctl.daemon_reload()
    problem = None
    if changes is None or instances.main_changed(deployment, changes):
        problem = _activate_main(rt, systemctl, deployment, enable=enable, timeout=timeout)
    return problem or instances.activate(rt, systemctl, deployment, changes or (), timeout)


def _activate_main(
    rt: Runtime, systemctl: SystemManager, deployment: Deployment, *, enable: bool, timeout: float
) -> str | None:
    if enable:
        systemctl.enable(deployment.unit_name)
    systemctl.reset_failed(deployment.unit_name)
    try:
        systemctl.restart(deployment.unit_name)
    except CommandError as exc:
        return str(exc)
    problem = _check_properties(systemctl, deployment, rt.root)
    if problem:
        return problem
    return _wait_healthy(rt, systemctl, deployment, timeout)
