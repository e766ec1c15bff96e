"""apply and rollback on the live system (a fake systemctl): exit codes and what is left behind.

- no systemd answering: exit 3 and nothing written;
- a failed start: exit 4, the files restored, the message says so;
- a busy lock: exit 5; nothing to roll back: exit 0;
- Ctrl-C during the health wait: the old files back and the unit restarted;
- rollback restores the owner of a file as well as its bytes and mode.
"""

from __future__ import annotations

import dataclasses
import fcntl
import io
import os
import stat
from pathlib import Path

import pytest

from ollama_ops.apply import activate
from ollama_ops.apply import transaction as apply
from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.errors import CommandError, ExitStatus
from ollama_ops.model import config
from ollama_ops.plan import compose
from ollama_ops.render import systemd as render
from tests.helpers import FIXTURES, FakeOllama, FakeSystemctl, fake_runtime, host

FACTS = str(FIXTURES / "hosts" / "nvidia-1x24g.json")
DROPIN = "etc/systemd/system/ollama.service.d/50-ollama-ops.conf"


def everything(root: Path) -> list[tuple[str, int, bytes | None]]:
    return [
        (str(p.relative_to(root)), p.lstat().st_mode, p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    ]


def run(root: Path, systemctl: FakeSystemctl | None, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, make_runtime=lambda r: fake_runtime(r, systemctl))
    code = cli.main([*argv, "--root", str(root)], env)
    return code, out.getvalue(), err.getvalue()


def planned() -> dict[str, str]:
    d = compose.build(host("nvidia-1x24g"), config.DeploymentConfig())
    return activate.expected_properties(d)


def test_no_systemd_is_exit_3_before_anything_is_written(root: Path) -> None:
    before = everything(root)
    down = FakeSystemctl(props=planned(), down=True)
    code, _out, err = run(root, down, "apply", "--facts", FACTS)
    assert code == ExitStatus.COMMAND_FAILED, err
    assert err.count("\n") == 1 and "systemd does not answer" in err
    assert "nothing was written" in err
    assert everything(root) == before  # not even the state directory
    assert down.calls == [("show", "-p", "Version")]


def test_no_systemd_is_exit_3_for_rollback_too(root: Path) -> None:
    assert run(root, None, "apply", "--facts", FACTS)[0] == 0
    before = everything(root)
    code, _out, err = run(root, FakeSystemctl(down=True), "rollback")
    assert code == ExitStatus.COMMAND_FAILED and "systemd does not answer" in err
    assert everything(root) == before


def test_a_failed_start_is_exit_4_and_says_the_files_were_restored(root: Path) -> None:
    before = everything(root)
    failing = FakeSystemctl(props=planned(), fail_start=True)
    code, _out, err = run(root, failing, "apply", "--facts", FACTS)
    assert code == ExitStatus.APPLY_FAILED
    assert err.count("\n") == 1 and "previous configuration was restored" in err
    after = everything(root)
    # Only the state directory's skeleton (lock, generations/) may have appeared.
    assert [e for e in after if "var/" not in e[0] and e[0] != "var"] == before
    assert not (root / "var/lib/ollama-ops/owned.json").exists()
    assert not (root / "var/lib/ollama-ops/journal.json").exists()
    assert failing.calls[-1] == ("restart", "ollama.service")


def test_a_busy_lock_is_exit_5_and_nothing_to_roll_back_is_exit_0(root: Path) -> None:
    state = root / "var/lib/ollama-ops"
    state.mkdir(parents=True, mode=0o700)
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        code, _out, err = run(root, None, "apply", "--facts", FACTS)
        assert code == ExitStatus.BUSY and "another ollama-ops apply or rollback" in err
        assert run(root, None, "rollback")[0] == ExitStatus.BUSY
    finally:
        os.close(fd)
    code, out, _err = run(root, None, "rollback")
    assert code == ExitStatus.OK and "nothing to roll back" in out


class InterruptedOllama(FakeOllama):
    """The operator presses Ctrl-C while apply waits for the API."""

    def is_up(self, base_url: str, timeout: float = 2.0) -> bool:
        raise KeyboardInterrupt


def test_ctrl_c_during_the_health_wait_restores_and_restarts(root: Path) -> None:
    d = compose.build(host("nvidia-1x24g"), config.DeploymentConfig())
    before = everything(root)
    fake = FakeSystemctl(props=planned())
    with pytest.raises(KeyboardInterrupt):
        apply.apply(fake_runtime(root, fake, ollama=InterruptedOllama()), d, render.render(d))
    assert [e for e in everything(root) if "var/" not in e[0] and e[0] != "var"] == before
    assert not (root / "var/lib/ollama-ops/journal.json").exists()
    assert fake.calls[-1] == ("restart", "ollama.service")


class FailingReload(FakeSystemctl):
    def daemon_reload(self) -> None:
        super().daemon_reload()
        if len([c for c in self.calls if c == ("daemon-reload",)]) == 1:
            raise CommandError("systemctl daemon-reload exited 1: Access denied")


def test_no_restart_apply_whose_reload_fails_is_restored(root: Path) -> None:
    before = everything(root)
    fake = FailingReload()
    code, _out, err = run(root, fake, "apply", "--facts", FACTS, "--no-restart")
    assert code == ExitStatus.APPLY_FAILED and "Access denied" in err
    assert "previous configuration was restored" in err
    assert [e for e in everything(root) if "var/" not in e[0] and e[0] != "var"] == before


def test_rollback_restores_owner_mode_and_bytes(root: Path) -> None:
    dropin = root / DROPIN
    dropin.parent.mkdir(parents=True)
    dropin.write_text("[Service]\nNice=5\n")
    dropin.chmod(0o640)
    operator = (1234, 2345) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    if os.geteuid() == 0:
        os.chown(dropin, *operator)
    assert run(root, None, "apply", "--facts", FACTS)[0] == 0
    written = dropin.stat()
    assert (written.st_uid, stat.S_IMODE(written.st_mode)) == (os.geteuid(), 0o644)
    assert run(root, None, "rollback")[0] == 0
    back = dropin.stat()
    # As root (CI) the owner comes back; as anyone else chown is not attempted.
    assert (back.st_uid, back.st_gid) == operator
    assert stat.S_IMODE(back.st_mode) == 0o640
    assert dropin.read_text() == "[Service]\nNice=5\n"


def test_a_live_rollback_of_a_unit_it_wrote_stops_and_disables_it(tmp_path: Path) -> None:
    """No unit installed: apply wrote and enabled one; rollback stops, disables and removes it."""
    (tmp_path / "usr/share/ollama").mkdir(parents=True)
    facts = host("cpu-small")
    facts = dataclasses.replace(facts, ollama=dataclasses.replace(facts.ollama, unit_path=None))
    d = compose.build(facts, config.DeploymentConfig())
    assert d.write_base_unit
    fake = FakeSystemctl(props=activate.expected_properties(d))
    assert apply.apply(fake_runtime(tmp_path, fake), d, render.render(d)).restarted
    assert ("enable", "ollama.service") in fake.calls
    fake.calls.clear()
    assert apply.rollback(fake_runtime(tmp_path, fake), "ollama.service") == 1
    acted = [call for call in fake.calls if call[0] != "show"]
    assert acted[:2] == [("stop", "ollama.service"), ("disable", "ollama.service")]
    assert ("restart", "ollama.service") not in fake.calls
    assert not (tmp_path / "etc/systemd/system/ollama.service").exists()
    assert not (tmp_path / "etc/systemd/system/ollama.service.d").exists()
