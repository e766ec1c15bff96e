"""Rendered files: structure, and no value escapes its line (property tests)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_ops.errors import ConfigError, OpsError
from ollama_ops.model import config
from ollama_ops.model import deployment as deployment_mod
from ollama_ops.plan import compose as plan
from ollama_ops.render import systemd as render
from ollama_ops.unitfile import syntax as unit
from tests.helpers import HOSTS, host


@pytest.mark.parametrize("path", HOSTS, ids=lambda p: p.stem)
def test_rendered_dropin_parses_back_to_the_plan(path: object) -> None:
    name = getattr(path, "stem", "")
    d = plan.build(host(name), config.DeploymentConfig())
    text = render.render(d)[d.dropin_path]
    parsed = unit.parse(text, d.dropin_path)
    written = [(a.section, a.key) for a in parsed.assignments]
    expected = [
        (
            "Service" if s.section is deployment_mod.Section.ENV else s.section.value,
            "Environment" if s.section is deployment_mod.Section.ENV else s.key,
        )
        for s in d.settings
        if s.value is not None
    ]
    assert sorted(written) == sorted(expected)
    env = unit.parse_environment(parsed.get("Service", "Environment"))
    assert env["OLLAMA_HOST"] == "127.0.0.1:11434"


def test_no_install_section_in_dropin_but_in_base_unit() -> None:
    facts = dataclasses.replace(
        host("cpu-small"), ollama=dataclasses.replace(host("cpu-small").ollama, unit_path=None)
    )
    d = plan.build(facts, config.DeploymentConfig())
    files = render.render(d)
    assert "[Install]" not in files[d.dropin_path]
    base = unit.parse(files[d.unit_path])
    assert base.get("Install", "WantedBy") == ["multi-user.target"]
    assert base.get("Service", "User") == ["ollama"]


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


def _rendered_or_refused(
    data: dict[str, object],
) -> tuple[config.DeploymentConfig, deployment_mod.Deployment, str] | None:
    """Plan and render cpu-small with ``data`` as the config; None if refused in one line."""
    try:
        cfg = config.from_dict(data, "cfg")
        d = plan.build(host("cpu-small"), cfg)
        return cfg, d, render.render(d)[d.dropin_path]
    except (ConfigError, OpsError) as exc:
        assert "\n" not in str(exc)
        return None


@settings(max_examples=300, deadline=None)
@given(value=_text)
def test_environment_values_never_escape_their_line(value: str) -> None:
    """Any value either is refused with a clear error or comes back exactly, on one line."""
    done = _rendered_or_refused({"environment": {"OLLAMA_KEEP_ALIVE": value}})
    if done is None:
        return
    _, d, text = done
    parsed = unit.parse(text)
    env_lines = parsed.get("Service", "Environment")
    assert len(env_lines) == len(
        [s for s in d.settings if s.section is deployment_mod.Section.ENV and s.value is not None]
    )
    assert unit.parse_environment(env_lines)["OLLAMA_KEEP_ALIVE"] == value
    # nothing but our own keys appeared
    assert {a.key for a in parsed.assignments} <= {s.key for s in d.settings} | {"Environment"}


@settings(max_examples=200, deadline=None)
@given(path=_text)
def test_paths_never_escape_their_line(path: str) -> None:
    done = _rendered_or_refused({"service": {"models_dir": path}})
    if done is None:
        return
    cfg, _, text = done
    parsed = unit.parse(text)
    assert cfg.service.models_dir is not None
    assert cfg.service.models_dir in parsed.get(
        "Service", "ReadWritePaths"
    ) or cfg.service.models_dir.startswith("/usr/share/ollama")
    assert "%" not in cfg.service.models_dir or "%%" in text


@settings(max_examples=200, deadline=None)
@given(name=_text)
def test_unit_names_are_validated(name: str) -> None:
    try:
        cfg = config.from_dict({"service": {"unit": name}}, "cfg")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    d = plan.build(host("cpu-small"), cfg)
    assert "/" not in d.unit_name
    assert "\n" not in d.unit_name
    assert ".." not in d.dropin_path
    assert d.dropin_path == f"/etc/systemd/system/{d.unit_name}.d/50-ollama-ops.conf"


def test_percent_in_values_is_escaped() -> None:
    cfg = config.from_dict({"environment": {"HTTPS_PROXY": "http://proxy:3128/%h"}}, "cfg")
    d = plan.build(host("cpu-small"), cfg)
    text = render.render(d)[d.dropin_path]
    assert "%%h" in text
    assert (
        unit.parse_environment(unit.parse(text).get("Service", "Environment"))["HTTPS_PROXY"]
        == "http://proxy:3128/%h"
    )
