"""GPU readers against real captures: nvidia-smi -q -x, --query-gpu CSV, NVML values.

The expected numbers are read off the captures themselves (see
tests/fixtures/gpu/README.md for where each came from).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollama_ops.errors import CommandError, FactsError
from ollama_ops.gpu.model import GpuReading, readings_from_json, readings_to_json
from ollama_ops.host import nvidia_smi
from ollama_ops.host.gpu import NoNvidiaGpu, NvmlBackend, SmiBackend, find_backend
from tests.gpu_fakes import GPU_FIXTURES, FakeNvml, FakeSmi


def xml(name: str) -> tuple[GpuReading, ...]:
    return nvidia_smi.parse_query_xml((GPU_FIXTURES / "smi-xml" / f"{name}.xml").read_text())


def csv(name: str) -> tuple[GpuReading, ...]:
    return nvidia_smi.parse_query_csv((GPU_FIXTURES / "smi-csv" / f"{name}.csv").read_text())


# ---------------------------------------------------------------- nvidia-smi -q -x


def test_xml_old_power_block_a100() -> None:
    (gpu,) = xml("a100-sxm4-mig")
    assert gpu.name == "NVIDIA A100-SXM4-40GB"
    assert gpu.uuid == "GPU-27b94a00-ed54-5c24-b1fd-1054085de32a"
    assert gpu.pci_bus_id == "0000:00:04.0"
    assert gpu.driver == "510.47.03"
    assert gpu.persistence is False
    assert (gpu.power_min_w, gpu.power_default_w, gpu.power_max_w) == (100.0, 400.0, 400.0)
    assert gpu.power_limit_w == gpu.power_enforced_w == 400.0
    assert gpu.power_settable
    assert gpu.clock_max_mhz == 1410
    assert len(gpu.supported_clocks_mhz) == 81
    assert gpu.supported_clocks_mhz[0] == 1410  # highest first
    assert list(gpu.supported_clocks_mhz) == sorted(gpu.supported_clocks_mhz, reverse=True)


def test_xml_new_power_block_rtx4090_driver_535() -> None:
    (gpu,) = xml("rtx-4090-driver-535")
    assert gpu.name == "NVIDIA GeForce RTX 4090"
    assert gpu.persistence is True
    # <gpu_power_readings>: current/requested instead of enforced/power_limit
    assert (gpu.power_min_w, gpu.power_default_w, gpu.power_max_w) == (10.0, 450.0, 600.0)
    assert gpu.power_limit_w == gpu.power_enforced_w == 450.0
    assert gpu.clock_max_mhz == 3120
    assert 2520 in gpu.supported_clocks_mhz and 1801 not in gpu.supported_clocks_mhz


def test_xml_laptop_gpu_without_power_management() -> None:
    (gpu,) = xml("rtx-3060")
    assert gpu.name == "NVIDIA GeForce RTX 3060 Laptop GPU"
    assert gpu.power_min_w is gpu.power_max_w is gpu.power_default_w is None
    assert not gpu.power_settable
    assert gpu.supported_clocks_mhz  # clocks are still listed


def test_xml_windows_persistence_na_and_p100() -> None:
    (win,) = xml("rtx-2080-win")
    assert win.persistence is None
    assert (win.power_min_w, win.power_default_w, win.power_max_w) == (105.0, 275.0, 350.0)
    (p100,) = xml("tesla-p100")
    assert (p100.power_min_w, p100.power_max_w) == (125.0, 250.0)
    assert p100.supported_clocks_mhz[0] == 1328


def test_xml_that_is_not_xml_is_one_line() -> None:
    with pytest.raises(CommandError) as err:
        nvidia_smi.parse_query_xml("NVIDIA-SMI has failed because it couldn't communicate")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- --query-gpu CSV


@pytest.mark.parametrize(
    ("capture", "name", "persistence", "power"),
    [
        ("linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01", "NVIDIA H100 80GB HBM3", True,
         (200.0, 700.0, 700.0)),
        ("linux-x86_64__nvidia-h100-mig__590.48.01", "NVIDIA H100 80GB HBM3", True,
         (200.0, 700.0, 700.0)),
        ("linux-x86_64__nvidia-h200__590.48.01", "NVIDIA H200", True, (200.0, 700.0, 700.0)),
        ("linux-x86_64__nvidia-l40s__595.80", "NVIDIA L40S", False, (100.0, 350.0, 350.0)),
        ("linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05", "NVIDIA GeForce RTX 4080 SUPER",
         False, (150.0, 320.0, 400.0)),
        ("linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04", "NVIDIA GeForce RTX 2080 SUPER",
         False, (105.0, 250.0, 350.0)),
    ],
)  # fmt: skip
def test_csv_full_field_captures(
    capture: str, name: str, persistence: bool, power: tuple[float, float, float]
) -> None:
    (gpu,) = csv(capture)
    assert gpu.index == 0
    assert gpu.name == name
    assert gpu.persistence is persistence
    assert (gpu.power_min_w, gpu.power_default_w, gpu.power_max_w) == power
    assert gpu.power_limit_w == power[1]  # every capture runs at its default
    assert gpu.clock_max_mhz and gpu.clock_max_mhz > 1000
    assert gpu.uuid.startswith("GPU-") and gpu.pci_bus_id.count(":") == 2
    assert gpu.supported_clocks_mhz == ()  # the CSV form has no clock list
    assert gpu.selector == gpu.pci_bus_id  # masked UUIDs are not used as selectors


def test_csv_other_field_list_without_index_or_power() -> None:
    (gpu,) = csv("tesla-p100-netdata")
    assert (gpu.index, gpu.name) == (0, "Tesla P100-PCIE-16GB")
    assert gpu.uuid == "GPU-ef1b2c9b-38d8-2090-2bd1-f567a3eb42a6"
    assert gpu.power_min_w is None and not gpu.power_settable
    assert gpu.selector == gpu.uuid


def test_csv_nounits_and_ragged_rows() -> None:
    text = "index, name, power.limit [W], power.min_limit [W]\n0, T4, 70.00, 60.00\n"
    (gpu,) = nvidia_smi.parse_query_csv(text)
    assert (gpu.power_limit_w, gpu.power_min_w) == (70.0, 60.0)
    with pytest.raises(CommandError) as err:
        nvidia_smi.parse_query_csv("index, name\n0, Tesla, T4, extra\n")
    assert "\n" not in str(err.value)
    with pytest.raises(CommandError):
        nvidia_smi.parse_query_csv("0, Tesla T4, 70\n")  # noheader


@given(st.lists(st.text(max_size=30), max_size=6))
def test_csv_parser_never_crashes(cells: list[str]) -> None:
    text = "index, name, power.limit [W]\n" + ", ".join(cells)
    try:
        nvidia_smi.parse_query_csv(text)
    except CommandError as exc:
        assert "\n" not in str(exc)


# ---------------------------------------------------------------- NVML


def test_fake_nvml_has_pynvml_signatures() -> None:
    pynvml = pytest.importorskip("pynvml")
    for name, member in inspect.getmembers(FakeNvml, inspect.isfunction):
        if not name.startswith("nvml"):
            continue
        real = getattr(pynvml, name)
        fake_params = list(inspect.signature(member).parameters)[1:]  # drop self
        real_params = [
            p.name
            for p in inspect.signature(real).parameters.values()
            if p.default is inspect.Parameter.empty
        ]
        assert len(fake_params) == len(real_params), name
    for const in ("NVML_FEATURE_ENABLED", "NVML_CLOCK_GRAPHICS", "NVML_ERROR_NO_PERMISSION"):
        assert getattr(FakeNvml, const) == getattr(pynvml, const)


@pytest.mark.parametrize("name", ["a100-sxm4-mig", "rtx-3060", "rtx-4090-driver-535", "tesla-p100"])
def test_nvml_reads_the_same_gpu_as_nvidia_smi(name: str) -> None:
    (via_nvml,) = NvmlBackend(FakeNvml.from_fixture(name)).read()
    (via_smi,) = xml(name)
    for key in (
        "name", "uuid", "pci_bus_id", "persistence", "power_limit_w", "power_enforced_w",
        "power_default_w", "power_min_w", "power_max_w", "clock_max_mhz", "supported_clocks_mhz",
        "driver",
    ):  # fmt: skip
        assert getattr(via_nvml, key) == getattr(via_smi, key), key
    assert via_nvml.source == "nvml"


def test_nvml_several_gpus_and_setters() -> None:
    fake = FakeNvml.from_fixture("tesla-p100", "rtx-4090-driver-535")
    backend = NvmlBackend(fake)
    p100, rtx = backend.read()
    assert (p100.index, rtx.index) == (0, 1)
    backend.set_power_limit(rtx, 400)
    backend.set_persistence(p100, True)
    backend.lock_clocks(rtx, 2520)
    assert ("nvmlDeviceSetPowerManagementLimit", 1, 400000) in fake.calls
    assert fake.locks == {1: (2520, 2520)}
    p100, rtx = backend.read()
    assert rtx.power_limit_w == 400.0 and p100.persistence is True


def test_nvml_permission_is_one_line() -> None:
    fake = FakeNvml.from_fixture("tesla-p100")
    fake.deny = True
    backend = NvmlBackend(fake)
    (gpu,) = backend.read()
    with pytest.raises(Exception, match="run as root") as err:
        backend.set_power_limit(gpu, 200)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- choosing a backend


def test_backend_falls_back_to_nvidia_smi_and_says_when_none() -> None:
    smi = FakeSmi("tesla-p100")
    backend, found = find_backend(lambda: None, smi)
    assert isinstance(backend, SmiBackend) and found[0].name == "Tesla P100-PCIE-16GB"
    backend2, _ = find_backend(lambda: FakeNvml.from_fixture("tesla-p100"), smi)
    assert isinstance(backend2, NvmlBackend)
    with pytest.raises(
        NoNvidiaGpu, match="nvidia-ml-py not installed; nvidia-smi is not installed"
    ):
        find_backend(lambda: None, FakeSmi("tesla-p100", missing=True))


def test_smi_backend_setters_and_permission() -> None:
    smi = FakeSmi("rtx-4090-driver-535")
    backend = SmiBackend(smi)
    (gpu,) = backend.read()
    backend.set_power_limit(gpu, 400)
    assert smi.calls[-1] == ("nvidia-smi", f"--id={gpu.uuid}", "--power-limit=400")
    (after,) = backend.read_csv()
    assert after.power_limit_w == 400.0
    denied = SmiBackend(FakeSmi("rtx-4090-driver-535", exit_code=4))
    with pytest.raises(Exception, match="run as root") as err:
        denied.set_persistence(gpu, True)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- the JSON form (--facts)


def test_readings_json_round_trip_and_bad_files(tmp_path: Path) -> None:
    readings = xml("a100-sxm4-mig") + csv("linux-x86_64__nvidia-l40s__595.80")[:0]
    assert readings_from_json(readings_to_json(readings), "f") == readings
    for bad, needle in (
        ("{", "not valid JSON"),
        ('{"gpus": 1}', "expected"),
        ('{"gpus": [{"index": -1}]}', "index"),
        ('{"gpus": [{"power_max_w": "lots"}]}', "power_max_w"),
        ('{"gpus": [{"colour": "green"}]}', "not a GPU field"),
        ('{"gpus": [{"index": 0}, {"index": 0}]}', "share an index"),
    ):
        with pytest.raises(FactsError, match=needle) as err:
            readings_from_json(bad, "f.json")
        assert "\n" not in str(err.value)
