"""The instance plan: the template from the main unit's rules, each drop-in, every check."""

from __future__ import annotations

import dataclasses

import pytest

from ollama_ops.errors import OpsError, PlanError
from ollama_ops.model.deployment import Section, Source
from ollama_ops.plan import instance_checks
from ollama_ops.plan.instance_explain import report_lines
from ollama_ops.unitfile import syntax as unit
from tests.helpers import host
from tests.instances_helpers import TWO, UUIDS, env_of, files, instance, plan, two_gpu_host, values

DROPIN = "/etc/systemd/system/ollama@{}.service.d/50-ollama-ops.conf"
TEMPLATE = "/etc/systemd/system/ollama@.service"


def test_template_is_the_main_plan_without_per_instance_values() -> None:
    d = plan(TWO)
    assert d.instances is not None
    template = d.instances.template
    main_rows = {(s.section, s.key, s.value) for s in d.settings if s.section is not Section.ENV}
    for s in template.settings:
        if s.value is not None:
            assert (s.section, s.key, s.value) in main_rows, s  # nothing the main plan lacks
    keys = {s.key for s in template.active()}
    assert {"NoNewPrivileges", "ProtectSystem", "SystemCallFilter", "DevicePolicy"} <= keys
    assert not keys & {"MemoryMax", "MemoryHigh", "CPUWeight", "AllowedCPUs", "ReadWritePaths"}
    assert "char-nvidia-frontend rw" not in values(template, "DeviceAllow")
    assert template.active(Section.ENV) == []
    text = files(TWO)[TEMPLATE]
    parsed = unit.parse(text)
    assert parsed.get("Service", "ExecStart") == ["/usr/local/bin/ollama serve"]
    assert parsed.get("Service", "User") == ["ollama"]
    assert parsed.get("Install", "WantedBy") == ["multi-user.target"]


def test_each_dropin_has_its_port_gpu_uuid_devices_numa_and_state() -> None:
    d = plan(TWO)
    fast, big = instance(d, "fast"), instance(d, "big")
    assert env_of(fast)["OLLAMA_HOST"] == "127.0.0.1:11435"
    assert env_of(big)["OLLAMA_HOST"] == "127.0.0.1:11436"
    assert env_of(fast)["CUDA_VISIBLE_DEVICES"] == UUIDS[0]
    assert env_of(big)["CUDA_VISIBLE_DEVICES"] == UUIDS[1]
    assert values(fast, "DeviceAllow") == [
        "",
        "/dev/nvidiactl rw",
        "/dev/nvidia-uvm rw",
        "/dev/nvidia-uvm-tools rw",
        "/dev/nvidia-modeset rw",
        "char-nvidia-caps rw",
        "char-nvidia-uvm rw",
        "/dev/nvidia0 rw",
    ]
    assert "/dev/nvidia0 rw" not in values(big, "DeviceAllow")
    assert "/dev/nvidia1 rw" in values(big, "DeviceAllow")
    # Both GPUs of the fixture sit on NUMA node 0 of two.
    assert fast.value("AllowedCPUs") == "0-31,64-95"
    assert (fast.value("NUMAPolicy"), fast.value("NUMAMask")) == ("preferred", "0")
    assert fast.value("StateDirectory") == "ollama-fast"
    assert env_of(fast)["HOME"] == "/var/lib/ollama-fast"
    assert env_of(fast)["OLLAMA_MODELS"] == "/var/lib/ollama-fast/models"
    assert "OLLAMA_NOPRUNE" not in env_of(fast)
    for s in fast.settings:  # every per-instance value has a reason
        assert s.reason, s


def test_every_instance_value_is_explained_by_plan() -> None:
    lines = "\n".join(report_lines(plan(TWO)))
    for needle in (
        "Settings for ollama@fast.service",
        "OLLAMA_HOST=127.0.0.1:11435",
        "instances.fast.port",
        "by UUID",
        "NUMAPolicy=preferred",
        "1 of 3 shares",
        "DeviceAllow=/dev/nvidia0 rw",
        "Template ollama@.service",
    ):
        assert needle in lines, needle


def test_gpus_on_another_node_pin_there_and_numa_is_version_gated() -> None:
    base = two_gpu_host()
    gpus = (base.gpus[0], dataclasses.replace(base.gpus[1], numa_node=1))
    big = instance(plan(TWO, dataclasses.replace(base, gpus=gpus)), "big")
    assert big.value("AllowedCPUs") == "32-63,96-127"
    assert big.value("NUMAMask") == "1"
    old = instance(plan(TWO, dataclasses.replace(base, systemd_version=242)), "big")
    assert old.value("NUMAPolicy") is None
    assert any("needs systemd >= 243" in s.reason for s in old.settings if s.key == "NUMAPolicy")
    one_node = instance(plan(TWO, dataclasses.replace(base, numa_nodes=base.numa_nodes[:1])), "big")
    assert one_node.value("NUMAPolicy") is None


