"""[instances.NAME] and [frontdoor]: parsing, and bad input as one line naming key and fix."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_ops.errors import ConfigError
from ollama_ops.model import config
from ollama_ops.model.instances import SHARED, ModelDecl, check_name, unit_name


def test_full_instance_and_frontdoor_round_trip() -> None:
    cfg = config.loads(
        """
[instances.fast]
gpus = [0, "GPU-1f6a3b0c-0000-4000-8000-000000000000"]
port = 11435
bind = "10.1.2.3"
allowed_networks = ["10.0.0.0/8"]
memory_high = "20G"
memory_max = "24G"
cpu_weight = 200
allowed_cpus = "0-7"
models_dir = "shared"
prune = false
share_gpus = true
models = { "mine:latest" = "12G" }
environment = { OLLAMA_KEEP_ALIVE = "30m", OLLAMA_DEBUG = true }

[instances.b]
port = 11436
models = ["llama3.2:3b"]

[frontdoor]
listen = "0.0.0.0:8443"
balance = "model"
routes = { llama = ["fast"], "qwen2.5" = ["b"] }
instances = ["fast", "b"]
max_fails = 3
fail_timeout = "30s"
read_timeout = "15m"
connect_timeout = 2
tls_certificate = "/etc/ssl/ollama.crt"
tls_certificate_key = "/etc/ssl/ollama.key"
allowed_networks = ["10.0.0.0/8"]
server_name = "llm.example.com"
""",
        "cfg",
    )
    b, fast = cfg.instances  # name order
    assert fast.name == "fast" and fast.gpus == (0, "GPU-1f6a3b0c-0000-4000-8000-000000000000")
    assert fast.memory_max == 24 * 1024**3 and fast.memory_high == 20 * 1024**3
    assert fast.models_dir == SHARED and fast.prune is False and fast.share_gpus
    assert fast.models == (ModelDecl("mine:latest", 12 * 1024**3),)
    assert fast.environment == {"OLLAMA_KEEP_ALIVE": "30m", "OLLAMA_DEBUG": "1"}
    assert b.models == (ModelDecl("llama3.2:3b"),) and b.gpus == () and b.bind == "127.0.0.1"
    door = cfg.frontdoor
    assert door is not None
    assert door.routes == (("llama", ("fast",)), ("qwen2.5", ("b",)))
    assert (door.fail_timeout, door.read_timeout, door.connect_timeout) == (30, 900, 2)
    assert "frontdoor.listen" in cfg.set_keys and "instances.fast" in cfg.set_keys


def test_no_sections_means_no_instances() -> None:
    cfg = config.loads("")
    assert cfg.instances == () and cfg.frontdoor is None


BAD = [
    ("[instances.a]\ngpus = [0]\n", "instances.a.port is missing; add port"),
    ("[instances.a]\nport = 0\n", "instances.a.port = 0 must be a whole number from 1 to 65535"),
    ("[instances.a]\nport = 11435\nprot = 1\n", "did you mean 'port'?"),
    ("[instances.a]\nport = 11435\ngpus = [-1]\n", "instances.a.gpus[0] = -1 is not a GPU"),
    ("[instances.a]\nport = 11435\ngpus = [0, 0]\n", "lists GPU 0 twice"),
    ('[instances.a]\nport = 11435\nbind = "0.0.0.0:80"\n', "must be an IP address alone"),
    (
        '[instances.a]\nport = 11435\nmemory_max = "lots"\n',
        "instances.a.memory_max = lots is not a size",
    ),
    (
        '[instances.a]\nport = 11435\nmemory_high = "9G"\nmemory_max = "8G"\n',
        "memory_high is above memory_max",
    ),
    ('[instances.a]\nport = 11435\nmodels_dir = "/srv/../etc"\n', "must be an absolute path"),
    ('[instances.a]\nport = 11435\nmodels_dir = "/var"\n', "must be an absolute path of its own"),
    (
        '[instances.a]\nport = 11435\nenvironment = { OLLAMA_HOST = "0.0.0.0" }\n',
        "ollama-ops sets OLLAMA_HOST for each instance; set port and bind",
    ),
    (
        '[instances.a]\nport = 11435\nenvironment = { CUDA_VISIBLE_DEVICES = "1" }\n',
        "set gpus",
    ),
    ('[instances.a]\nport = 11435\nallowed_cpus = "some"\n', 'write "auto", "none"'),
    (
        "[instances.a]\nport = 11435\n[instances.b]\nport = 11435\n",
        "instances.b.port = 11435 is also instances.a's port",
    ),
    ("[instances]\na = 1\n", "instances.a must be a table"),
    ('[instances."a b"]\nport = 11435\n', "instance name 'a b' is not allowed"),
    ('[frontdoor]\nbalance = "least_conn"\n', "frontdoor.listen is missing"),
    ('[frontdoor]\nlisten = "127.0.0.1:8080"\nbalance = "random"\n', 'use "least_conn"'),
    ('[frontdoor]\nlisten = "127.0.0.1:8080"\nbalance = "model"\n', "needs routes"),
    (
        '[frontdoor]\nlisten = "127.0.0.1:8080"\nroutes = { llama = ["a"] }\n',
        'set balance = "model"',
    ),
    (
        '[frontdoor]\nlisten = "127.0.0.1:8080"\ntls_certificate = "/etc/ssl/a.crt"\n',
        "TLS needs both",
    ),
    ('[frontdoor]\nlisten = "127.0.0.1:8080"\npath = "/etc/passwd"\n', "under /etc/nginx/"),
    ('[frontdoor]\nlisten = "127.0.0.1:8080"\nserver_name = "a;b"\n', "server_name"),
    ('[frontdoor]\nlisten = "127.0.0.1:8080"\nmax_fail = 1\n', "did you mean 'max_fails'?"),
    ('[frontdoor]\nlisten = "127.0.0.1:8080"\nfail_timeout = "soon"\n', "fail_timeout"),
]


@pytest.mark.parametrize(("text", "needle"), BAD)
def test_bad_input_is_one_line_naming_the_key(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.loads(text, "cfg")
    message = str(caught.value)
    assert needle in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["../x", "a b", "a%b", "a/b", "-a", "a.b", "a@b", "", "ä"])
def test_unsafe_instance_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="is not allowed"):
        check_name(name, "test")


def test_a_name_too_long_for_a_unit_is_refused_with_the_limit() -> None:
    longest = "x" * 238  # ollama@<238>.service.d is 255 characters, systemd's limit
    assert check_name(longest, "test") == longest
    assert len(unit_name("ollama.service", longest) + ".d") == 255
    with pytest.raises(ConfigError, match="use at most 238"):
        check_name("x" * 239, "test")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=260))
def test_every_name_is_safe_or_refused_in_one_line(name: str) -> None:
    try:
        check_name(name, "test")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    # Accepted: a plain systemd instance name, a plain path component, an nginx word.
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name)
    assert len(unit_name("ollama.service", name)) + 2 <= 255
