"""probe: fake host trees under tmp_path, NVML/nvidia-smi/systemctl mocked."""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ollama_ops.errors import CommandError, FactsError
from ollama_ops.host import nvml, probe, proc, systemd
from ollama_ops.model import facts
from ollama_ops.model.facts import Gpu, GpuVendor, HostFacts, NumaNode
from ollama_ops.runtime import Runtime

FIXTURES = Path(__file__).parent / "fixtures" / "hosts"
GIB = 1024**3
MIB = 1024**2


def write(root: Path, rel: str, text: str = "") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_host(root: Path, *, mem_kb: int = 8 * 1024 * 1024, online: str | None = "0-3") -> Path:
    write(root, "proc/meminfo", f"MemTotal:       {mem_kb} kB\nMemFree:         1234 kB\n")
    if online is not None:
        write(root, "sys/devices/system/cpu/online", online + "\n")
    return root


def fake_run(outputs: dict[str, str], calls: list[tuple[str, ...]] | None = None) -> Any:
    """A proc.run stand-in: argv[0] -> stdout; unknown programs are 'not found'."""

    def run(argv: Sequence[str], **_: Any) -> proc.Completed:
        if calls is not None:
            calls.append(tuple(argv))
        name = Path(argv[0]).name
        if name not in outputs:
            raise CommandError(f"{argv[0]}: command not found") from FileNotFoundError(argv[0])
        return proc.Completed(tuple(argv), 0, outputs[name], "")

    return run


def live_rt(root: Path, *, run: Any = None, nvml: Any = None) -> Runtime:
    """A tmp_path root that counts as "/", so the live-only paths run (with fakes)."""
    return Runtime(
        root=root,
        run=run or fake_run({}),
        nvml=nvml or (lambda: None),
        hostname=lambda: "live-host",
        live_override=True,
    )


# ---------------------------------------------------------------- whole hosts


def test_cpu_only_single_node(tmp_path: Path) -> None:
    root = make_host(tmp_path, mem_kb=16 * 1024 * 1024, online="0-7")
    write(root, "sys/devices/system/node/node0/cpulist", "0-7\n")
    write(root, "etc/hostname", "small\n")

    got = probe.probe_host(Runtime(root=root))

    assert got == HostFacts(
        memory_bytes=16 * GIB,
        cpus=8,
        numa_nodes=(NumaNode(0, "0-7"),),
        systemd_version=252,
        hostname="small",
    )
    assert got.gpus == ()
    assert got.device_nodes == ()
    assert got.ollama == facts.OllamaInstall()
    assert facts.loads(facts.dumps(got)) == got


def test_no_numa_in_sysfs_gives_one_node_with_all_cpus(tmp_path: Path) -> None:
    root = make_host(tmp_path, online="0-5,8")
    got = probe.probe_host(Runtime(root=root))
    assert got.cpus == 7
    assert got.numa_nodes == (NumaNode(0, "0-5,8"),)
    assert got.hostname == ""


def test_no_online_file_counts_numa_cpus(tmp_path: Path) -> None:
    root = make_host(tmp_path, online=None)
    write(root, "sys/devices/system/node/node0/cpulist", "0-1\n")
    write(root, "sys/devices/system/node/node1/cpulist", "2-3\n")
    assert probe.probe_host(Runtime(root=root)).cpus == 4


def test_nothing_live_is_read_for_another_root(tmp_path: Path) -> None:
    root = make_host(tmp_path)
    write(root, "usr/local/bin/ollama", "#!/bin/sh\n")

    def boom(*_: Any, **__: Any) -> Any:
        raise AssertionError("a live query ran for a non-/ root")

    got = probe.probe_host(Runtime(root=root, run=boom, nvml=boom))

    assert got.ollama.binary == "/usr/local/bin/ollama"
    assert got.ollama.version is None
    assert got.nvidia_gpus == ()


