"""The harness itself: each suite boots a real systemd that sandboxes for real."""

from __future__ import annotations

import importlib
import re
import textwrap

import pytest

from .conftest import SUITE_NAMES, BootFactory
from .nspawn import (
    LIB_DIR,
    SRC_PACKAGE,
    SUITES,
    Container,
    create_ollama_user,
    install_ollama_ops,
    install_simulator_as_ollama,
    write_installer_unit,
)


@pytest.fixture(scope="module", params=SUITE_NAMES)
def booted(module_container_factory: BootFactory, request: pytest.FixtureRequest) -> Container:
    """One container per suite, shared by this module's read-mostly tests."""
    suite: str = request.param
    return module_container_factory(suite)


def test_systemd_version_matches_suite(booted: Container) -> None:
    first = booted.exec(["systemctl", "--version"]).stdout.splitlines()[0]
    match = re.match(r"systemd (\d+) ", first)
    assert match, first
    assert int(match.group(1)) == SUITES[booted.suite].systemd
    state = booted.exec(["systemctl", "is-system-running"], check=False).stdout.strip()
    assert state in ("running", "degraded")
    python = booted.exec(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    assert python.stdout.strip() == SUITES[booted.suite].python


def test_protect_system_strict_is_enforced(booted: Container) -> None:
    strict = ["--unit=oo-touch-usr", "-p", "ProtectSystem=strict"]
    done = booted.exec(["systemd-run", "--wait", *strict, "touch", "/usr/x"], check=False)
    assert done.returncode != 0, done
    booted.wait_for(
        lambda: "Read-only file system" in booted.journal("oo-touch-usr.service"),
        "touch's error in the journal",
        timeout=10,
    )
    assert not booted.exists("/usr/x")


def test_service_unit_starts_and_answers_on_its_loopback(booted: Container) -> None:
    booted.write_file(
        "/etc/systemd/system/oo-hello.service",
        textwrap.dedent(
            """\
            [Service]
            ExecStart=/usr/bin/python3 -m http.server --bind 127.0.0.1 8765 --directory /etc
            DynamicUser=yes
            ProtectSystem=strict
            """
        ),
    )
    booted.systemctl("daemon-reload")
    booted.systemctl("start", "oo-hello.service")
    props = booted.wait_active("oo-hello.service")
    assert props["SubState"] == "running"
    assert booted.show("oo-hello.service", "DynamicUser", "ProtectSystem") == {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
    }
    reply = booted.wait_http("http://127.0.0.1:8765/hostname")
    assert reply.status == 200
    assert reply.body == booted.read_file("/etc/hostname")


# A stand-in for ollama_ops.sim until that module exists (Python 3.9, stdlib).
_STAND_IN_SIM = """\
import http.server
import os
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"Ollama is running"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if args != ["serve"]:
        print("usage: ollama serve", file=sys.stderr)
        return 2
    keydir = os.path.join(os.environ["HOME"], ".ollama")
    os.makedirs(keydir, mode=0o755, exist_ok=True)
    fd = os.open(os.path.join(keydir, "id_ed25519"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
    http.server.HTTPServer((host, int(port)), Handler).serve_forever()
    return 0
"""


def test_installer_setup_serves(container_factory: BootFactory, suite: str) -> None:
    container = container_factory(suite)
    install_ollama_ops(container)
    if not (SRC_PACKAGE / "sim" / "cli.py").exists():
        container.write_file(f"{LIB_DIR}/ollama_ops/sim/__init__.py", "")
        container.write_file(f"{LIB_DIR}/ollama_ops/sim/cli.py", _STAND_IN_SIM)
    install_simulator_as_ollama(container)
    create_ollama_user(container)
    write_installer_unit(container, start=True)

    container.wait_active("ollama.service")
    reply = container.wait_http("http://127.0.0.1:11434/")
    assert (reply.status, reply.body) == (200, "Ollama is running")
    assert container.show("ollama.service", "User", "Restart", "UnitFileState") == {
        "User": "ollama",
        "Restart": "always",
        "UnitFileState": "enabled",
    }
    key = container.exec(["stat", "-c", "%U %a", "/usr/share/ollama/.ollama/id_ed25519"])
    assert key.stdout.split() == ["ollama", "600"]

    imports = "aiohttp"
    if SUITES[suite].runs_ollama_ops:
        imports += ", httpx, psutil, pynvml, ollama_ops.model.facts"
    container.exec(
        ["python3", "-I", "-c", f"import sys; sys.path.insert(0, {LIB_DIR!r}); import {imports}"]
    )


@pytest.mark.parametrize("container", ["bookworm", "trixie"], indirect=True)
def test_ollama_ops_launcher_runs_the_cli(container: Container) -> None:
    try:
        importlib.import_module("ollama_ops.cli.main")
    except ImportError as exc:  # broken for everyone: the unit tests say so, not this tier
        pytest.skip(f"ollama_ops.cli.main does not import on the host either: {exc}")
    install_ollama_ops(container)
    done = container.exec(["ollama-ops", "--help"])
    assert "usage" in done.stdout.lower()


@pytest.fixture(params=SUITE_NAMES)
def suite(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
