from __future__ import annotations

import dataclasses

import pytest

from ollama_ops.errors import PlanError
from ollama_ops.model import config
from ollama_ops.model import deployment as deployment_mod
from ollama_ops.model.facts import HostFacts, NumaNode, OllamaInstall
from ollama_ops.plan import compose as plan
from tests.helpers import host

GiB = 1024**3


def settings(d: deployment_mod.Deployment) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in d.settings:
        if s.value:
            out[s.key] = s.value
    return out


def test_memory_worksheet_is_the_guides_rule() -> None:
    facts = dataclasses.replace(host("nvidia-1x24g"), memory_bytes=64 * GiB)
    d = plan.build(facts, config.DeploymentConfig())
    values = settings(d)
    available = 60 * GiB  # 64 - 4 GiB OS reserve
    assert values["MemoryHigh"] == f"{int(available * 0.80) // 1024**2}M"
    assert values["MemoryMax"] == f"{int(available * 0.93) // 1024**2}M"
    reason = next(s.reason for s in d.settings if s.key == "MemoryHigh")
    assert "80%" in reason
    assert "OS reserve 4 GiB" in reason


def test_small_host_reserve_scales() -> None:
    facts = dataclasses.replace(host("cpu-small"), memory_bytes=2 * GiB)
    values = settings(plan.build(facts, config.DeploymentConfig()))
    assert int(values["MemoryMax"][:-1]) * 1024**2 < 2 * GiB


def test_config_overrides_are_marked_as_config() -> None:
    cfg = config.loads(
        '[limits]\nmemory_max = "6G"\ncpu_weight = 300\n[environment]\nOLLAMA_NUM_PARALLEL = 3\n'
    )
    d = plan.build(host("cpu-small"), cfg)
    by_key = {s.key: s for s in d.settings if s.value}
    assert by_key["MemoryMax"].value == str(6 * GiB)
    assert by_key["MemoryMax"].source is deployment_mod.Source.CONFIG
    assert by_key["CPUWeight"].source is deployment_mod.Source.CONFIG
    assert by_key["OLLAMA_NUM_PARALLEL"].value == "3"
    assert by_key["OLLAMA_NUM_PARALLEL"].source is deployment_mod.Source.CONFIG
    assert by_key["OLLAMA_KEEP_ALIVE"].source is deployment_mod.Source.RULE


def test_memory_high_above_max_is_refused() -> None:
    cfg = config.loads('[limits]\nmemory_max = "2G"\n')
    with pytest.raises(PlanError, match=r"MemoryHigh .* is above MemoryMax") as info:
        plan.build(
            host("cpu-small"),
            dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, memory_high=3 * GiB)),
        )
    assert "\n" not in str(info.value)


def test_limit_above_ram_is_refused() -> None:
    cfg = config.loads('[limits]\nmemory_max = "1T"\n')
    with pytest.raises(PlanError, match="more than the host's RAM"):
        plan.build(host("cpu-small"), cfg)


def test_numa_pinning_when_gpus_share_a_node() -> None:
    d = plan.build(host("nvidia-2x-h100-2socket"), config.DeploymentConfig())
    assert settings(d)["AllowedCPUs"] == "0-31,64-95"
    single = plan.build(host("nvidia-1x24g"), config.DeploymentConfig())
    assert "AllowedCPUs" not in settings(single)


def test_allowed_cpus_from_config_must_exist() -> None:
    with pytest.raises(PlanError, match="names CPUs this host lacks"):
        plan.build(host("cpu-small"), config.loads('[limits]\nallowed_cpus = "0-63"\n'))


def test_gpu_host_gets_device_allow_list_not_private_devices() -> None:
    d = plan.build(host("nvidia-1x24g"), config.DeploymentConfig())
    values = [(s.key, s.value) for s in d.settings if s.value is not None]
    assert ("DevicePolicy", "closed") in values
    assert ("DeviceAllow", "char-nvidia-frontend rw") in values
    assert ("PrivateDevices", "yes") not in values
    assert d.modules_load == ("nvidia", "nvidia_uvm")
    assert settings(d)["CUDA_VISIBLE_DEVICES"] == "0"


def test_cpu_host_gets_private_devices_and_wx_protection() -> None:
    values = settings(plan.build(host("cpu-small"), config.DeploymentConfig()))
    assert values["PrivateDevices"] == "yes"
    assert values["MemoryDenyWriteExecute"] == "yes"
    assert "CUDA_VISIBLE_DEVICES" not in values


def test_amd_host_keeps_groups() -> None:
    d = plan.build(host("amd-rocm"), config.DeploymentConfig())
    assert "PrivateUsers" not in settings(d)
    assert ("DeviceAllow", "/dev/kfd rw") in [(s.key, s.value) for s in d.settings]


def test_home_is_writable_so_the_key_can_be_written() -> None:
    d = plan.build(host("cpu-small"), config.DeploymentConfig())
    rw = [s.value for s in d.settings if s.key == "ReadWritePaths"]
    assert "/usr/share/ollama" in rw
    assert settings(d)["OLLAMA_MODELS"] == "/usr/share/ollama/.ollama/models"


def test_models_outside_home_are_added_to_write_paths() -> None:
    d = plan.build(host("cpu-small"), config.loads('[service]\nmodels_dir = "/srv/models"\n'))
    rw = [s.value for s in d.settings if s.key == "ReadWritePaths"]
    assert rw == ["/usr/share/ollama", "/srv/models"]


