"""`ollama-ops gpu` in-process: status, plan, apply with read-back, rollback, bad input.

The host is faked at the runtime's seams: a systemctl that runs the oneshot's
ExecStart= lines through the fake nvidia-smi (as systemd would), the NVML
stand-in or the nvidia-smi stand-in serving real captures.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest

from ollama_ops.apply import journal, store
from ollama_ops.cli.common import Env
from ollama_ops.cli.main import main
from ollama_ops.errors import ExitStatus
from ollama_ops.gpu.render import GPU_UNIT, INSTANCE_DROPIN, UNIT_PATH
from ollama_ops.runtime import Runtime
from ollama_ops.unitfile import syntax as unit
from tests.gpu_fakes import FakeNvml, FakeSmi
from tests.helpers import FIXTURES, FakeSystemctl, fake_runtime


class UnitRunner(FakeSystemctl):
    """A systemctl whose `restart` of the GPU oneshot runs its ExecStart= lines."""

    def __init__(self, root: Path, smi: FakeSmi, *, fail: bool = False) -> None:
        super().__init__()
        self.root, self.smi, self.fail = root, smi, fail

    def restart(self, unit_name: str) -> None:
        super().restart(unit_name)
        if unit_name != GPU_UNIT:
            return
        if self.fail:
            from ollama_ops.errors import CommandError

            raise CommandError(f"systemctl restart {unit_name} exited 1: see journalctl")
        text = (self.root / UNIT_PATH.lstrip("/")).read_text()
        for a in unit.parse(text).assignments:
            if a.key == "ExecStart":
                self.smi(a.value.split(), check=False)


def cli(rt: Runtime, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Env(stdout=out, stderr=err, make_runtime=lambda root: rt))
    return code, out.getvalue(), err.getvalue()


def live(root: Path, smi: FakeSmi, nvml: Any = None, **kw: Any) -> tuple[Runtime, UnitRunner]:
    systemctl = UnitRunner(root, smi, **kw)
    rt = dataclasses.replace(
        fake_runtime(root, systemctl, live=True), run=smi, load_nvml=lambda: nvml
    )
    return rt, systemctl


# ---------------------------------------------------------------- no GPU


def test_no_nvidia_gpu_is_a_message_and_exit_0(root: Path) -> None:
    rt, _ = live(root, FakeSmi("tesla-p100", missing=True))
    for action in ("status", "plan", "apply"):
        code, out, err = cli(rt, "gpu", action)
        assert code == ExitStatus.OK, err
        assert out.startswith("no NVIDIA GPU found (nvidia-ml-py not installed; nvidia-smi is not")
    assert not (root / UNIT_PATH.lstrip("/")).exists()


# ---------------------------------------------------------------- status and plan


def test_status_text_and_json_round_trip_into_plan(root: Path, tmp_path: Path) -> None:
    rt, _ = live(root, FakeSmi("a100-sxm4-mig"), FakeNvml.from_fixture("a100-sxm4-mig"))
    code, out, _ = cli(rt, "gpu", "status")
    assert code == 0
    assert out.splitlines()[0] == "1 NVIDIA GPU (read through nvml)"
    assert "power limit  400 W (enforced 400 W, default 400 W, range 100 W-400 W)" in out
    code, out, _ = cli(rt, "gpu", "status", "--json")
    facts = tmp_path / "gpus.json"
    facts.write_text(out)
    offline = fake_runtime(root)
    code, out, err = cli(
        offline, "gpu", "plan", "--root", str(root), "--facts", str(facts), "--power-limit", "80%"
    )
    assert code == 0, err
    assert all(len(line) <= 100 for line in out.split("\n\n")[0].splitlines()), out
    assert "power limit       320 W" in out and f"new        {UNIT_PATH}" in out
    assert "+ExecStart=/usr/bin/nvidia-smi --id=GPU-27b94a00" in out
    code, out, _ = cli(offline, "gpu", "plan", "--root", str(root), "--facts", str(facts), "--json")
    data = json.loads(out)
    assert data["gpus"][0]["power_limit_w"]["value"] == 400.0  # no option: the default
    assert {c["path"] for c in data["changes"]} == {UNIT_PATH, INSTANCE_DROPIN}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--power-limit", "300W"],
            "300 W (gpu.power_limit = 300 W) is outside the range of GPU 0",
        ),
        (["--lock-clocks", "1800"], "does not list 1800 MHz"),
        (["--gpu", "3"], "GPU index 3 does not exist on this host"),
        (["--power-limit", "much"], "is not a power limit"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    root: Path, args: list[str], needle: str
) -> None:
    smi = FakeSmi("tesla-p100")
    rt, systemctl = live(root, smi)
    code, _out, err = cli(rt, "gpu", "apply", *args)
    assert code == ExitStatus.BAD_INPUT
    assert needle in err and err.count("\n") == 1
    assert not (root / UNIT_PATH.lstrip("/")).exists()
    assert systemctl.calls == []
    assert all(call[1:] in (("-q", "-x"),) for call in smi.calls)  # only read, never set


# ---------------------------------------------------------------- apply, read back, rollback


def test_apply_runs_the_unit_reads_back_and_rollback_restores(root: Path) -> None:
    smi = FakeSmi("rtx-4090-driver-535")
    rt, systemctl = live(root, smi)
    code, out, err = cli(rt, "gpu", "apply", "--power-limit", "400W")
    assert code == 0, err
    assert "GPU 0 power limit: planned 400 W, reads 400 W [ok]" in out
    assert "GPU 0 persistence mode: planned Enabled, reads Enabled [ok]" in out
    assert ("enable", GPU_UNIT) in systemctl.calls and ("restart", GPU_UNIT) in systemctl.calls
    assert journal.owned_files(root) >= {UNIT_PATH, INSTANCE_DROPIN}
    (state,) = smi.state.values()
    assert state["power"] == 400.0
    # the main apply keeps the GPU unit it did not plan itself
    host = str(FIXTURES / "hosts" / "nvidia-1x24g.json")
    code, _, err = cli(rt, "apply", "--no-restart", "--facts", host)
    assert code == 0, err
    assert (root / UNIT_PATH.lstrip("/")).exists()
    code, _, err = cli(rt, "gpu", "rollback")
    assert code == ExitStatus.BAD_INPUT and "is not a GPU apply" in err
    assert cli(rt, "rollback", "--no-restart")[0] == 0
    code, out, err = cli(rt, "gpu", "rollback")
    assert code == 0, err
    assert "GPU 0 power limit 450 W restored" in out
    assert state["power"] == 450.0
    assert not (root / UNIT_PATH.lstrip("/")).exists()
    assert ("disable", GPU_UNIT) in systemctl.calls


def test_a_value_that_does_not_take_is_rolled_back(root: Path) -> None:
    nvml = FakeNvml.from_fixture("tesla-p100")
    nvml.ignore_power = True  # the driver accepts and keeps the old limit

    class NvmlUnit(UnitRunner):
        def restart(self, unit_name: str) -> None:
            FakeSystemctl.restart(self, unit_name)
            nvml.nvmlDeviceSetPowerManagementLimit(0, 200_000)

    smi = FakeSmi("tesla-p100")
    systemctl = NvmlUnit(root, smi)
    rt = dataclasses.replace(
        fake_runtime(root, systemctl, live=True), run=smi, load_nvml=lambda: nvml
    )
    code, _, err = cli(rt, "gpu", "apply", "--power-limit", "200W")
    assert code == ExitStatus.APPLY_FAILED
    assert "GPU 0 power limit: planned 200 W, reads 250 W [MISMATCH]" in err
    assert "previous GPU values and files were restored" in err and err.count("\n") == 1
    assert not (root / UNIT_PATH.lstrip("/")).exists()
    assert ("disable", GPU_UNIT) in systemctl.calls
    with store.peek(root) as state:
        assert state is None or state.generations() == []


def test_no_permission_is_one_line_and_restores(root: Path) -> None:
    smi = FakeSmi("tesla-p100", exit_code=4)
    rt, _systemctl = live(root, smi, fail=True)
    code, _, err = cli(rt, "gpu", "apply")
    assert code == ExitStatus.APPLY_FAILED
    assert err.count("\n") == 1 and "previous GPU values and files were restored" in err
    assert not (root / UNIT_PATH.lstrip("/")).exists()


def test_apply_with_facts_writes_files_under_root_only(root: Path, tmp_path: Path) -> None:
    rt, _ = live(root, FakeSmi("tesla-p100"))
    _, out, _ = cli(rt, "gpu", "status", "--json")
    facts = tmp_path / "gpus.json"
    facts.write_text(out)
    code, _, err = cli(rt, "gpu", "apply", "--facts", str(facts))
    assert code == ExitStatus.BAD_INPUT and "--facts describes another host" in err
    offline = fake_runtime(root)
    code, out, err = cli(offline, "gpu", "apply", "--root", str(root), "--facts", str(facts))
    assert code == 0, err
    assert f"wrote    {UNIT_PATH}" in out
    code, out, _ = cli(offline, "gpu", "rollback", "--root", str(root))
    assert code == 0 and "GPU values change only on the live host" in out
