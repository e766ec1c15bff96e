"""Rendered files: structure, and no value escapes its line (property tests)."""

from __future__ import annotations

import dataclasses
import ipaddress
import posixpath

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ollama_ops.errors import ConfigError, OpsError, PlanError
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


# ------------------------------------- config strings land as exactly their words (issue 7, item 1)


# Text that tries every way of turning one word into several: blanks, quotes,
# escapes, specifiers, zone ids, Unicode digits and spaces, special words.
_TRICKY = st.lists(
    st.sampled_from(
        [
            *list("0123456789abcdef:./-[]%~ \t\"'\\,@_+=#;\xa0\u2009٠٣"),
            "any",
            "localhost",
            "fe80::1",
            "10.0.0.0/8",
            "/srv/",
            "/etc",
            "..",
            "/.",
            "%x any",
        ]
    ),
    max_size=14,
).map("".join)


def _words(text: str, key: str) -> list[str]:
    """The words systemd reads from every assignment of ``key`` in [Service], in order."""
    return [w for v in unit.parse(text).get("Service", key) for w in unit.split_words(v)]


def _plan(
    data: dict[str, object], facts: str = "cpu-small"
) -> tuple[deployment_mod.Deployment, str] | None:
    """Plan and render; None when refused, with a one-line message."""
    try:
        d = plan.build(host(facts), config.from_dict(data, "cfg"))
        return d, render.render(d)[d.dropin_path]
    except (ConfigError, PlanError, OpsError) as exc:
        assert "\n" not in str(exc)
        return None


@settings(max_examples=400, deadline=None)
@given(net=_TRICKY)
@example("fe80::1%x any")
@example("10.0.0.0/8 any")
@example("::/0%eth0")
def test_allowed_network_lands_as_exactly_one_address_word(net: str) -> None:
    done = _plan({"service": {"bind": "0.0.0.0:11434", "allowed_networks": [net]}})
    if done is None:
        return
    _d, text = done
    words = _words(text, "IPAddressAllow")
    assert words[0] == "localhost" and len(words) == 2, words
    assert "%" not in words[1] and words[1] != "any"
    assert ipaddress.ip_network(words[1]) == ipaddress.ip_network(net.strip(), strict=False)


@settings(max_examples=400, deadline=None)
@given(bind_host=_TRICKY)
@example("fe80::1%x any")
@example("fe80::1%eth0")
def test_bind_address_lands_as_exactly_one_address_word(bind_host: str) -> None:
    bind = f"[{bind_host}]:11434"
    done = _plan({"service": {"bind": bind, "allowed_networks": ["10.0.0.0/8"]}})
    if done is None:
        return
    d, text = done
    words = _words(text, "IPAddressAllow")
    expected = ["localhost"] if d.bind_host in ("0.0.0.0", "::") else ["localhost", d.bind_host]
    assert words == [*expected, "10.0.0.0/8"]
    assert all("%" not in w for w in words)
    if len(words) == 3:
        assert ipaddress.ip_address(words[1]) == ipaddress.ip_address(bind_host.strip())


def test_zone_ids_in_the_bind_address_are_refused() -> None:
    for bind in ("[fe80::1%x any]:11434", "[fe80::1%eth0]:11434", "fe80::1%eth0"):
        with pytest.raises(ConfigError, match="zone") as info:
            config.from_dict({"service": {"bind": bind, "allowed_networks": ["10.0.0.0/8"]}})
        assert "\n" not in str(info.value)


@settings(max_examples=400, deadline=None)
@given(path=_TRICKY.map(lambda t: "/" + t))
@example("/srv/a b")
@example("/srv/%h")
@example("/etc/.")
def test_write_path_lands_as_exactly_one_path_word(path: str) -> None:
    cases: list[dict[str, object]] = [
        {"hardening": {"read_write_paths": [path]}},
        {"service": {"models_dir": path}},
        {"environment": {"OLLAMA_MODELS": path}},
    ]
    for data in cases:
        done = _plan(data)
        if done is None:
            continue
        _d, text = done
        words = _words(text, "ReadWritePaths")
        assert words[0] == "/usr/share/ollama"
        norm = posixpath.normpath(path).replace("//", "/")
        assert words[1:] == ([] if norm.startswith("/usr/share/ollama/") else [norm]), words


_CPU_TEXT = st.lists(
    st.sampled_from([*"0123456789-, \u0660\u0663\u00a0", "8191", "8192", "99999999999"]),
    max_size=10,
).map("".join)


def _cpus(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


@settings(max_examples=400, deadline=None)
@given(cpus=_CPU_TEXT)
@example("0-99999999999")
@example("\u0660-\u0667")
def test_allowed_cpus_land_as_exactly_the_cpus_named(cpus: str) -> None:
    done = _plan({"limits": {"allowed_cpus": cpus}}, "nvidia-2x-h100-2socket")
    if done is None:
        return
    _d, text = done
    if cpus in ("auto", "none"):
        return
    (word,) = _words(text, "AllowedCPUs")
    assert _cpus(word) == _cpus(cpus)
    assert max(_cpus(word)) < 8192


@settings(max_examples=300, deadline=None)
@given(binary=_TRICKY.map(lambda t: "/" + t))
def test_binary_lands_as_exactly_one_program_word(binary: str) -> None:
    done = _plan({"service": {"binary": binary}})
    if done is None:
        return
    _d, text = done
    (line,) = [v for v in unit.parse(text).get("Service", "ExecStart") if v]
    assert unit.split_words(line) == [posixpath.normpath(binary).replace("//", "/"), "serve"]