def test_facts_without_uuids_fall_back_to_indexes_and_say_so() -> None:
    fast = instance(plan(TWO, host("nvidia-2x-h100-2socket")), "fast")
    row = next(s for s in fast.settings if s.key == "CUDA_VISIBLE_DEVICES")
    assert row.value == "0" and "no UUID" in row.reason


def test_memory_shares_are_fixed_by_the_host_and_add_up_within_the_budget() -> None:
    d = plan(TWO)
    main_max = instance_checks.memory_bytes(d.value("MemoryMax"))
    each = [
        instance_checks.memory_bytes(instance(d, n).value("MemoryMax")) for n in ("fast", "big")
    ]
    facts = two_gpu_host()
    budget = facts.memory_bytes - 4 * 1024**3
    assert main_max + sum(each) <= budget
    assert abs(each[0] - main_max) <= 1024**2  # three equal shares: two GPUs and the main unit
    # Adding or removing an instance never changes another instance's files.
    one = files("[instances.fast]\ngpus = [0]\nport = 11435\n")
    two = files(TWO)
    assert one[DROPIN.format("fast")] == two[DROPIN.format("fast")]
    assert (
        one["/etc/systemd/system/ollama.service.d/50-ollama-ops.conf"]
        == two["/etc/systemd/system/ollama.service.d/50-ollama-ops.conf"]
    )


def test_explicit_limits_are_kept_and_an_over_budget_sum_is_refused() -> None:
    fast = instance(plan(TWO.replace("port = 11435", 'port = 11435\nmemory_max = "100G"')), "fast")
    row = next(s for s in fast.settings if s.key == "MemoryMax")
    assert (row.value, row.source, row.reason) == (
        str(100 * 1024**3),
        Source.CONFIG,
        "instances.fast.memory_max",
    )
    with pytest.raises(PlanError, match="memory limits add up to") as caught:
        plan(TWO.replace("port = 11435", 'port = 11435\nmemory_max = "900G"'))
    assert "\n" not in str(caught.value)


BAD = [
    (TWO.replace("gpus = [1]", "gpus = [0]"), "GPU 0 is in instances big and fast"),
    (TWO.replace("gpus = [1]", "gpus = [7]"), "GPU 7 does not exist on this host"),
    (TWO.replace("gpus = [1]", 'gpus = ["GPU-nope"]'), "GPU 'GPU-nope' does not exist"),
    (TWO.replace("port = 11436", "port = 11434"), "is ollama.service's port"),
    (TWO.replace("port = 11436", "port = 443"), "needs CAP_NET_BIND_SERVICE"),
    (TWO.replace("port = 11436", 'port = 11436\nbind = "0.0.0.0"'), "exposes the instance"),
    (TWO.replace("port = 11436", 'port = 11436\nmemory_max = "2T"'), "instances.big.memory_max"),
    (
        TWO.replace("port = 11436", 'port = 11436\nallowed_cpus = "500"'),
        "instances.big.allowed_cpus",
    ),
    (
        TWO.replace("port = 11436", 'port = 11436\nmodels = ["llama3.1:405b"]'),
        "llama3.1:405b needs about",
    ),
    (TWO.replace("port = 11436", 'port = 11436\nmodels = ["mystery"]'), "cannot tell the size"),
    (
        TWO.replace("port = 11436", 'port = 11436\nmodels_dir = "shared"\nprune = true'),
        "ollama.service already prunes",
    ),
    (TWO + '[frontdoor]\nlisten = "127.0.0.1:11435"\n', "uses ollama@fast.service's port"),
    (TWO + '[frontdoor]\nlisten = "0.0.0.0:8080"\n', "exposes every instance"),
    (TWO + '[frontdoor]\nlisten = "127.0.0.1:8080"\ninstances = ["nope"]\n', "'nope'"),
    (TWO + '[frontdoor]\nlisten = "127.0.0.1:8080"\nread_timeout = 60\n', "not longer than"),
    ('[frontdoor]\nlisten = "127.0.0.1:8080"\n', "no instances to balance"),
]


@pytest.mark.parametrize(("text", "needle"), BAD)
def test_clashes_and_impossible_values_are_one_line(text: str, needle: str) -> None:
    with pytest.raises(OpsError) as caught:
        plan(text)
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_shared_gpus_need_both_to_agree() -> None:
    shared = TWO.replace("gpus = [1]", "gpus = [0]\nshare_gpus = true")
    with pytest.raises(PlanError, match="share_gpus = true on both"):
        plan(shared)
    both = shared.replace("gpus = [0]\nport = 11435", "gpus = [0]\nport = 11435\nshare_gpus = true")
    assert env_of(instance(plan(both), "big"))["CUDA_VISIBLE_DEVICES"] == UUIDS[0]


