"""Facts files: every value that would mislead a plan is refused in one line (issue 7).

Items 4 (a home that is a system directory), 9 (CPU lists and counts without
bound), 10 (memory a kernel cannot have), 11 (duplicate keys and GPUs, lists
that are not lists, trailing newlines, NaN, unprintable names, huge numbers).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ollama_ops.errors import FactsError, OpsError, PlanError
from ollama_ops.model import config, facts
from ollama_ops.plan import compose
from ollama_ops.render import systemd as render
from ollama_ops.unitfile import syntax as unit
from tests.helpers import FIXTURES

BASE: dict[str, Any] = json.loads((FIXTURES / "hosts" / "nvidia-1x24g.json").read_text())


def with_(**changes: Any) -> str:
    data = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        target = data
        *path, last = dotted.split("__")
        for part in path:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return json.dumps(data)


def refused(text: str, needle: str = "") -> str:
    with pytest.raises(FactsError) as info:
        facts.loads(text, "f.json")
    message = str(info.value)
    assert "\n" not in message
    assert message.isprintable()
    assert needle in message
    return message


# ---------------------------------------------------------------- item 11


def test_duplicate_keys_are_refused_at_every_level() -> None:
    refused('{"memory_bytes": 1, "memory_bytes": 2}', "appears twice")
    text = json.dumps(BASE).replace('"user": "ollama"', '"user": "ollama", "user": "root"')
    refused(text, "appears twice")


def test_duplicate_gpu_indexes_and_numa_ids_are_refused() -> None:
    gpu = BASE["gpus"][0]
    refused(with_(gpus=[gpu, gpu]), "listed twice")
    node = BASE["numa_nodes"][0]
    refused(with_(numa_nodes=[node, node]), "listed twice")


def test_gpu_uuids_are_kept_and_each_names_one_gpu() -> None:
    first = {**BASE["gpus"][0], "uuid": "GPU-5c3f0000-1111-2222-3333-444455556666"}
    host = facts.loads(with_(gpus=[first]), "f.json")
    assert host.gpus[0].uuid == first["uuid"]
    assert facts.loads(facts.dumps(host), "f.json") == host
    refused(with_(gpus=[first, {**first, "index": 1}]), "uuid = 'GPU-5c3f")
    refused(with_(gpus__0__uuid=7), "wrong type")


@pytest.mark.parametrize("key", ["gpus", "numa_nodes", "device_nodes"])
@pytest.mark.parametrize("value", [{}, "", 0, "gpu0", {"a": 1}])
def test_lists_must_be_lists(key: str, value: object) -> None:
    refused(with_(**{key: value}), "must be a list")


@pytest.mark.parametrize("value", [[], "", 0, ["ollama"]])
def test_the_install_must_be_an_object(value: object) -> None:
    refused(with_(ollama=value), "ollama must be an object")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ollama__user", "ollama\n"),
        ("ollama__group", "ollama\n"),
        ("ollama__home", "/usr/share/ollama\n"),
        ("ollama__binary", "/usr/local/bin/ollama\n"),
        ("ollama__unit_path", "/etc/systemd/system/ollama.service\n"),
        ("hostname", "ws\x1b[2J\x1b[31mpwned"),
        ("gpus__0__name", "RTX\x1b]0;title\x07"),
        ("gpus__0__pci_bus_id", "0000:01:00.0\r"),
        ("ollama__version", "0.6.2\x1b[0m"),
        ("hostname", "x" * 300),
        ("gpus__0__uuid", "GPU-5c3f\x1b[0m"),
        ("gpus__0__uuid", "GPU-5c3f\n"),
        ("gpus__0__uuid", "GPU-" + "5" * 200),
        ("gpus__0__uuid", "GPU 5c3f"),
        ("gpus__0__uuid", ""),
    ],
)
def test_trailing_newlines_and_escapes_are_refused(field: str, value: str) -> None:
    refused(with_(**{field: value}))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_that_are_not_numbers_are_refused(constant: str) -> None:
    text = json.dumps(BASE).replace(
        '"power_limit_max_w": 450.0', f'"power_limit_max_w": {constant}'
    )
    refused(text, "not a JSON number")


@pytest.mark.parametrize(
    "text",
    [
        '{"memory_bytes": ' + "9" * 5000 + "}",
        "[" * 100000 + "]" * 100000,
        '{"memory_bytes": 1, "gpus": [' + "[" * 50000 + "]" * 50000 + "]}",
    ],
    ids=["5000-digits", "deep-list", "deep-gpu"],
)
def test_huge_numbers_and_deep_nesting_are_one_line(text: str) -> None:
    message = refused(text)
    assert len(message) < 300


# ---------------------------------------------------------------- items 9 and 10


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cpus", 10**10),
        ("cpus", 8193),
        ("memory_bytes", 10**30),
        ("memory_bytes", 2**53),
        ("gpus__0__memory_bytes", 10**30),
        ("gpus__0__index", 10**12),
        ("gpus__0__numa_node", 10**12),
        ("numa_nodes__0__id", 10**9),
        ("systemd_version", 10**9),
        ("gpus__0__clock_max_mhz", 10**20),
        ("gpus__0__power_limit_max_w", 1e300),
    ],
)
def test_counts_and_sizes_no_host_can_have_are_refused(field: str, value: object) -> None:
    refused(with_(**{field: value}), "impossible")


@pytest.mark.parametrize(
    "cpus", ["0-99999999999", "0-8192", "\u0660-\u0667", "0-7\u00a0", "0-3 8", "7-3", "0,,1x"]
)
def test_numa_cpu_lists_outside_the_kernels_syntax_are_refused(cpus: str) -> None:
    refused(with_(numa_nodes=[{"id": 0, "cpus": cpus}]), "CPU list")


def test_numa_cpu_lists_are_kept_in_one_spelling() -> None:
    got = facts.loads(with_(numa_nodes=[{"id": 0, "cpus": "3,0-2,4"}]))
    assert got.numa_nodes[0].cpus == "0-4"


def test_a_memory_only_numa_node_is_never_pinned_to() -> None:
    """A GPU on a node without CPUs (CXL, HBM) must not give AllowedCPUs= (a reset)."""
    text = with_(
        numa_nodes=[{"id": 0, "cpus": "0-15"}, {"id": 1, "cpus": ""}],
        gpus=[{**BASE["gpus"][0], "numa_node": 1}],
    )
    d = compose.build(facts.loads(text), config.DeploymentConfig())
    dropin = render.render(d)[d.dropin_path]
    assert unit.parse(dropin).get("Service", "AllowedCPUs") == []


@settings(max_examples=300, deadline=None)
@given(
    cpus=st.lists(
        st.sampled_from([*"0123456789-, \t\u0660\u00a0", "8191", "8192", "99999999999"]),
        max_size=8,
    ).map("".join)
)
@example("0-99999999999")
def test_any_numa_list_is_refused_or_bounded(cpus: str) -> None:
    try:
        got = facts.loads(with_(numa_nodes=[{"id": 0, "cpus": cpus}]))
    except FactsError as exc:
        assert "\n" not in str(exc)
        return
    listed = facts.parse_cpu_list(got.numa_nodes[0].cpus)
    assert all(0 <= c < 8192 for c in listed)
    assert len(got.cpu_set()) <= 8192


# ---------------------------------------------------------------- item 4


@pytest.mark.parametrize("home", ["/etc", "/etc/.", "/./usr", "/usr/local/.", "/var/lib", "/usr"])
def test_a_facts_home_that_is_a_system_directory_is_refused_by_the_plan(home: str) -> None:
    host = facts.loads(with_(ollama__home=home))
    with pytest.raises(PlanError, match="system directory") as info:
        compose.build(host, config.DeploymentConfig())
    assert "\n" not in str(info.value)


def test_facts_paths_are_normalized() -> None:
    host = facts.loads(
        with_(ollama__home="/usr/share/./ollama/", ollama__binary="/usr/./local/bin/ollama")
    )
    assert host.ollama.home == "/usr/share/ollama"
    assert host.ollama.binary == "/usr/local/bin/ollama"


# ---------------------------------------------------------------- any JSON at all

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
_FIELDS = st.sampled_from(
    [
        "cpus", "memory_bytes", "numa_nodes", "gpus", "device_nodes", "hostname", "ollama",
        "systemd_version", "ollama__user", "ollama__home", "gpus__0__index", "gpus__0__name",
        "gpus__0__uuid", "numa_nodes__0__cpus",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(changes=st.dictionaries(_FIELDS, _JSON, max_size=3))
def test_any_facts_file_plans_or_is_refused_in_one_line(changes: dict[str, Any]) -> None:
    try:
        text = with_(**changes)
    except (KeyError, IndexError, TypeError):
        return  # the change names a path the earlier changes removed
    try:
        host = facts.loads(text, "f.json")
        d = compose.build(host, config.DeploymentConfig())
        render.render(d)
    except OpsError as exc:
        assert "\n" not in str(exc)
        assert str(exc).isprintable()
