"""Shared test helpers: fixture hosts and a fake systemctl."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ollama_ops.errors import CommandError
from ollama_ops.model import facts
from ollama_ops.runtime import Runtime

FIXTURES = Path(__file__).parent / "fixtures"
HOSTS = sorted((FIXTURES / "hosts").glob("*.json"))


def host(name: str) -> facts.HostFacts:
    return facts.loads((FIXTURES / "hosts" / f"{name}.json").read_text(), name)


INSTALLER_UNIT = """\
[Unit]
Description=Ollama Service
After=network-online.target

[Service]
ExecStart=/usr/local/bin/ollama serve
User=ollama
Group=ollama
Restart=always
RestartSec=3
Environment="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

[Install]
WantedBy=default.target
"""


class FakeSystemctl:
    """Records calls; `fail_start` makes the unit crash-loop like a bad config.

    `down` is a host whose systemd does not answer (a container without it as PID 1).
    `on_call` sees every recorded call first (a test's model of systemd, or a failure).
    """

    def __init__(
        self, props: dict[str, str] | None = None, *, fail_start: bool = False, down: bool = False
    ) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.props = props or {}
        self.fail_start = fail_start
        self.down = down
        self.started = False
        self.on_call: Callable[[tuple[str, ...]], None] | None = None

    def _record(self, *call: str) -> None:
        self.calls.append(call)
        if self.on_call is not None:
            self.on_call(call)

    def manager_version(self) -> str:
        self.calls.append(("show", "-p", "Version"))
        if self.down:
            raise CommandError(
                "systemctl show -p Version --value exited 1: System has not been booted with "
                "systemd as init system (PID 1). Can't operate."
            )
        return "255.4-1"

    def daemon_reload(self) -> None:
        self._record("daemon-reload")

    def restart(self, unit: str) -> None:
        self.calls.append(("restart", unit))
        self.started = True

    def enable(self, unit: str) -> None:
        self.calls.append(("enable", unit))

    def stop(self, unit: str) -> None:
        self.calls.append(("stop", unit))

    def disable(self, unit: str) -> None:
        self.calls.append(("disable", unit))

    def reset_failed(self, unit: str) -> None:
        self.calls.append(("reset-failed", unit))

    def show(self, unit: str, props: Sequence[str]) -> dict[str, str]:
        state = {
            "ActiveState": "activating" if self.fail_start else "active",
            "SubState": "auto-restart" if self.fail_start else "running",
            "Result": "exit-code" if self.fail_start else "success",
            "NRestarts": "0",
            "ExecMainStatus": "1" if self.fail_start else "0",
        }
        state.update(self.props)
        return {p: state.get(p, "") for p in props}

    def set_property_runtime(self, unit: str, assignments: Sequence[str]) -> None:
        self._record("set-property", "--runtime", unit, *assignments)
        for assignment in assignments:
            key, _, value = assignment.partition("=")
            self.props[key] = value

    def journal_tail(self, unit: str, lines: int = 5) -> list[str]:
        return ["Error: mkdir /srv/models/blobs: permission denied"] if self.fail_start else []


class FakeOllama:
    """The Ollama API as apply's health wait sees it; records the URLs asked."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.asked: list[str] = []

    def is_up(self, base_url: str, timeout: float = 2.0) -> bool:
        self.asked.append(base_url)
        return self.up

    def version(self, base_url: str, timeout: float = 2.0) -> str | None:
        return "0.33.0" if self.up else None


def fake_runtime(
    root: Path,
    systemctl: FakeSystemctl | None = None,
    *,
    ollama: FakeOllama | None = None,
    live: bool | None = None,
) -> Runtime:
    """A runtime on ``root``: live (with ``systemctl``) when a fake systemctl is given."""
    return Runtime(
        root=root,
        ollama=ollama or FakeOllama(),
        sleep=lambda seconds: None,
        make_systemctl=(lambda: systemctl) if systemctl is not None else None,
        live_override=live if live is not None else (True if systemctl is not None else None),
    )