def test_two_numa_nodes_nvidia_gpu_on_node1_via_nvml(tmp_path: Path) -> None:
    root = make_host(tmp_path, mem_kb=512 * 1024 * 1024, online="0-63")
    write(root, "sys/devices/system/node/node1/cpulist", "16-31,48-63\n")
    write(root, "sys/devices/system/node/node0/cpulist", "0-15,32-47\n")
    write(root, "sys/devices/system/node/node2/cpulist", "\n")  # memory-only node
    write(root, "sys/devices/system/node/possible", "0-2\n")
    write(root, "sys/bus/pci/devices/0000:b3:00.0/numa_node", "1\n")
    for dev in ("nvidiactl", "nvidia0", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"):
        write(root, f"dev/{dev}")
    write(root, "dev/nvidia-caps/nvidia-cap1")
    write(root, "dev/null")
    nvml_gpu = Gpu(
        index=0,
        vendor=GpuVendor.NVIDIA,
        name="NVIDIA L40S",
        memory_bytes=46068 * MIB,
        power_limit_max_w=350.0,
        clock_max_mhz=2520,
        pci_bus_id="0000:b3:00.0",
    )

    got = probe.probe_host(
        live_rt(
            root,
            run=fake_run({"systemctl": "systemd 255 (255.4-1ubuntu8)\n"}),
            nvml=lambda: (nvml_gpu,),
        )
    )

    assert got.numa_nodes == (NumaNode(0, "0-15,32-47"), NumaNode(1, "16-31,48-63"))
    assert got.cpus == 64
    assert got.gpus == (replace(nvml_gpu, numa_node=1),)
    assert got.device_nodes == (
        "/dev/nvidia0",
        "/dev/nvidia-caps/nvidia-cap1",
        "/dev/nvidia-modeset",
        "/dev/nvidia-uvm",
        "/dev/nvidia-uvm-tools",
        "/dev/nvidiactl",
    )
    assert got.systemd_version == 255
    assert got.hostname == "live-host"
    assert facts.loads(facts.dumps(got)) == got


SMI_CSV = (
    "0, NVIDIA H100 80GB HBM3, 81559, 700.00, 1980, 00000000:17:00.0\n"
    "1, NVIDIA A100-SXM4-40GB, 40960, [N/A], [N/A], 00000000:B3:00.0\n"
)


def test_nvidia_smi_fallback_when_nvml_fails(tmp_path: Path) -> None:
    root = make_host(tmp_path)
    write(root, "sys/bus/pci/devices/0000:17:00.0/numa_node", "0\n")
    write(root, "sys/bus/pci/devices/0000:b3:00.0/numa_node", "-1\n")
    calls: list[tuple[str, ...]] = []

    got = probe.probe_host(
        live_rt(root, run=fake_run({"nvidia-smi": SMI_CSV}, calls), nvml=lambda: None)
    )

    assert got.gpus == (
        Gpu(
            0,
            GpuVendor.NVIDIA,
            "NVIDIA H100 80GB HBM3",
            81559 * MIB,
            0,
            700.0,
            1980,
            "0000:17:00.0",
        ),
        Gpu(
            1,
            GpuVendor.NVIDIA,
            "NVIDIA A100-SXM4-40GB",
            40960 * MIB,
            None,
            None,
            None,
            "0000:b3:00.0",
        ),
    )
    assert (
        "nvidia-smi",
        "--query-gpu=index,name,memory.total,power.max_limit,clocks.max.sm,pci.bus_id,uuid",
        "--format=csv,noheader,nounits",
    ) in calls
    assert got.vram_bytes == (81559 + 40960) * MIB


def test_use_nvml_false_goes_straight_to_nvidia_smi(tmp_path: Path) -> None:
    root = make_host(tmp_path)

    def nvml() -> None:
        raise AssertionError("NVML asked although use_nvml=False")

    assert (
        len(
            probe.probe_host(
                live_rt(root, run=fake_run({"nvidia-smi": SMI_CSV}), nvml=nvml), use_nvml=False
            ).nvidia_gpus
        )
        == 2
    )


def test_no_nvml_no_nvidia_smi_no_ollama_is_normal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_host(tmp_path)

    got = probe.probe_host(live_rt(root, run=fake_run({}), nvml=lambda: None))

    assert got.gpus == ()
    assert got.ollama == facts.OllamaInstall()
    assert got.systemd_version == 252
    assert "assuming 252" in caplog.text


def test_nvidia_smi_failing_reports_no_gpus(tmp_path: Path) -> None:
    def run(argv: Sequence[str], **_: Any) -> proc.Completed:
        raise CommandError(f"{argv[0]} exited 9: NVIDIA-SMI has failed")

    assert probe.probe_host(live_rt(make_host(tmp_path), run=run, nvml=lambda: None)).gpus == ()


def test_amd_card(tmp_path: Path) -> None:
    root = make_host(tmp_path)
    card = "sys/class/drm/card1/device"
    write(root, f"{card}/vendor", "0x1002\n")
    write(root, f"{card}/mem_info_vram_total", f"{64 * GIB}\n")
    write(root, f"{card}/product_name", "AMD Instinct MI210\n")
    write(root, f"{card}/numa_node", "1\n")
    write(root, f"{card}/uevent", "DRIVER=amdgpu\nPCI_SLOT_NAME=0000:C3:00.0\n")
    write(root, "sys/class/drm/card1-DP-1/status", "disconnected\n")
    # An Intel iGPU and an AMD device without VRAM info are not counted.
    write(root, "sys/class/drm/card0/device/vendor", "0x8086\n")
    write(root, "sys/class/drm/card2/device/vendor", "0x1002\n")
    write(root, "dev/kfd")
    write(root, "dev/dri/renderD128")
    write(root, "dev/dri/card1")

    got = probe.probe_host(Runtime(root=root))

    assert got.amd_gpus == (
        Gpu(
            index=0,
            vendor=GpuVendor.AMD,
            name="AMD Instinct MI210",
            memory_bytes=64 * GIB,
            numa_node=1,
            pci_bus_id="0000:c3:00.0",
        ),
    )
    assert got.nvidia_gpus == ()
    assert got.device_nodes == ("/dev/dri/renderD128", "/dev/kfd")
    assert facts.loads(facts.dumps(got)) == got


def test_amd_card_without_product_name_or_node(tmp_path: Path) -> None:
    root = make_host(tmp_path)
    write(root, "sys/class/drm/card0/device/vendor", "0x1002\n")
    write(root, "sys/class/drm/card0/device/mem_info_vram_total", "25753026560\n")
    write(root, "sys/class/drm/card0/device/numa_node", "-1\n")
    (gpu,) = probe.probe_host(Runtime(root=root)).gpus
    assert (gpu.name, gpu.numa_node, gpu.memory_bytes) == ("", None, 25753026560)


def test_wsl_dxg_device(tmp_path: Path) -> None:
    root = make_host(tmp_path)
    write(root, "dev/dxg")
    assert probe.probe_host(Runtime(root=root)).device_nodes == ("/dev/dxg",)


# ---------------------------------------------------------------- NVML reader


class _NVMLError(Exception):
    pass


def fake_pynvml(gpus: list[dict[str, Any]], *, init_fails: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    state = {"shutdown": 0}

    def init() -> None:
        if init_fails:
            raise _NVMLError("Driver Not Loaded")

    def field(key: str) -> Any:
        def get(handle: int, *_: Any) -> Any:
            value = gpus[handle][key]
            if value is None:
                raise _NVMLError("Not Supported")
            return value

        return get

    def shutdown() -> None:
        state["shutdown"] += 1

    mod.__dict__.update(
        NVMLError=_NVMLError,
        NVML_CLOCK_SM=1,
        nvmlInit=init,
        nvmlShutdown=shutdown,
        nvmlDeviceGetCount=lambda: len(gpus),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=field("name"),
        nvmlDeviceGetMemoryInfo=field("mem"),
        nvmlDeviceGetPowerManagementLimitConstraints=field("limits"),
        nvmlDeviceGetMaxClockInfo=field("clock"),
        nvmlDeviceGetPciInfo=field("pci"),
        state=state,
    )
    return mod


def test_nvml_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = fake_pynvml(
        [
            {
                "name": "NVIDIA GeForce RTX 4090",
                "mem": types.SimpleNamespace(total=24564 * MIB),
                "limits": [150000, 600000],
                "clock": 3120,
                "pci": types.SimpleNamespace(busId=b"00000000:01:00.0"),
            },
            {
                "name": b"Tesla T4",
                "mem": types.SimpleNamespace(total=15360 * MIB),
                "limits": None,
                "clock": None,
                "pci": types.SimpleNamespace(busId="00000001:5E:00.0"),
            },
        ]
    )
    monkeypatch.setitem(sys.modules, "pynvml", mod)

    assert nvml.read_nvml_gpus() == (
        Gpu(
            0,
            GpuVendor.NVIDIA,
            "NVIDIA GeForce RTX 4090",
            24564 * MIB,
            None,
            600.0,
            3120,
            "0000:01:00.0",
        ),
        Gpu(1, GpuVendor.NVIDIA, "Tesla T4", 15360 * MIB, None, None, None, "0001:5e:00.0"),
    )
    assert mod.state["shutdown"] == 1


def test_nvml_init_failure_means_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_fails=True))
    assert nvml.read_nvml_gpus() is None


