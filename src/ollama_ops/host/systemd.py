"""systemctl, journalctl and systemd-analyze, through the one subprocess wrapper."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ollama_ops.errors import CommandError

if TYPE_CHECKING:
    from ollama_ops.runtime import Runner
from ollama_ops.host import proc


def require(program: str) -> None:
    if shutil.which(program) is None:
        raise CommandError(
            f"{program} not found on PATH; install systemd or use --root DIR to only write files"
        )


class SystemManager(Protocol):
    """What apply needs from systemd; tests pass a fake."""

    def manager_version(self) -> str: ...
    def daemon_reload(self) -> None: ...
    def restart(self, unit: str) -> None: ...
    def enable(self, unit: str) -> None: ...
    def stop(self, unit: str) -> None: ...
    def disable(self, unit: str) -> None: ...
    def reset_failed(self, unit: str) -> None: ...
    def show(self, unit: str, props: Sequence[str]) -> dict[str, str]: ...
    def set_property_runtime(self, unit: str, assignments: Sequence[str]) -> None: ...
    def journal_tail(self, unit: str, lines: int = 5) -> list[str]: ...


class Systemctl:
    """The live system manager, through systemctl and journalctl."""

    def __init__(self, run: Runner = proc.run) -> None:
        self.run = run

    def manager_version(self) -> str:
        """The running manager's version; CommandError when systemd does not answer."""
        out = self.run(["systemctl", "show", "-p", "Version", "--value"], timeout=30).stdout
        if not out.strip():
            raise CommandError("systemctl show -p Version printed nothing")
        return out.strip()

    def daemon_reload(self) -> None:
        self.run(["systemctl", "daemon-reload"], timeout=120)

    def restart(self, unit: str) -> None:
        self.run(["systemctl", "restart", unit], timeout=300)

    def enable(self, unit: str) -> None:
        self.run(["systemctl", "enable", unit], timeout=60)

    def stop(self, unit: str) -> None:
        self.run(["systemctl", "stop", unit], check=False, timeout=120)

    def disable(self, unit: str) -> None:
        self.run(["systemctl", "disable", unit], check=False, timeout=60)

    def reset_failed(self, unit: str) -> None:
        self.run(["systemctl", "reset-failed", unit], check=False, timeout=60)

    def show(self, unit: str, props: Sequence[str]) -> dict[str, str]:
        out = self.run(["systemctl", "show", unit, "-p", ",".join(props)], timeout=60).stdout
        return parse_show(out)

    def set_property_runtime(self, unit: str, assignments: Sequence[str]) -> None:
        """`systemctl set-property --runtime`: applied to the running unit, gone at reboot."""
        self.run(["systemctl", "set-property", "--runtime", unit, *assignments], timeout=60)

    def journal_tail(self, unit: str, lines: int = 5) -> list[str]:
        # With LogNamespace= the service's own lines are in that namespace's journal.
        namespace = self.show(unit, ["LogNamespace"]).get("LogNamespace", "")
        extra = [f"--namespace=+{namespace}"] if namespace else []
        done = self.run(
            ["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat", *extra],
            check=False,
            timeout=30,
        )
        return [line for line in done.stdout.splitlines() if line.strip()]


def parse_show(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def parse_systemctl_version(text: str) -> int | None:
    """``systemd 252 (252.38-1~deb12u1)`` on the first line -> 252."""
    first = text.strip().splitlines()[:1]
    match = re.match(r"systemd\s+(\d+)", first[0]) if first else None
    return int(match.group(1)) if match else None


def installed_version(run: Runner = proc.run) -> int | None:
    """The version of the systemctl on PATH; None when it is missing or says nothing."""
    try:
        done = run(["systemctl", "--version"], check=False, timeout=10.0)
    except (CommandError, OSError):
        return None
    return parse_systemctl_version(done.stdout)


@dataclass(frozen=True)
class SecurityScore:
    exposure: float
    findings: tuple[dict[str, object], ...]


def security_offline(root: Path, unit: str, run: Runner = proc.run) -> SecurityScore:
    """`systemd-analyze security --offline` on files under root: the exposure score 0-10.

    A missing systemd-analyze is the runner's CommandError, like any failure to run it.
    """
    base = ["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager"]
    done = run([*base, "--json=short", unit], check=False, timeout=60)
    try:
        rows = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CommandError(f"systemd-analyze security {unit}: {tail}") from exc
    total = 0.0
    for row in rows:
        exposure = row.get("exposure")
        if isinstance(exposure, int | float):
            total += float(exposure)
    text = run([*base, unit], check=False, timeout=60).stdout
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", text)
    return SecurityScore(exposure=float(match.group(1)) if match else total, findings=tuple(rows))


def verify(root: Path, unit: str) -> list[str]:
    """`systemd-analyze verify` warnings for a unit under root (empty: clean)."""
    require("systemd-analyze")
    done = proc.run(["systemd-analyze", "verify", f"--root={root}", unit], check=False, timeout=60)
    return [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
