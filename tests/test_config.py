from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ollama_ops.errors import ConfigError
from ollama_ops.model import bind, config


def test_empty_config_is_all_rules() -> None:
    cfg = config.loads("")
    assert cfg.service.bind == "127.0.0.1:11434"
    assert cfg.set_keys == frozenset()


def test_full_config_round_trip() -> None:
    cfg = config.loads(
        """
[service]
bind = "0.0.0.0:11434"
allowed_networks = ["10.1.2.0/24", "192.168.0.7"]
models_dir = "/srv/models"
[limits]
os_reserve = "2G"
memory_max = "20GiB"
memory_high = 16106127360
cpu_weight = 200
allowed_cpus = "0-3"
[environment]
OLLAMA_NUM_PARALLEL = 4
OLLAMA_FLASH_ATTENTION = true
[hardening]
relax = ["MemoryDenyWriteExecute"]
read_write_paths = ["/srv/cache"]
"""
    )
    assert cfg.service.allowed_networks == ("10.1.2.0/24", "192.168.0.7/32")
    assert cfg.limits.memory_max == 20 * 1024**3
    assert cfg.limits.os_reserve == 2 * 1024**3
    assert cfg.environment == {"OLLAMA_NUM_PARALLEL": "4", "OLLAMA_FLASH_ATTENTION": "1"}
    assert "limits.cpu_weight" in cfg.set_keys


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[service]\nbnid = 'x'", "did you mean 'bind'"),
        ("[limts]\n", "did you mean 'limits'"),
        ("[limits]\nmemory_max = '-5G'", "is not a size"),
        ("[limits]\nmemory_max = 0", "must be positive"),
        (
            "[limits]\nmemory_high = '50G'\nmemory_max = '40G'",
            "MemoryHigh must be at most MemoryMax",
        ),
        ("[limits]\nmemory_high_percent = 150", "between 0 and 100"),
        ("[service]\nbind = '0.0.0.0:99999'", "out of range"),
        ("[service]\nbind = 'example.com:80'", "not an IP address"),
        ("[service]\nmodels_dir = 'relative/path'", "absolute path"),
        ("[service]\nmodels_dir = '/srv/%h/models'", "absolute path"),
        ("[service]\nmodels_dir = '/srv/../etc'", "absolute path"),
        ('[service]\nunit = "ollama\\n.service"', "control character"),
        ("[service]\nunit = '../evil.service'", "not a service name"),
        ("[environment]\n'BAD NAME' = '1'", "not a valid variable name"),
        ('[environment]\nOLLAMA_KEEP_ALIVE = "5m\\nExecStartPre=/bin/sh"', "control character"),
        ("[environment]\nOLLAMA_HOST = '0.0.0.0'", "service.bind"),
        ("[service]\nallowed_networks = ['10.0.0.0/33']", "not a network"),
        ("[limits]\nallowed_cpus = '0-3;rm'", "CPU list"),
        ("this is = = not toml", "not valid TOML"),
    ],
)
def test_bad_input_is_one_clear_line(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(text, "cfg.toml")
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
    assert message.startswith("cfg.toml")


def test_missing_default_file_is_fine_missing_named_file_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert config.load(None) == config.DeploymentConfig()
    (tmp_path / "absent.toml").write_text("[limits]\ncpu_weight = 7\n")
    assert config.load(None).limits.cpu_weight == 7
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),
        ("1K", 1024),
        ("1.5G", int(1.5 * 1024**3)),
        ("512MiB", 512 * 1024**2),
        ("2T", 2 * 1024**4),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert config.parse_size(text, "x") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:11434", ("127.0.0.1", 11434)),
        ("http://0.0.0.0:8080", ("0.0.0.0", 8080)),
        ("[::1]:11435", ("::1", 11435)),
        ("10.0.0.5", ("10.0.0.5", 11434)),
        (":11434", ("0.0.0.0", 11434)),
    ],
)
def test_validate_bind(value: str, expected: tuple[str, int]) -> None:
    assert bind.validate_bind(value) == expected