def test_nvml_missing_module_means_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert nvml.read_nvml_gpus() is None


# ---------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("00000000:17:00.0", "0000:17:00.0"),
        ("00000000:B3:00.0", "0000:b3:00.0"),
        ("0000:3d:00.0", "0000:3d:00.0"),
        ("0001:AF:00.1", "0001:af:00.1"),
    ],
)
def test_normalize_pci_bus_id(raw: str, want: str) -> None:
    assert nvml.normalize_pci_bus_id(raw) == want


def test_nvidia_smi_csv_skips_junk_lines() -> None:
    got = probe._parse_nvidia_smi_csv("garbage\n\n0, [N/A], [N/A], [N/A], [N/A], [N/A]\n")
    assert got == (Gpu(0, GpuVendor.NVIDIA),)


def test_passwd_and_group(tmp_path: Path) -> None:
    write(
        tmp_path,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n"
        "# comment\n"
        "ollama:x:998:997::/usr/share/ollama:/bin/false\n",
    )
    write(tmp_path, "etc/group", "root:x:0:\nrender:x:105:ollama\nollama:x:997:\n")
    assert probe._read_service_account(tmp_path) == ("ollama", "ollama", "/usr/share/ollama")


def test_passwd_primary_group_name_differs(tmp_path: Path) -> None:
    write(tmp_path, "etc/passwd", "ollama:x:998:1001:Ollama:/srv/ollama:/usr/sbin/nologin\n")
    write(tmp_path, "etc/group", "ai:x:1001:\n")
    assert probe._read_service_account(tmp_path) == ("ollama", "ai", "/srv/ollama")


