from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.errors import PlanError
from ollama_ops.model import config
from ollama_ops.model import deployment as deployment_mod
from ollama_ops.model.facts import HostFacts, NumaNode, OllamaInstall
from ollama_ops.plan import compose as plan
from ollama_ops.unitfile import syntax as unit
from tests.helpers import FIXTURES, INSTALLER_UNIT, host

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


# ------------------------------------------------ limits that kill the service (issue 7, item 10)


@pytest.mark.parametrize(
    ("memory", "limits"),
    [
        (1 * GiB, {}),  # 512 MiB reserve leaves 512 MiB: MemoryHigh would be 409 MiB
        (900 * 1024**2, {}),
        (64 * GiB, {"memory_high_percent": 0.5, "memory_max_percent": 1}),
        (8 * GiB, {"os_reserve": "7.6G"}),
    ],
)
def test_rule_limits_below_what_ollama_needs_are_refused(
    memory: int, limits: dict[str, object]
) -> None:
    facts = dataclasses.replace(host("cpu-small"), memory_bytes=memory)
    with pytest.raises(PlanError, match="512 MiB ollama serve needs") as info:
        plan.build(facts, config.from_dict({"limits": limits}))
    assert "\n" not in str(info.value)


@hsettings(max_examples=300, deadline=None)
@given(
    memory=st.integers(min_value=1, max_value=1 << 52),
    high=st.floats(min_value=0.001, max_value=100),
    top=st.floats(min_value=0.001, max_value=100),
)
@example(memory=512 * 1024**2 + 1, high=80, top=93)
@example(memory=10**12, high=0.001, top=0.002)
def test_written_memory_limits_let_ollama_start_and_can_act(
    memory: int, high: float, top: float
) -> None:
    facts = dataclasses.replace(host("cpu-small"), memory_bytes=memory)
    limits = {"memory_high_percent": min(high, top), "memory_max_percent": max(high, top)}
    try:
        d = plan.build(facts, config.from_dict({"limits": limits}))
    except PlanError as exc:
        assert "\n" not in str(exc)
        return
    for key in ("MemoryHigh", "MemoryMax"):
        value = d.value(key)
        assert value is not None and value.endswith("M")
        assert int(value[:-1]) >= 512 and int(value[:-1]) * 1024**2 <= memory


# ------------------------------------------------ variables written once, noted, escaped (item 11)

_ENV_NAMES = st.sampled_from(
    ["OLLAMA_MODELS", "OLLAMA_NUM_PARALLEL", "CUDA_VISIBLE_DEVICES", "OLLAMA_KEEP_ALIVE",
     "GOMAXPROCS", "OLLAMA_FLASH_ATTENTION", "OLLAMA_CONTEXT_LENGTH", "X"]
)  # fmt: skip


@hsettings(max_examples=200, deadline=None)
@given(names=st.sets(_ENV_NAMES), models_dir=st.booleans())
@example(names={"OLLAMA_MODELS"}, models_dir=False)
def test_no_variable_is_written_twice(names: set[str], models_dir: bool) -> None:
    env = {n: "/srv/models" if n == "OLLAMA_MODELS" else "1" for n in names}
    data: dict[str, object] = {"environment": env}
    if models_dir:
        data["service"] = {"models_dir": "/srv/store"}
    try:
        d = plan.build(host("nvidia-2x-h100-2socket"), config.from_dict(data))
    except PlanError as exc:
        assert "set the model store once" in str(exc)
        return
    written = [s.key for s in d.active(deployment_mod.Section.ENV)]
    assert len(written) == len(set(written)), written
    for name in names:
        assert d.value(name) == env[name]
        (setting,) = [s for s in d.active() if s.key == name]
        assert setting.source is deployment_mod.Source.CONFIG
        assert f"environment.{name}" in setting.reason