@pytest.mark.parametrize(
    "text",
    [
        '[service]\nmodels_dir = "/"\n',
        '[service]\nmodels_dir = "/usr/"\n',
        '[environment]\nOLLAMA_MODELS = "/etc"\n',
        '[environment]\nOLLAMA_MODELS = "/srv/a /"\n',
        '[hardening]\nread_write_paths = ["/var/lib"]\n',
    ],
)
def test_paths_that_would_open_the_system_are_refused(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(text, "cfg")
    assert "\n" not in str(info.value)


# ------------------------------------------------ system directories (issue 7, item 4)


_SPELLINGS = [
    "/etc/.",
    "/./usr",
    "/usr/local/.",
    "/etc/",
    "/usr/./local",
    "/./etc/./",
    "/var/lib/.",
]
_WRITE_KEYS: list[tuple[str, str, Callable[[str], object]]] = [
    ("service", "models_dir", lambda p: p),
    ("hardening", "read_write_paths", lambda p: [p]),
    ("environment", "OLLAMA_MODELS", lambda p: p),
]


@pytest.mark.parametrize("path", [*_SPELLINGS, "/etc/systemd/system", "/usr/lib/ollama"])
@pytest.mark.parametrize(
    ("section", "key", "wrap"), _WRITE_KEYS, ids=[k for _s, k, _w in _WRITE_KEYS]
)
def test_system_directories_are_refused_however_spelled(
    section: str, key: str, wrap: Callable[[str], object], path: str
) -> None:
    with pytest.raises(ConfigError, match="system directory") as info:
        config.from_dict({section: {key: wrap(path)}})
    assert "\n" not in str(info.value)


_COMPONENTS = st.lists(
    st.sampled_from(["", ".", "etc", "usr", "local", "lib", "share", "var", "srv", "ollama", "m"]),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(parts=_COMPONENTS, trailing=st.booleans())
@example(parts=["etc", "."], trailing=False)
@example(parts=[".", "usr"], trailing=False)
def test_a_writable_path_is_never_a_system_directory(parts: list[str], trailing: bool) -> None:
    from ollama_ops.unitfile.paths import SYSTEM_DIRS, SYSTEM_TREES, normalize

    path = "/" + "/".join(parts) + ("/" if trailing else "")
    for section, key, wrap in _WRITE_KEYS:
        try:
            cfg = config.from_dict({section: {key: wrap(path)}})
        except ConfigError as exc:
            assert "\n" not in str(exc)
            continue
        written = (
            cfg.service.models_dir
            or (cfg.hardening.read_write_paths or [None])[0]
            or cfg.environment["OLLAMA_MODELS"]
        )
        assert written == normalize(path)
        assert written not in SYSTEM_DIRS
        assert not any(written.startswith(tree + "/") for tree in SYSTEM_TREES)


# ------------------------------------------------ limits that kill (issue 7, item 10)


@pytest.mark.parametrize("value", [1, "1", "100M", "511M", "0.4G"])
@pytest.mark.parametrize("key", ["memory_max", "memory_high"])
def test_memory_limits_below_what_ollama_needs_are_refused(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match="512 MiB ollama serve needs") as info:
        config.from_dict({"limits": {key: value}})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "value",
    ["99999999999999999999T", 2**70, "1" + "0" * 400, "5000T", 10**5000],
    ids=["20-digit-T", "2^70", "401-digit-string", "5000T", "5001-digit-int"],
)
def test_sizes_above_what_linux_can_address_are_one_line(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        config.from_dict({"limits": {"memory_max": value}})
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    "value", [0, 1, 1023, 2**31, 10**40], ids=["0", "1", "1023", "2^31", "1e40"]
)
def test_nofile_outside_what_the_kernel_and_ollama_need_is_refused(value: int) -> None:
    with pytest.raises(ConfigError, match=r"LIMITS|descriptors") as info:
        config.from_dict({"limits": {"nofile": value}})
    assert "\n" not in str(info.value)


def test_memory_limits_at_the_floor_are_kept() -> None:
    cfg = config.from_dict({"limits": {"memory_max": "512M", "memory_high": "512M"}})
    assert cfg.limits.memory_max == 512 * 1024**2


# ------------------------------------------------ bad values that passed (issue 7, items 9, 11)


@pytest.mark.parametrize(
    "cpus", ["0-99999999999", "0-8192", "\u0660-\u0667", "0-7\u00a0", "0-3\n", "0,", "1-0"]
)
def test_allowed_cpus_outside_the_kernels_cpu_numbers_are_refused(cpus: str) -> None:
    with pytest.raises(ConfigError, match=r"CPU list|control character") as info:
        config.from_dict({"limits": {"allowed_cpus": cpus}})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("var", ["HOME", "LD_PRELOAD", "LD_AUDIT", "OLLAMA_HOST"])
def test_environment_variables_that_undo_the_service_are_refused(var: str) -> None:
    with pytest.raises(ConfigError, match=var) as info:
        config.from_dict({"environment": {var: "/x"}})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "value",
    [2**63, -(2**63) - 1, 10**5000, float("inf"), float("nan"), float("-inf")],
    ids=["2^63", "-2^63-1", "5001-digits", "inf", "nan", "-inf"],
)
def test_environment_numbers_out_of_range_are_one_line(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        config.from_dict({"environment": {"OLLAMA_NUM_PARALLEL": value}})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text",
    ids=lambda t: t[:24].encode("unicode_escape").decode(),
    argvalues=[
        "[limits]\ncpu_weight = " + "9" * 5000 + "\n",  # over Python's 4300-digit limit
        "[environment]\nX = " + "[" * 3000 + "]" * 3000 + "\n",
        '["a\\nb"]\n',
        '[service]\n"bind\\u001b[31m" = 1\n',
        '[environment]\n"A\\nB" = "1"\n',
        "[service]\nunit = '" + "a" * 300 + ".service'\n",
        "[service]\nmodels_dir = '/srv/" + "m" * 300 + "'\n",
        "[service]\nmodels_dir = '/" + "m/" * 2100 + "'\n",
    ],
)
def test_hostile_toml_gives_one_printable_line(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(text, "cfg")
    message = str(info.value)
    assert "\n" not in message
    assert message.isprintable()
    assert len(message) < 400


_KEYS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)
_VALUES = st.recursive(
    st.none().map(lambda _: "x")
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(data=st.dictionaries(
    st.sampled_from(["service", "limits", "environment", "hardening"]) | _KEYS,
    st.dictionaries(
        st.sampled_from([s.key for s in config.SETTINGS] + ["OLLAMA_KEEP_ALIVE"]) | _KEYS,
        _VALUES,
        max_size=4,
    ),
    max_size=3,
))  # fmt: skip
def test_any_config_is_accepted_or_refused_in_one_printable_line(
    data: dict[str, dict[str, object]],
) -> None:
    try:
        config.from_dict(data, "cfg")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert str(exc).isprintable(), str(exc)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-1", "0", "1e9", "x", ""])
def test_wait_seconds_must_be_finite_and_positive(text: str) -> None:
    from ollama_ops.cli.common import wait_seconds

    with pytest.raises(argparse.ArgumentTypeError):
        wait_seconds(text)
    assert wait_seconds("0.5") == 0.5


def test_readme_config_table_is_the_setting_table() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("<!-- config-keys:start -->\n")[1].split("<!-- config-keys:end -->")[0]
    assert block == config.keys_table()


def test_every_setting_row_parses_its_own_example() -> None:
    for row in config.SETTINGS:
        cfg = config.loads(f"[{row.section}]\n{row.key} = {row.example}\n", "example")
        assert row.dotted in cfg.set_keys
        parsed = getattr(getattr(cfg, row.section), row.key)
        assert parsed is not None, row.dotted