def test_no_ollama_user(tmp_path: Path) -> None:
    write(tmp_path, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    assert probe._read_service_account(tmp_path) == (None, None, None)
    assert probe._read_service_account(tmp_path / "nowhere") == (None, None, None)


def test_ollama_install_from_tree(tmp_path: Path) -> None:
    root = make_host(tmp_path)
    write(root, "usr/bin/ollama")
    write(root, "bin/ollama")
    write(root, "usr/lib/systemd/system/ollama.service", "[Service]\n")
    write(root, "lib/systemd/system/ollama.service", "[Service]\n")
    write(root, "etc/passwd", "ollama:x:998:998::/usr/share/ollama:/bin/false\n")
    write(root, "etc/group", "ollama:x:998:\n")
    assert probe.probe_host(Runtime(root=root)).ollama == facts.OllamaInstall(
        binary="/usr/bin/ollama",
        user="ollama",
        group="ollama",
        home="/usr/share/ollama",
        unit_path="/usr/lib/systemd/system/ollama.service",
    )


@pytest.mark.parametrize(
    ("output", "want"),
    [
        ("ollama version is 0.5.7\n", "0.5.7"),
        (
            "Warning: could not connect to a running Ollama instance\n"
            "Warning: client version is 0.5.7\n",
            "0.5.7",
        ),
        ("ollama version is 0.9.5\nWarning: client version is 0.11.4\n", "0.11.4"),
        ("Error: something else\n", None),
    ],
)
def test_parse_ollama_version(output: str, want: str | None) -> None:
    assert probe._parse_ollama_version(output) == want


def test_ollama_version_is_asked_live_with_timeout(tmp_path: Path) -> None:
    root = make_host(tmp_path)
    write(root, "usr/local/bin/ollama")
    seen: dict[str, Any] = {}

    def run(argv: Sequence[str], **kw: Any) -> proc.Completed:
        if Path(argv[0]).name == "ollama":
            seen.update(kw, argv=tuple(argv))
            out = (
                "Warning: could not connect to a running Ollama instance\n"
                "Warning: client version is 0.6.2\n"
            )
            return proc.Completed(tuple(argv), 0, out, "")
        raise CommandError("not found") from FileNotFoundError(argv[0])

    got = probe.probe_host(live_rt(root, run=run, nvml=lambda: ()))

    assert got.ollama.version == "0.6.2"
    assert seen["argv"] == ("/usr/local/bin/ollama", "--version")
    assert seen["timeout"] == 5.0


def test_ollama_version_failure_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_host(tmp_path)
    write(root, "usr/local/bin/ollama")

    def run(argv: Sequence[str], **_: Any) -> proc.Completed:
        if Path(argv[0]).name == "ollama":
            raise CommandError(f"{argv[0]} --version: no answer after 5s")
        raise PermissionError(13, "Permission denied")

    got = probe.probe_host(live_rt(root, run=run, nvml=lambda: ()))

    assert got.ollama.binary == "/usr/local/bin/ollama"
    assert got.ollama.version is None


@pytest.mark.parametrize(
    ("output", "want"),
    [
        ("systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT +SELINUX\n", 252),
        ("systemd 257 (257.1-1)\n", 257),
        ("systemd 249 (249.11-0ubuntu3.12)\n", 249),
        ("", None),
        ("something else\n", None),
    ],
)
def test_parse_systemctl_version(output: str, want: int | None) -> None:
    assert systemd.parse_systemctl_version(output) == want


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("libsystemd-shared-252.so", 252),
        ("libsystemd-shared-257.1-1.so", 257),
        ("libsystemd-shared-255.4-1ubuntu8.so", 255),
        ("libsystemd-shared-abc.so", None),
    ],
)
def test_parse_libsystemd_shared_name(name: str, want: int | None) -> None:
    assert probe._parse_libsystemd_shared_name(name) == want


