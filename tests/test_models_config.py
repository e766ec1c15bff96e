"""[models] and service.egress: parsing, and what the plan writes and says for each."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollama_ops.errors import ConfigError, PlanError
from ollama_ops.model import config
from ollama_ops.model.deployment import Deployment, Source
from ollama_ops.models import rules, spec
from ollama_ops.plan import compose
from ollama_ops.render.systemd import render
from tests.helpers import host

DROPIN = "/etc/systemd/system/ollama.service.d/50-ollama-ops.conf"


def cfg(text: str) -> config.DeploymentConfig:
    return config.loads(text, "test.toml")


def test_defaults_keep_egress_closed_and_no_models() -> None:
    c = config.DeploymentConfig()
    assert c.service.egress == "closed"
    assert c.models == config.ModelsConfig((), (), "-1")
    assert rules.wanted(c.models) == ()


def test_a_models_table_is_read_in_ollamas_short_names() -> None:
    c = cfg(
        '[models]\npull = ["llama3.2", "library/qwen3:0.6b", "example.com/team/m:v1"]\n'
        'warm = ["llama3.2:latest", "phi4"]\nkeep_alive = "30m"\n'
    )
    assert c.models.pull == ("llama3.2:latest", "qwen3:0.6b", "example.com/team/m:v1")
    assert c.models.warm == ("llama3.2:latest", "phi4:latest")
    assert c.models.keep_alive == "30m"
    # warm implies pull, once
    assert rules.wanted(c.models) == (
        "llama3.2:latest",
        "qwen3:0.6b",
        "example.com/team/m:v1",
        "phi4:latest",
    )
    assert {"models.pull", "models.warm", "models.keep_alive"} <= c.set_keys


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[models]\npull = "llama3.2"', "must be a list"),
        ("[models]\npull = [3]", "must be a model name"),
        ('[models]\npull = ["a/b/c/d"]', "not a model name Ollama accepts"),
        ('[models]\npull = ["-x"]', "not a model name"),
        ('[models]\npull = ["../etc:x"]', "not a model name"),
        ('[models]\npull = ["x y"]', "not a model name"),
        ('[models]\npull = ["llama3.2", "llama3.2:latest"]', "repeats 'llama3.2:latest'"),
        ("[models]\nkeep_alive = 0", "unload a warmed model at once"),
        ('[models]\nkeep_alive = "0s"', "unload a warmed model at once"),
        ('[models]\nkeep_alive = "0h0m"', "unload"),
        ('[models]\nkeep_alive = "forever"', "not a keep-alive"),
        ("[models]\nkeep_alive = 1.5", "not a keep-alive"),
        ("[models]\nkeep_alive = true", "not a keep-alive"),
        ('[models]\nkeep_alive = "5 m"', "not a keep-alive"),
        ("[models]\nkeep_alive = 99999999999999999999", "not a keep-alive"),
        ('[models]\nkeep_alive = "9999999999h"', "longer than Ollama accepts"),
        ('[models]\nwarmup = ["x"]', "did you mean 'warm'"),
        ('[service]\negress = "yes"', 'must be "closed"'),
        ("[service]\negress = true", 'must be "closed"'),
    ],
)
def test_bad_values_are_one_line_errors(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg(text)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "wire"),
    [("-1", -1), (-1, -1), ("600", 600), ("30m", "30m"), ("1h30m", "1h30m"), ("-1s", "-1s"),
     ("1.5h", "1.5h"), (3600, 3600)],
)  # fmt: skip
def test_keep_alive_goes_on_the_wire_as_ollama_reads_it(value: object, wire: int | str) -> None:
    text = spec.parse_keep_alive(value, "models.keep_alive")
    assert spec.keep_alive_wire(text) == wire


@given(st.text(max_size=40))
def test_any_name_is_accepted_or_refused_in_one_line(text: str) -> None:
    try:
        name = spec.model_name(text, "models.pull[0]")
    except ConfigError as exc:
        assert "\n" not in str(exc).replace(repr(text), "")
        return
    assert spec.parse_name(name) is not None  # the short form parses back
    assert spec.short_name(name) == name
    assert ".." not in name.split(":")[0].split("/")


def _plan(text: str = "", fixture: str = "cpu-small") -> tuple[Deployment, str]:
    d = compose.build(host(fixture), cfg(text))
    return d, render(d)[DROPIN]


def test_closed_egress_is_the_default_and_plan_says_how_to_pull() -> None:
    d, dropin = _plan()
    assert "IPAddressDeny=any" in dropin and "IPAddressAllow=localhost" in dropin
    assert any("ollama-ops pull MODEL" in n for n in d.notes)


def test_open_egress_writes_no_ip_filter_and_says_why() -> None:
    d, dropin = _plan('[service]\negress = "open"\n')
    assert "IPAddressDeny" not in dropin and "IPAddressAllow" not in dropin
    deny = [s for s in d.settings if s.key == "IPAddressDeny"]
    assert [(s.value, s.source) for s in deny] == [(None, Source.CONFIG)]
    assert "compromised" in deny[0].reason
    assert any('"open"' in n and "any address" in n for n in d.notes)


@pytest.mark.parametrize(
    "text",
    [
        '[service]\negress = "open"\nbind = "0.0.0.0:11434"\nallowed_networks = ["10.0.0.0/8"]\n',
        '[service]\nbind = "10.0.0.5:11434"\nallowed_networks = ["10.0.0.0/8"]\n'
        '[models]\nwarm = ["llama3.2"]\n',
    ],
)
def test_combinations_that_expose_the_api_are_refused(text: str) -> None:
    with pytest.raises(PlanError) as info:
        _plan(text)
    assert "\n" not in str(info.value) and "ollama-ops pull --force" in str(info.value)


def test_models_with_loopback_and_a_network_bind_without_models_plan_fine() -> None:
    d, _ = _plan('[models]\npull = ["llama3.2:3b"]\nwarm = ["phi4"]\nkeep_alive = "2h"\n')
    assert (
        "[models]: after a live apply, pulls what is missing of llama3.2:3b, phi4:latest; "
        "keeps warm phi4:latest (keep_alive 2h); checked with /api/tags and /api/ps"
    ) in d.notes
    _, dropin = _plan('[service]\nbind = "0.0.0.0:11434"\nallowed_networks = ["10.0.0.0/8"]\n')
    assert "IPAddressDeny=any" in dropin and "IPAddressAllow=10.0.0.0/8" in dropin


def test_config_show_lists_the_new_keys() -> None:
    import io
    import json

    from ollama_ops.cli import main as cli
    from ollama_ops.cli.common import Env

    out = io.StringIO()
    code = cli.main(["config", "keys", "--json"], Env(stdout=out, stderr=io.StringIO()))
    keys = {row["key"] for row in json.loads(out.getvalue())}
    assert code == 0
    assert {"service.egress", "models.pull", "models.warm", "models.keep_alive"} <= keys