def test_shared_store_one_prunes_the_others_read_it() -> None:
    text = """
[instances.a]
gpus = [0]
port = 11435
models_dir = "/srv/models"

[instances.b]
gpus = [1]
port = 11436
models_dir = "/srv/models"
prune = true
"""
    d = plan(text)
    a, b = instance(d, "a"), instance(d, "b")
    assert env_of(a)["OLLAMA_NOPRUNE"] == "1" and a.value("ReadOnlyPaths") == "/srv/models"
    assert a.value("ReadWritePaths") is None
    assert "OLLAMA_NOPRUNE" not in env_of(b) and b.value("ReadWritePaths") == "/srv/models"
    with pytest.raises(PlanError, match="exactly one may"):
        plan(
            text.replace(
                'models_dir = "/srv/models"\n\n', 'models_dir = "/srv/models"\nprune = true\n\n', 1
            )
        )
    # Sharing the main unit's store: ollama.service prunes, every instance reads.
    main_shared = plan(TWO.replace("port = 11436", 'port = 11436\nmodels_dir = "shared"'))
    big = instance(main_shared, "big")
    assert env_of(big)["OLLAMA_MODELS"] == main_shared.value("OLLAMA_MODELS")
    assert env_of(big)["OLLAMA_NOPRUNE"] == "1"


def test_a_shared_store_needs_a_fixed_user() -> None:
    facts = two_gpu_host()
    dynamic = dataclasses.replace(facts, ollama=dataclasses.replace(facts.ollama, user=None))
    with pytest.raises(PlanError, match="needs a fixed service user"):
        plan(TWO.replace("port = 11436", 'port = 11436\nmodels_dir = "shared"'), dynamic)
    big = instance(plan(TWO, dynamic), "big")  # its own store works with DynamicUser
    assert big.value("StateDirectory") == "ollama-big"
    text = files(TWO, dynamic)[TEMPLATE]
    assert "\nDynamicUser=yes\n" in text and "\nUser=" not in text


def test_model_sizes_from_tags() -> None:
    need, how = instance_checks.model_need("llama3.1:70b", None)
    assert 40 * 1024**3 < need < 55 * 1024**3 and "70B parameters at Q4_K_M" in how
    q8, _ = instance_checks.model_need("qwen2.5:7b-instruct-q8_0", None)
    q4, _ = instance_checks.model_need("qwen2.5:7b", None)
    assert q8 > q4
    moe, _ = instance_checks.model_need("mixtral:8x7b", None)
    assert moe > q4 * 7
    assert instance_checks.model_need("smollm:135m", None)[0] < 200 * 1024**2
    assert instance_checks.model_need("mine", 12 * 1024**3) == (
        12 * 1024**3,
        "12.0 GiB as declared",
    )


def test_cpu_only_instances_and_hosts() -> None:
    cpu = host("cpu-small")
    d = plan('[instances.a]\nport = 11435\nmemory_max = "1G"\n', cpu)
    a = instance(d, "a")
    assert a.value("DeviceAllow") is None  # the template has PrivateDevices=yes
    assert "CUDA_VISIBLE_DEVICES" not in env_of(a)
    gpu_host_cpu_instance = instance(plan("[instances.c]\nport = 11435\n"), "c")
    assert values(gpu_host_cpu_instance, "DeviceAllow") == [""]  # no GPU node at all


def test_the_front_door_plan() -> None:
    d = plan(
        TWO
        + '[frontdoor]\nlisten = "127.0.0.1:8080"\nbalance = "model"\n'
        + 'routes = { llama = ["fast"], qwen = ["big"] }\n'
    )
    assert d.instances is not None
    door = d.instances.frontdoor
    assert door is not None
    groups = {g.name: [a for _n, a in g.servers] for g in door.groups}
    assert groups == {
        "ollama_ops": ["127.0.0.1:11436", "127.0.0.1:11435"],
        "ollama_ops_llama": ["127.0.0.1:11435"],
        "ollama_ops_qwen": ["127.0.0.1:11436"],
    }
    assert door.read_timeout >= 600 and door.routes == (
        ("llama", "ollama_ops_llama"),
        ("qwen", "ollama_ops_qwen"),
    )
    slow = TWO.replace(
        "port = 11436", 'port = 11436\nenvironment = { OLLAMA_LOAD_TIMEOUT = "20m" }'
    )
    slow_door = plan(slow + '[frontdoor]\nlisten = "127.0.0.1:8080"\n').instances
    assert slow_door is not None and slow_door.frontdoor is not None
    assert slow_door.frontdoor.read_timeout == 20 * 60 + 60


def test_files_and_boot_wants() -> None:
    out = files(TWO)
    assert set(out) >= {
        TEMPLATE,
        DROPIN.format("fast"),
        DROPIN.format("big"),
        "/etc/systemd/system/multi-user.target.d/50-ollama-ops-instances.conf",
    }
    boot = unit.parse(out["/etc/systemd/system/multi-user.target.d/50-ollama-ops-instances.conf"])
    assert boot.get("Unit", "Wants") == ["ollama@big.service", "ollama@fast.service"]
    assert "/etc/nginx/conf.d/ollama-ops.conf" not in out
    assert not any("ollama@" in p for p in files(""))