def test_systemd_version_from_library_file(tmp_path: Path) -> None:
    root = make_host(tmp_path)
    write(root, "usr/lib/systemd/libsystemd-shared-257.1-1.so")
    write(root, "usr/lib/systemd/libsystemd-core-257.1-1.so")
    assert probe.probe_host(Runtime(root=root)).systemd_version == 257


def test_systemd_version_live_prefers_systemctl(tmp_path: Path) -> None:
    root = make_host(tmp_path)
    write(root, "usr/lib/systemd/libsystemd-shared-249.so")
    assert (
        probe.probe_host(
            live_rt(
                root,
                run=fake_run({"systemctl": "systemd 252 (252.38-1~deb12u1)\n"}),
                nvml=lambda: (),
            )
        ).systemd_version
        == 252
    )
    assert probe.probe_host(live_rt(root, run=fake_run({}), nvml=lambda: ())).systemd_version == 249


def test_systemd_version_default_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert probe.probe_host(Runtime(root=make_host(tmp_path))).systemd_version == 252
    assert "assuming 252" in caplog.text


# ---------------------------------------------------------------- errors


def test_missing_meminfo_is_a_facts_error(tmp_path: Path) -> None:
    with pytest.raises(FactsError) as info:
        probe.probe_host(Runtime(root=tmp_path))
    message = str(info.value)
    assert str(tmp_path / "proc/meminfo") in message
    assert "pass --facts FILE or run on the host itself" in message
    assert "\n" not in message


def test_meminfo_without_memtotal_is_a_facts_error(tmp_path: Path) -> None:
    write(tmp_path, "proc/meminfo", "MemFree: 10 kB\n")
    with pytest.raises(FactsError, match="MemTotal"):
        probe.probe_host(Runtime(root=tmp_path))


# ---------------------------------------------------------------- this machine


def test_probe_this_machine() -> None:
    got = probe.probe_host(Runtime())
    assert got.memory_bytes > 0
    assert got.cpus >= 1
    assert got.numa_nodes
    assert got.systemd_version >= 200
    assert all(path.startswith("/dev/") for path in got.device_nodes)
    assert facts.loads(facts.dumps(got)) == got


# ---------------------------------------------------------------- fixtures


def load_fixture(name: str) -> HostFacts:
    path = FIXTURES / name
    return facts.loads(path.read_text(), source=str(path))


def test_fixture_cpu_small() -> None:
    host = load_fixture("cpu-small.json")
    assert host.gpus == ()
    assert host.device_nodes == ()
    assert host.cpus == 4
    assert len(host.numa_nodes) == 1
    assert 7 * GIB < host.memory_bytes <= 8 * GIB


def test_fixture_nvidia_1x24g() -> None:
    host = load_fixture("nvidia-1x24g.json")
    (gpu,) = host.nvidia_gpus
    assert 23 * GIB < gpu.memory_bytes <= 24 * GIB
    assert "/dev/nvidiactl" in host.device_nodes
    assert "/dev/nvidia-uvm" in host.device_nodes


def test_fixture_nvidia_2x_h100_2socket() -> None:
    host = load_fixture("nvidia-2x-h100-2socket.json")
    assert [n.id for n in host.numa_nodes] == [0, 1]
    assert len(host.nvidia_gpus) == 2
    assert {g.numa_node for g in host.gpus} == {0}
    assert all("H100" in g.name and g.memory_bytes > 79 * GIB for g in host.gpus)
    assert host.cpus == sum(len(facts.parse_cpu_list(n.cpus)) for n in host.numa_nodes)


def test_fixture_amd_rocm() -> None:
    host = load_fixture("amd-rocm.json")
    (gpu,) = host.amd_gpus
    assert host.nvidia_gpus == ()
    assert gpu.memory_bytes > 60 * GIB
    assert {"/dev/kfd", "/dev/dri/renderD128"} <= set(host.device_nodes)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.name)
def test_fixtures_round_trip(path: Path) -> None:
    host = facts.loads(path.read_text(), source=str(path))
    assert facts.loads(facts.dumps(host)) == host
    assert facts.dumps(host) == path.read_text()
