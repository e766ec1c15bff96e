from __future__ import annotations

from pathlib import Path

import pytest

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
