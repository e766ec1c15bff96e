"""Kill apply and rollback before every filesystem mutation: the tree is the old one or the new one.

Each run forks a child that applies (or rolls back) with a fault hook
(``fileio.faults``) that calls ``os._exit`` before its Nth mutation — a real
crash: no ``finally``, no cleanup, the page cache as the kernel left it —
for every N from 1 to the number of mutations a whole run makes. The parent
then runs the recovery every apply and rollback starts with and compares the
whole tree (state directory included) byte for byte, with modes and owners,
against the tree before and the tree after an uninterrupted run. The same
hook raising ENOSPC gives the full-disk tests.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import resource
import shutil
import signal
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ollama_ops.apply import activate, fileio, store
from ollama_ops.apply import transaction as apply
from ollama_ops.apply.records import Phase
from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.errors import ApplyError, ExitStatus, StateError, exit_status
from ollama_ops.model import config
from ollama_ops.model.deployment import Deployment
from ollama_ops.plan import compose
from ollama_ops.render import systemd as render
from ollama_ops.runtime import Runtime
from tests.helpers import FIXTURES, INSTALLER_UNIT, FakeSystemctl, fake_runtime, host

KILLED = 97
DROPIN = "etc/systemd/system/ollama.service.d/50-ollama-ops.conf"
MODULES = "etc/modules-load.d/ollama-ops-nvidia.conf"
OPERATOR = (1234, 1234)  # the owner of the operator's own drop-in before the first apply
Tree = dict[str, tuple[object, ...]]


def plan_for(name: str) -> tuple[Deployment, dict[str, str]]:
    d = compose.build(host(name), config.DeploymentConfig())
    return d, render.render(d)


def runtime(root: Path, systemctl: FakeSystemctl | None = None) -> Runtime:
    """A runtime with a fixed wall clock, so manifests come out byte for byte the same."""
    return dataclasses.replace(fake_runtime(root, systemctl), wall_clock=lambda: 1.7e9)


def tree(root: Path) -> Tree:
    """Every entry under root: kind, mode, owner and bytes (or link target)."""
    out: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            head = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if stat.S_ISLNK(st.st_mode):
                out[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[str(path.relative_to(root))] = ("dir", *head)
            else:
                out[str(path.relative_to(root))] = ("file", *head, path.read_bytes())
    return out


def delta(a: Tree, b: Tree) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def clone(src: Path, dst: Path) -> Path:
    """A copy with modes and owners."""
    shutil.copytree(src, dst, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(src):
        for name in dirnames + filenames:
            st = Path(dirpath, name).lstat()
            target = dst / Path(dirpath, name).relative_to(src)
            if os.geteuid() == 0:
                os.lchown(target, st.st_uid, st.st_gid)
    return dst


def initial_tree(base: Path) -> Path:
    """The installer's unit, an operator's drop-in (0600, not root's), the state directory."""
    root = base / "t0"
    unit = root / "etc/systemd/system/ollama.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(INSTALLER_UNIT)
    (root / "usr/share/ollama").mkdir(parents=True)
    dropin = root / DROPIN
    dropin.parent.mkdir()
    dropin.write_text("[Service]\nNice=5\n")
    dropin.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(dropin, *OPERATOR)
    with store.locked(root):  # the state directory as any earlier run leaves it
        pass
    return root


def count_mutations(action: Callable[[], object]) -> int:
    return len(mutations(action))


def killed_at(n: int, action: Callable[[], object]) -> int:
    """Run ``action`` in a child process killed before its nth mutation; the exit status."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        steps = 0

        def die(operation: str, path: str) -> None:
            nonlocal steps
            steps += 1
            if steps == n:
                os._exit(KILLED)

        code = 0
        try:
            with fileio.faults(die):
                action()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


Action = Callable[[Path], object]


def kill_at_every_step(
    start: Path,
    work: Path,
    action: Action,
    recover: Callable[[Path], object] = lambda root: apply.recover(runtime(root)),
) -> list[str]:
    """Kill ``action`` at each of its mutations, recover, and classify the tree as old or new."""
    old = tree(start)
    reference = clone(start, work / "reference")
    total = count_mutations(lambda: action(reference))
    new = tree(reference)
    assert old != new and total > 10
    outcomes: list[str] = []
    for n in range(1, total + 1):
        copy = clone(start, work / f"kill-{n}")
        assert killed_at(n, lambda copy=copy: action(copy)) == KILLED, n  # type: ignore[misc]
        recover(copy)
        after = tree(copy)
        assert after in (old, new), f"killed before mutation {n}: {delta(after, old)}"
        outcomes.append("old" if after == old else "new")
        shutil.rmtree(copy)
    # All or nothing, and the switch happens once: old until the commit, new after it.
    assert outcomes == sorted(outcomes, key=["old", "new"].index), outcomes
    assert outcomes[0] == "old" and outcomes[-1] == "new", outcomes
    return outcomes


def apply_plan(name: str, systemctl: FakeSystemctl | None = None) -> Action:
    d, files = plan_for(name)
    return lambda root: apply.apply(runtime(root, systemctl), d, files)


def rollback(root: Path) -> object:
    return apply.rollback(runtime(root), "ollama.service")


@pytest.fixture
def trees(tmp_path: Path) -> dict[str, Path]:
    """t0, then t1 (apply of the GPU plan), then t2 (the CPU plan: its stale file removed)."""
    t0 = initial_tree(tmp_path)
    t1 = clone(t0, tmp_path / "t1")
    apply_plan("nvidia-1x24g")(t1)
    t2 = clone(t1, tmp_path / "t2")
    apply_plan("cpu-small")(t2)
    assert (t1 / MODULES).is_file() and not (t2 / MODULES).exists()
    return {"t0": t0, "t1": t1, "t2": t2}


def test_first_apply_killed_anywhere_is_all_or_nothing(
    trees: dict[str, Path], tmp_path: Path
) -> None:
    # Changes the operator's drop-in and creates /etc/modules-load.d with a file in it.
    kill_at_every_step(trees["t0"], tmp_path, apply_plan("nvidia-1x24g"))


def test_apply_removing_a_stale_file_killed_anywhere_is_all_or_nothing(
    trees: dict[str, Path], tmp_path: Path
) -> None:
    kill_at_every_step(trees["t1"], tmp_path, apply_plan("cpu-small"))


@pytest.mark.parametrize(("start", "back_to"), [("t2", "t1"), ("t1", "t0")])
def test_rollback_killed_anywhere_is_all_or_nothing(
    trees: dict[str, Path], tmp_path: Path, start: str, back_to: str
) -> None:
    kill_at_every_step(trees[start], tmp_path, rollback)
    # And the uninterrupted rollback is exactly the earlier tree, owner and modes included.
    copy = clone(trees[start], tmp_path / "whole")
    rollback(copy)
    assert tree(copy) == tree(trees[back_to]), delta(tree(copy), tree(trees[back_to]))


def test_live_apply_killed_anywhere_is_undone_and_restarted(
    trees: dict[str, Path], tmp_path: Path
) -> None:
    d, _files = plan_for("nvidia-1x24g")
    shown = activate.expected_properties(d)
    phases: list[Phase | None] = []
    restarts: list[bool] = []

    def recover(root: Path) -> None:
        with store.peek(root) as state:
            found = state.journal() if state is not None else None
        phases.append(None if found is None else found.phase)
        fake = FakeSystemctl(props=shown)
        apply.recover(runtime(root, fake))
        restarts.append(("restart", d.unit_name) in fake.calls)

    outcomes = kill_at_every_step(
        trees["t0"], tmp_path, apply_plan("nvidia-1x24g", FakeSystemctl(props=shown)), recover
    )
    # Killed while systemd may already run the new files: undoing restarts the unit.
    assert Phase.ACTIVATING in phases
    for outcome, phase, restarted in zip(outcomes, phases, restarts, strict=True):
        assert restarted == (outcome == "old" and phase is Phase.ACTIVATING)


def test_a_crash_during_recovery_is_recovered_by_the_next_run(
    trees: dict[str, Path], tmp_path: Path
) -> None:
    action = apply_plan("nvidia-1x24g")
    old = tree(trees["t0"])
    reference = clone(trees["t0"], tmp_path / "reference")
    last_before_commit = count_mutations(lambda: action(reference)) - 2  # before unlink+fsync
    crashed = clone(trees["t0"], tmp_path / "crashed")
    assert killed_at(last_before_commit, lambda: action(crashed)) == KILLED
    undo_steps = count_mutations(lambda: apply.recover(runtime(clone(crashed, tmp_path / "c"))))
    assert undo_steps > 5
    for m in range(1, undo_steps + 1):
        copy = clone(crashed, tmp_path / f"undo-{m}")
        assert killed_at(m, lambda copy=copy: apply.recover(runtime(copy))) == KILLED  # type: ignore[misc]
        apply.recover(runtime(copy))
        assert tree(copy) == old, (m, delta(tree(copy), old))
        shutil.rmtree(copy)


def test_after_a_crash_plan_shows_the_recovered_state_and_the_commands_go_on(
    trees: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d, files = plan_for("nvidia-1x24g")
    expected = apply.pending_changes(trees["t0"], files)
    crashed = clone(trees["t0"], tmp_path / "crashed")
    assert killed_at(20, lambda: apply.apply(runtime(crashed), d, files)) == KILLED
    on_disk = tree(crashed)
    # plan and --dry-run write nothing and diff against the files recovery will restore.
    assert apply.pending_changes(crashed, files) == expected
    assert "an interrupted apply of generation 1" in caplog.text
    assert tree(crashed) == on_disk
    # apply undoes it first, then applies: the same tree as an uninterrupted apply.
    again = clone(crashed, tmp_path / "again")
    assert apply.apply(runtime(again), d, files).generation == 1
    assert tree(again) == tree(trees["t1"])
    # rollback takes back the interrupted apply, and only that one.
    assert apply.rollback(runtime(crashed), "ollama.service") == 1
    assert tree(crashed) == tree(trees["t0"])
    assert apply.rollback(runtime(crashed), "ollama.service") is None


# --- a full disk --------------------------------------------------------------------------


def mutations(action: Callable[[], object]) -> list[str]:
    seen: list[str] = []
    with fileio.faults(lambda operation, path: seen.append(operation)):
        action()
    return seen


def full_disk_at(n: int, *, lasting: bool = False) -> fileio.FaultHook:
    """ENOSPC at the nth mutation (and, ``lasting``, at every later one that needs space)."""
    steps = 0

    def hook(operation: str, path: str) -> None:
        nonlocal steps
        steps += 1
        if steps == n or (
            lasting and steps > n and operation in ("mkdir", "create", "write", "fsync")
        ):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    return hook


def test_a_full_disk_at_any_write_is_one_line_exit_4_and_the_old_tree(
    trees: dict[str, Path], tmp_path: Path
) -> None:
    action = apply_plan("nvidia-1x24g")
    old, new = tree(trees["t0"]), tree(trees["t1"])
    steps = mutations(lambda: action(clone(trees["t0"], tmp_path / "count")))
    # The last step syncs the directory after the commit (the journal's unlink): done is done.
    assert steps[-2:] == ["unlink", "fsync-dir"]
    for n in range(1, len(steps)):
        copy = clone(trees["t0"], tmp_path / f"enospc-{n}")
        with fileio.faults(full_disk_at(n)), pytest.raises(ApplyError) as info:
            action(copy)
        message = str(info.value)
        assert exit_status(info.value) == ExitStatus.APPLY_FAILED
        assert "\n" not in message and "No space left on device" in message
        assert "restored" in message or "no file was changed" in message, message
        assert tree(copy) == old, (n, steps[n - 1], delta(tree(copy), old))
        shutil.rmtree(copy)
    copy = clone(trees["t0"], tmp_path / "after-commit")
    with fileio.faults(full_disk_at(len(steps))):
        assert action(copy)
    assert tree(copy) == new


def test_a_disk_that_stays_full_keeps_the_journal_until_space_is_freed(
    trees: dict[str, Path], tmp_path: Path
) -> None:
    action = apply_plan("nvidia-1x24g")
    old = tree(trees["t0"])
    total = count_mutations(lambda: action(clone(trees["t0"], tmp_path / "count")))
    kept = 0
    for n in range(1, total - 1):
        copy = clone(trees["t0"], tmp_path / f"full-{n}")
        with (
            fileio.faults(full_disk_at(n, lasting=True)),
            pytest.raises((ApplyError, StateError)) as info,
        ):
            action(copy)
        assert "\n" not in str(info.value)
        if isinstance(info.value, StateError):  # even the undo needed space it did not get
            kept += 1
            assert "rollback" in str(info.value) and exit_status(info.value) == ExitStatus.STATE
            assert (copy / "var/lib/ollama-ops/journal.json").is_file()
            # Space freed: the rollback it names finishes the undo.
            assert apply.rollback(runtime(copy), "ollama.service") == 1
        assert tree(copy) == old, (n, delta(tree(copy), old))
        shutil.rmtree(copy)
    assert kept > 0  # the case this test is about did happen


def test_cli_apply_on_a_full_disk_says_what_happened_in_one_line(root: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    facts = str(FIXTURES / "hosts" / "nvidia-1x24g.json")

    def modules_file_fails(operation: str, path: str) -> None:
        if operation == "write" and "modules-load" in path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    with fileio.faults(modules_file_fails):
        code = cli.main(["apply", "--facts", facts, "--root", str(root)], Env(out, err))
    assert code == ExitStatus.APPLY_FAILED
    assert err.getvalue().count("\n") == 1 and "Traceback" not in err.getvalue()
    assert "No space left on device" in err.getvalue()
    assert "previous configuration was restored" in err.getvalue()
    assert "nothing was changed" not in err.getvalue()
    # Neither an empty owned.json nor an empty modules-load.d is left behind.
    assert not (root / "var/lib/ollama-ops/owned.json").exists()
    assert not (root / "etc/modules-load.d").exists()
    assert not (root / "etc/systemd/system/ollama.service.d").exists()
    assert list((root / "var/lib/ollama-ops/generations").iterdir()) == []


def test_a_real_write_error_names_the_file(root: Path) -> None:
    """Not injected: a file size limit makes write(2) fail with EFBIG, in a child process."""
    d, files = plan_for("nvidia-1x24g")
    before = tree(root)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
        try:
            apply.apply(runtime(root), d, files)
            message = "applied"
        except ApplyError as exc:
            message = str(exc)
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        os.write(writer, message.encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    assert "File too large" in message and "\n" not in message, message
    assert str(root / "var/lib/ollama-ops") in message  # the journal, written first
    assert "no file was changed" in message
    assert tree(root) == before | {k: v for k, v in tree(root).items() if k.startswith("var")}
    assert not (root / "var/lib/ollama-ops/journal.json").exists()