def test_path_and_library_path_are_noted_and_a_writable_library_path_refused() -> None:
    d = plan.build(
        host("cpu-small"),
        config.from_dict({"environment": {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/cuda"}}),
    )
    assert any("environment.PATH" in n for n in d.notes)
    assert any("environment.LD_LIBRARY_PATH" in n for n in d.notes)
    cfg = config.from_dict(
        {
            "environment": {"LD_LIBRARY_PATH": "/opt/cuda:/srv/cache/lib"},
            "hardening": {"read_write_paths": ["/srv/cache"]},
        }
    )
    with pytest.raises(PlanError, match="LD_LIBRARY_PATH names /srv/cache/lib"):
        plan.build(host("cpu-small"), cfg)


def test_hostnames_and_gpu_names_reach_the_terminal_escaped() -> None:
    from ollama_ops.plan import explain

    base = host("nvidia-1x24g")
    gpu = dataclasses.replace(base.gpus[0], name="RTX\x1b]0;owned\x07\x1b[2J")
    hostile = dataclasses.replace(base, hostname="ws\x1b[31m\u202e", gpus=(gpu,))
    d = plan.build(hostile, config.DeploymentConfig())
    text = explain.report(hostile, d, [], "", "/")
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b[31m" in text


# ------------------------------------------------ the operator's values say so (item 16)


def test_operator_values_are_labelled_config_with_their_key() -> None:
    cfg = config.from_dict(
        {
            "service": {"bind": "10.0.0.5:11434", "allowed_networks": ["10.0.0.0/8"]},
            "hardening": {"read_write_paths": ["/srv/cache"]},
        }
    )
    d = plan.build(host("cpu-small"), cfg)
    by_value = {(s.key, s.value): s for s in d.active()}
    for key, value, reason in [
        ("ReadWritePaths", "/srv/cache", "hardening.read_write_paths"),
        ("IPAddressAllow", "10.0.0.0/8", "service.allowed_networks"),
        ("IPAddressAllow", "10.0.0.5", "service.bind"),
    ]:
        setting = by_value[(key, value)]
        assert setting.source is deployment_mod.Source.CONFIG, setting
        assert reason in setting.reason
    home = by_value[("ReadWritePaths", "/usr/share/ollama")]
    assert home.source is deployment_mod.Source.RULE
    loopback = by_value[("IPAddressAllow", "localhost")]
    assert loopback.source is deployment_mod.Source.HARDENING


# ------------------------------------------------ the CLI in-process: items 11, 13, 15


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), Env(stdout=out, stderr=err))
    return code, out.getvalue(), err.getvalue()


def write(root: Path, path: str, text: str) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def this_host_facts(tmp_path: Path) -> str:
    """Facts of a machine without Ollama, as `facts --json` prints them on a laptop."""
    data = json.loads((FIXTURES / "hosts" / "cpu-small.json").read_text())
    data["ollama"] = {}
    data["hostname"] = "laptop"
    path = tmp_path / "laptop.json"
    path.write_text(json.dumps(data))
    return str(path)


def installer_root(root: Path) -> Path:
    """A tree as install.sh leaves it: user ollama at /usr/share/ollama, models there."""
    write(
        root,
        "/etc/passwd",
        "root:x:0:0::/root:/bin/sh\nollama:x:998:998::/usr/share/ollama:/bin/false\n",
    )
    write(root, "/etc/group", "root:x:0:\nollama:x:998:\n")
    write(root, "/etc/systemd/system/ollama.service", INSTALLER_UNIT)
    write(root, "/usr/local/bin/ollama", "#!/bin/sh\n").chmod(0o755)
    (root / "usr/share/ollama/.ollama/models").mkdir(parents=True)
    return root


def test_the_root_wins_over_facts_from_another_host(tmp_path: Path) -> None:
    root = installer_root(tmp_path / "root")
    code, out, err = run("plan", "--facts", this_host_facts(tmp_path), "--root", str(root))
    assert code == 0, err
    assert "StateDirectory=ollama" not in out and "HOME=" not in out
    assert "+ReadWritePaths=/usr/share/ollama\n" in out
    assert "OLLAMA_MODELS=/usr/share/ollama/.ollama/models" in out
    assert "ollama is not installed here" not in out
    assert "the facts say ollama.user = None but" in out  # the contradiction, reported
    code, _out, err = run("apply", "--facts", this_host_facts(tmp_path), "--root", str(root))
    assert code == 0, err
    dropin = (root / "etc/systemd/system/ollama.service.d/50-ollama-ops.conf").read_text()
    parsed = unit.parse(dropin)
    assert parsed.get("Service", "StateDirectory") == []
    assert parsed.get("Service", "ReadWritePaths") == ["/usr/share/ollama"]
    env = unit.parse_environment(parsed.get("Service", "Environment"))
    assert "HOME" not in env
    assert env["OLLAMA_MODELS"] == "/usr/share/ollama/.ollama/models"


def test_a_home_in_the_roots_passwd_beats_the_facts_home(tmp_path: Path) -> None:
    root = installer_root(tmp_path / "root")
    facts_file = tmp_path / "f.json"
    data = json.loads((FIXTURES / "hosts" / "cpu-small.json").read_text())
    data["ollama"]["home"] = "/var/lib/ollama"
    facts_file.write_text(json.dumps(data))
    code, out, err = run("plan", "--facts", str(facts_file), "--root", str(root))
    assert code == 0, err
    assert "ollama.home = '/var/lib/ollama' but" in out
    assert "+ReadWritePaths=/usr/share/ollama\n" in out


def test_a_dynamic_unit_in_the_root_beats_a_facts_user(tmp_path: Path) -> None:
    root = installer_root(tmp_path / "root")
    write(root, "/etc/systemd/system/ollama.service.d/10-dyn.conf", "[Service]\nDynamicUser=yes\n")
    code, out, err = run(
        "plan", "--facts", str(FIXTURES / "hosts" / "cpu-small.json"), "--root", str(root)
    )
    assert code == 0, err
    assert "+StateDirectory=ollama" in out
    assert "ollama.user = 'ollama' but" in out


def _unit_with_missing_write_path(root: Path) -> None:
    write(root, "/etc/systemd/system/ollama.service", INSTALLER_UNIT)
    write(
        root, "/etc/ollama-ops/ollama-ops.toml", '[hardening]\nread_write_paths = ["/srv/cache"]\n'
    )
    (root / "usr/share/ollama").mkdir(parents=True)


def _unit_with_broken_header(root: Path) -> None:
    write(root, "/etc/systemd/system/ollama.service", INSTALLER_UNIT)
    write(root, "/etc/systemd/system/ollama.service.d/10-x.conf", "[Service\nUser=ollama\n")
    (root / "usr/share/ollama").mkdir(parents=True)


@pytest.mark.parametrize(
    ("make", "needle", "audited"),
    [
        (_unit_with_missing_write_path, "ReadWritePaths=/srv/cache (hardening.read_write_paths) does not exist", False),
        (_unit_with_broken_header, "10-x.conf:1: invalid section header", True),
    ],
    ids=["missing-write-path", "broken-header"],
)  # fmt: skip
def test_plan_apply_and_audit_refuse_alike(
    tmp_path: Path, make: Callable[[Path], None], needle: str, audited: bool
) -> None:
    make(tmp_path)
    facts_file = str(FIXTURES / "hosts" / "cpu-small.json")
    for argv in (
        ("plan", "--facts", facts_file),
        ("apply", "--facts", facts_file, "--dry-run"),
        ("apply", "--facts", facts_file),
        *((("audit", "--facts", facts_file),) if audited else ()),
    ):
        code, _out, err = run(*argv, "--root", str(tmp_path))
        assert code == 2, (argv, err)
        assert needle in err, (argv, err)
        assert err.count("\n") == 1
    assert not (tmp_path / "etc/systemd/system/ollama.service.d/50-ollama-ops.conf").exists()


@pytest.mark.parametrize("timeout", ["nan", "inf", "-1", "0"])
def test_apply_refuses_a_timeout_that_never_ends_or_never_waits(root: Path, timeout: str) -> None:
    with pytest.raises(SystemExit) as info:
        run(
            "apply",
            "--facts",
            str(FIXTURES / "hosts" / "cpu-small.json"),
            "--root",
            str(root),
            "--timeout",
            timeout,
        )
    assert info.value.code == 2
