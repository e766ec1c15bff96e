"""The GPU plan, the unit it renders and the read-back check: pure, over real readings."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollama_ops.errors import ConfigError, PlanError
from ollama_ops.gpu import plan as gpu_plan
from ollama_ops.gpu import render as gpu_render
from ollama_ops.gpu import verify
from ollama_ops.gpu.model import GpuReading
from ollama_ops.gpu.spec import ClockSpec, PowerSpec
from ollama_ops.host import nvidia_smi, proc
from ollama_ops.model.config import GpuConfig, loads
from ollama_ops.unitfile import directives
from ollama_ops.unitfile import syntax as unit
from tests.gpu_fakes import GPU_FIXTURES


def reading(name: str) -> GpuReading:
    (gpu,) = nvidia_smi.parse_query_xml((GPU_FIXTURES / "smi-xml" / f"{name}.xml").read_text())
    return gpu


def csv_reading(name: str) -> GpuReading:
    (gpu,) = nvidia_smi.parse_query_csv((GPU_FIXTURES / "smi-csv" / f"{name}.csv").read_text())
    return gpu


A100, RTX4090, P100, LAPTOP = (
    reading(n) for n in ("a100-sxm4-mig", "rtx-4090-driver-535", "tesla-p100", "rtx-3060")
)
UNIT, SMI = "ollama.service", "/usr/bin/nvidia-smi"
H100 = csv_reading("linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01")
RTX4080S = csv_reading("linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05")


def two(*gpus: GpuReading) -> tuple[GpuReading, ...]:
    return tuple(dataclasses.replace(g, index=i) for i, g in enumerate(gpus))


# ---------------------------------------------------------------- defaults


def test_default_is_persistence_on_and_each_cards_default_power() -> None:
    planned = gpu_plan.plan(two(A100, RTX4090, H100), GpuConfig())
    a100, rtx, h100 = planned.targets
    assert [t.persistence for t in planned.targets] == [True, True, True]
    assert "off now" in a100.persistence_reason and "off now" not in rtx.persistence_reason
    # The guide's fixed -pl 300 is wrong for all three: each gets its own default.
    assert (a100.power_limit_w, rtx.power_limit_w, h100.power_limit_w) == (400.0, 450.0, 700.0)
    assert "range is 10 W-600 W" in rtx.power_reason
    assert all(t.lock_clock_mhz is None for t in planned.targets)


def test_a_throttled_card_goes_back_to_its_default() -> None:
    throttled = dataclasses.replace(RTX4080S, power_limit_w=250.0)
    (t,) = gpu_plan.plan((throttled,), GpuConfig()).targets
    assert t.power_limit_w == 320.0
    assert "it is 250 W now" in t.power_reason


def test_cards_without_settable_power_or_persistence_are_left_alone() -> None:
    win = reading("rtx-2080-win")
    laptop, windows = gpu_plan.plan(two(LAPTOP, win), GpuConfig()).targets
    assert laptop.power_limit_w is None and "no settable power limit" in laptop.power_reason
    assert windows.persistence is None and "does not report" in windows.persistence_reason
    assert gpu_render.render(gpu_plan.plan((win,), GpuConfig(persistence=False)), UNIT, SMI) != {}


# ---------------------------------------------------------------- asked values


def test_watts_and_percent_inside_the_range() -> None:
    cfg = GpuConfig(power_limit=PowerSpec(watts=300))
    assert gpu_plan.plan((H100,), cfg).targets[0].power_limit_w == 300.0
    cfg = GpuConfig(power_limit=PowerSpec(percent=80))
    (t,) = gpu_plan.plan((RTX4080S,), cfg).targets
    assert t.power_limit_w == 256.0  # 80% of the 320 W default
    assert "80% of the default 320 W" in t.power_reason


@pytest.mark.parametrize(
    ("gpu", "spec", "needle"),
    [
        (P100, PowerSpec(watts=300), "300 W (gpu.power_limit = 300 W) is outside the range of GPU 0"
         " (Tesla P100-PCIE-16GB), 125 W-250 W"),
        (H100, PowerSpec(watts=150), "outside the range"),
        (RTX4080S, PowerSpec(percent=130), "416 W"),
        (LAPTOP, PowerSpec(watts=80), "reports no settable power limit"),
    ],
)  # fmt: skip
def test_power_outside_the_cards_range_is_refused(
    gpu: GpuReading, spec: PowerSpec, needle: str
) -> None:
    with pytest.raises(PlanError) as err:
        gpu_plan.plan((gpu,), GpuConfig(power_limit=spec))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_clock_lock_only_to_a_listed_clock() -> None:
    (t,) = gpu_plan.plan((A100,), GpuConfig(lock_clocks=ClockSpec(mhz=1275))).targets
    assert t.lock_clock_mhz == 1275
    (t,) = gpu_plan.plan((A100,), GpuConfig(lock_clocks=ClockSpec(highest=True))).targets
    assert t.lock_clock_mhz == 1410
    with pytest.raises(PlanError) as err:  # the guide's -lgc 1800 on an A100
        gpu_plan.plan((A100,), GpuConfig(lock_clocks=ClockSpec(mhz=1800)))
    assert "does not list 1800 MHz" in str(err.value) and "nearest are 1410 MHz" in str(err.value)
    with pytest.raises(PlanError, match="nearest are 1395 MHz, 1410 MHz"):
        gpu_plan.plan((A100,), GpuConfig(lock_clocks=ClockSpec(mhz=1400)))
    with pytest.raises(PlanError, match="reported no supported clocks"):
        gpu_plan.plan((H100,), GpuConfig(lock_clocks=ClockSpec(mhz=1410)))


def test_gpu_index_that_does_not_exist() -> None:
    with pytest.raises(PlanError) as err:
        gpu_plan.plan(two(A100, P100), GpuConfig(gpus=(0, 2)))
    assert str(err.value).startswith(
        "GPU index 2 does not exist on this host (its NVIDIA GPUs: 0, 1)"
    )
    planned = gpu_plan.plan(two(A100, P100), GpuConfig(gpus=(1,)))
    assert [t.index for t in planned.targets] == [1]
    assert "not managed (gpu.gpus): GPU 0" in planned.notes


@given(st.floats(min_value=1, max_value=2000, allow_nan=False))
def test_any_planned_power_is_inside_the_range(watts: float) -> None:
    try:
        (t,) = gpu_plan.plan((RTX4090,), GpuConfig(power_limit=PowerSpec(watts=watts))).targets
    except PlanError as exc:
        assert "\n" not in str(exc)
        return
    assert t.power_limit_w is not None
    assert RTX4090.power_min_w is not None and RTX4090.power_max_w is not None
    assert RTX4090.power_min_w <= t.power_limit_w <= RTX4090.power_max_w


def test_config_table_parses_gpu_values() -> None:
    cfg = loads('[gpu]\npower_limit = "90%"\nlock_clocks = "max"\ngpus = [1, 0]\n').gpu
    assert cfg.power_limit == PowerSpec(percent=90.0)
    assert cfg.lock_clocks == ClockSpec(highest=True)
    assert cfg.gpus == (0, 1)
    assert loads(
        '[gpu]\npower_limit = 300\nlock_clocks = "1410MHz"\n'
    ).gpu.lock_clocks == ClockSpec(mhz=1410)
    for bad in ('power_limit = "lots"', 'power_limit = "500%"', "lock_clocks = 5", 'gpus = "x"'):
        with pytest.raises(ConfigError) as err:
            loads(f"[gpu]\n{bad}\n")
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------- the unit


def test_unit_orders_after_the_driver_before_ollama_and_instances() -> None:
    planned = gpu_plan.plan(two(A100, RTX4090), GpuConfig(lock_clocks=ClockSpec(highest=True)))
    files = gpu_render.render(planned, "ollama.service", "/usr/bin/nvidia-smi")
    parsed = unit.parse(files[gpu_render.UNIT_PATH])
    values: dict[tuple[str, str], list[str]] = {(a.section, a.key): [] for a in parsed.assignments}
    for a in parsed.assignments:
        values[(a.section, a.key)].append(a.value)
    assert values[("Unit", "After")] == ["systemd-modules-load.service nvidia-persistenced.service"]
    assert values[("Unit", "Before")] == ["ollama.service"]
    assert values[("Service", "Type")] == ["oneshot"]
    assert values[("Install", "WantedBy")] == ["multi-user.target"]
    a100_sel, rtx_sel = A100.selector, RTX4090.selector
    assert values[("Service", "ExecStart")] == [
        f"/usr/bin/nvidia-smi --id={a100_sel} --persistence-mode=1",
        f"/usr/bin/nvidia-smi --id={a100_sel} --power-limit=400",
        f"/usr/bin/nvidia-smi --id={a100_sel} --lock-gpu-clocks=1410,1410",
        f"/usr/bin/nvidia-smi --id={rtx_sel} --persistence-mode=1",
        f"/usr/bin/nvidia-smi --id={rtx_sel} --power-limit=450",
        f"/usr/bin/nvidia-smi --id={rtx_sel} --lock-gpu-clocks=3120,3120",
    ]
    dropin = unit.parse(files[gpu_render.INSTANCE_DROPIN])
    assert {(a.key, a.value) for a in dropin.assignments} == {
        ("Wants", "ollama-ops-gpu.service"),
        ("After", "ollama-ops-gpu.service"),
    }
    for a in [*parsed.assignments, *dropin.assignments]:  # every key is in the directive table
        assert directives.supported(a.key, 247, a.section), a.key


def test_nothing_to_set_writes_no_unit() -> None:
    planned = gpu_plan.plan((LAPTOP,), GpuConfig(persistence=False))
    assert gpu_render.render(planned, "ollama.service", "/usr/bin/nvidia-smi") == {}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    smi = root / "usr/bin/nvidia-smi"
    smi.parent.mkdir(parents=True)
    smi.write_text("#!/bin/sh\nexit 0\n")
    smi.chmod(0o755)
    planned = gpu_plan.plan((A100,), GpuConfig(lock_clocks=ClockSpec(mhz=1275)))
    for path, text in gpu_render.render(planned, "ollama.service", "/usr/bin/nvidia-smi").items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    done = proc.run(
        ["systemd-analyze", "verify", f"--root={root}", gpu_render.GPU_UNIT], check=False
    )
    output = (done.stdout + done.stderr).splitlines()
    # A bare --root tree has no sysinit.target; everything else about the unit must be clean.
    lines = [line for line in output if "ollama-ops-gpu" in line and "sysinit.target" not in line]
    assert lines == [], lines


# ---------------------------------------------------------------- read-back


def test_verify_flags_what_did_not_take() -> None:
    planned = gpu_plan.plan((P100,), GpuConfig(power_limit=PowerSpec(watts=200)))
    same = dataclasses.replace(P100, persistence=True, power_limit_w=200.0)
    assert verify.mismatches(verify.check(planned.targets, (same,))) == []
    stuck = dataclasses.replace(P100, persistence=True, power_limit_w=250.0)
    (bad,) = verify.mismatches(verify.check(planned.targets, (stuck,)))
    assert bad.line() == "GPU 0 power limit: planned 200 W, reads 250 W [MISMATCH]"
    locked = gpu_plan.plan((A100,), GpuConfig(lock_clocks=ClockSpec(mhz=1275)))
    (*_, clock) = verify.check(locked.targets, (A100,))
    assert clock.ok is None and "no read-back" in clock.read
