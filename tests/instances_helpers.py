"""Helpers of the instance and front-door tests: hosts with GPU UUIDs, plans, a real nginx."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ollama_ops.model import config
from ollama_ops.model.deployment import Deployment
from ollama_ops.model.facts import HostFacts
from ollama_ops.plan import compose
from ollama_ops.render import nginx as render_nginx
from ollama_ops.render import systemd as render
from tests.helpers import FIXTURES, host

CERT = FIXTURES / "instances" / "localhost.crt"
KEY = FIXTURES / "instances" / "localhost.key"
UUIDS = ("GPU-1f6a3b0c-0000-4000-8000-000000000000", "GPU-2e7b4c1d-0000-4000-8000-000000000001")
REQUIRE_ENVS = ("OLLAMA_OPS_REQUIRE_NGINX", "OLLAMA_OPS_REQUIRE_SYSTEMD")

TWO = """
[instances.fast]
gpus = [0]
port = 11435

[instances.big]
gpus = [1]
port = 11436
"""


def two_gpu_host(**changes: object) -> HostFacts:
    """The 2x H100 fixture with GPU UUIDs, as a live probe reports them."""
    base = host("nvidia-2x-h100-2socket")
    gpus = tuple(dataclasses.replace(g, uuid=u) for g, u in zip(base.gpus, UUIDS, strict=True))
    return dataclasses.replace(base, gpus=gpus, **changes)  # type: ignore[arg-type]


def plan(text: str, facts: HostFacts | None = None) -> Deployment:
    return compose.build(facts or two_gpu_host(), config.loads(text, "cfg"))


def files(text: str, facts: HostFacts | None = None) -> dict[str, str]:
    return render.render(plan(text, facts))


def instance(d: Deployment, name: str) -> Deployment:
    assert d.instances is not None
    return next(i for i in d.instances.instances if i.unit_name == f"ollama@{name}.service")


def env_of(d: Deployment) -> dict[str, str]:
    from ollama_ops.model.deployment import Section

    return {s.key: s.value for s in d.active(Section.ENV) if s.value is not None}


def values(d: Deployment, key: str) -> list[str]:
    return [s.value for s in d.settings if s.key == key and s.value is not None]


# ---------------------------------------------------------------- a real nginx


def need_nginx() -> str:
    """The nginx binary; skip without one, fail when the environment requires it."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        reason = "nginx not installed (apt-get install nginx-light)"
        if any(os.environ.get(name) == "1" for name in REQUIRE_ENVS):
            pytest.fail(f"{reason}, and {' or '.join(REQUIRE_ENVS)}=1", pytrace=False)
        pytest.skip(reason)
    return found


def _as_nobody() -> dict[str, object]:
    """Popen arguments that drop root: nginx runs as an ordinary user in the tests."""
    if os.geteuid() != 0:
        return {}
    return {"user": "nobody", "group": "nogroup", "extra_groups": []}


class Nginx:
    """nginx on a temporary prefix, in front of 127.0.0.1 ports, as a non-root user."""

    def __init__(self, conf_text: str) -> None:
        self.binary = need_nginx()
        self.prefix = Path(tempfile.mkdtemp(prefix="ollama-ops-nginx-test-"))
        self.prefix.chmod(0o755)
        (self.prefix / "frontdoor.conf").write_text(conf_text)
        for source in (CERT, KEY):
            shutil.copy(source, self.prefix / source.name)
        self.conf = self.prefix / "nginx.conf"
        directives = [d for d, _name in render_nginx.TEMP_PATH_DIRECTIVES]
        text = render_nginx.wrapper(
            str(self.prefix / "frontdoor.conf"), str(self.prefix), directives
        )
        self.conf.write_text(
            text.replace("events {", "daemon off;\nworker_processes 1;\nevents {", 1)
        )
        if os.geteuid() == 0:
            for path in [self.prefix, *self.prefix.iterdir()]:
                shutil.chown(path, "nobody", "nogroup")
        self.proc: subprocess.Popen[str] | None = None

    def argv(self, *extra: str) -> list[str]:
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(self.conf), "-e", "stderr", *extra]

    def test(self) -> subprocess.CompletedProcess[str]:
        done: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
            self.argv("-t"), capture_output=True, text=True, timeout=30, check=False, **_as_nobody()
        )
        return done

    def start(self, listen_port: int, timeout: float = 15.0) -> None:
        self.proc = subprocess.Popen(  # type: ignore[call-overload]
            self.argv(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            **_as_nobody(),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"nginx exited: {self.proc.stderr.read() if self.proc.stderr else ''}"
                )
            try:
                httpx.get(f"http://127.0.0.1:{listen_port}/_ready", timeout=1)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise AssertionError("nginx did not listen") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.prefix, ignore_errors=True)


@contextmanager
def running_nginx(conf_text: str, listen_port: int) -> Iterator[Nginx]:
    server = Nginx(conf_text)
    try:
        server.start(listen_port)
        yield server
    finally:
        server.stop()