def test_no_ollama_user_means_dynamic_user_and_a_base_unit() -> None:
    facts = dataclasses.replace(host("cpu-small"), ollama=OllamaInstall())
    d = plan.build(facts, config.DeploymentConfig())
    assert d.write_base_unit
    assert (deployment_mod.Section.SERVICE, "DynamicUser", "yes") in d.base_unit
    assert settings(d)["StateDirectory"] == "ollama"
    assert any("not installed" in n for n in d.notes)


def test_network_bind_needs_an_allow_list() -> None:
    with pytest.raises(PlanError, match="exposes the API to the network"):
        plan.build(host("cpu-small"), config.loads('[service]\nbind = "0.0.0.0:11434"\n'))
    d = plan.build(
        host("cpu-small"),
        config.loads('[service]\nbind = "0.0.0.0:11434"\nallowed_networks = ["10.0.0.0/8"]\n'),
    )
    allow = [s.value for s in d.settings if s.key == "IPAddressAllow"]
    assert allow == ["localhost", "10.0.0.0/8"]
    assert d.api_url == "http://127.0.0.1:11434"


@pytest.mark.parametrize(
    ("version", "present"), [(247, False), (252, False), (254, True), (257, True)]
)
def test_directives_newer_than_target_are_left_out(version: int, present: bool) -> None:
    facts = dataclasses.replace(host("cpu-small"), systemd_version=version)
    d = plan.build(facts, config.DeploymentConfig())
    assert ("RestartSteps" in settings(d)) is present
    left_out = next(s for s in d.settings if s.key == "RestartMaxDelaySec")
    if not present:
        assert left_out.value is None
        assert "needs systemd >= 254" in left_out.reason


def test_start_limits_go_to_the_unit_section() -> None:
    d = plan.build(host("cpu-small"), config.DeploymentConfig())
    sections = {s.key: s.section for s in d.settings}
    assert sections["StartLimitIntervalSec"] is deployment_mod.Section.UNIT
    assert sections["StartLimitBurst"] is deployment_mod.Section.UNIT


def test_relax_leaves_directive_out_with_reason() -> None:
    d = plan.build(
        host("cpu-small"), config.loads('[hardening]\nrelax = ["MemoryDenyWriteExecute"]\n')
    )
    s = next(s for s in d.settings if s.key == "MemoryDenyWriteExecute")
    assert s.value is None
    assert s.source is deployment_mod.Source.CONFIG
    with pytest.raises(PlanError, match="not a directive"):
        plan.build(host("cpu-small"), config.loads('[hardening]\nrelax = ["Bogus"]\n'))


def test_every_left_out_setting_has_a_reason() -> None:
    for name in ("cpu-small", "nvidia-1x24g", "amd-rocm", "nvidia-2x-h100-2socket"):
        for s in plan.build(host(name), config.DeploymentConfig()).settings:
            assert s.reason, s


def test_cpu_only_single_node_facts() -> None:
    facts = HostFacts(memory_bytes=32 * GiB, cpus=8, numa_nodes=(NumaNode(0, "0-7"),))
    d = plan.build(facts, config.DeploymentConfig())
    assert settings(d)["OLLAMA_NUM_PARALLEL"] == "1"
    assert settings(d)["OLLAMA_MAX_LOADED_MODELS"] == "2"


def test_large_gpus_cap_context_so_slots_fit() -> None:
    values = settings(plan.build(host("nvidia-2x-h100-2socket"), config.DeploymentConfig()))
    assert values["OLLAMA_CONTEXT_LENGTH"] == "32768"
    assert values["OLLAMA_NUM_PARALLEL"] == "4"
    assert "OLLAMA_CONTEXT_LENGTH" not in settings(
        plan.build(host("nvidia-1x24g"), config.DeploymentConfig())
    )


def test_dynamic_user_on_amd_joins_render_and_video() -> None:
    facts = dataclasses.replace(host("amd-rocm"), ollama=OllamaInstall())
    assert (
        settings(plan.build(facts, config.DeploymentConfig()))["SupplementaryGroups"]
        == "render video"
    )


def test_nofile_from_config_replaces_the_rule() -> None:
    d = plan.build(host("cpu-small"), config.loads("[limits]\nnofile = 4096\n"))
    assert [s.value for s in d.settings if s.key == "LimitNOFILE"] == ["4096"]


@pytest.mark.parametrize("home", ["/", "/nonexistent"])
def test_user_without_a_usable_home_gets_a_state_directory(home: str) -> None:
    base = host("cpu-small")
    facts = dataclasses.replace(base, ollama=dataclasses.replace(base.ollama, home=home))
    d = plan.build(facts, config.DeploymentConfig())
    values = settings(d)
    assert values["StateDirectory"] == "ollama"
    assert values["HOME"] == "/var/lib/ollama"
    assert [s.value for s in d.settings if s.key == "ReadWritePaths"] == []


def test_models_dir_needs_a_fixed_user() -> None:
    facts = dataclasses.replace(host("cpu-small"), ollama=OllamaInstall())
    with pytest.raises(PlanError, match="needs a fixed service user"):
        plan.build(facts, config.loads('[service]\nmodels_dir = "/srv/models"\n'))


def test_a_specific_bind_address_may_reach_itself() -> None:
    cfg = config.loads(
        '[service]\nbind = "10.0.0.5:11434"\nallowed_networks = ["192.168.0.0/16"]\n'
    )
    d = plan.build(host("cpu-small"), cfg)
    assert [s.value for s in d.settings if s.key == "IPAddressAllow"] == [
        "localhost",
        "10.0.0.5",
        "192.168.0.0/16",
    ]
    assert d.api_url == "http://10.0.0.5:11434"
