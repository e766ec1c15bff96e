from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from ollama_ops.apply import activate, fileio, journal
from ollama_ops.apply import transaction as apply
from ollama_ops.apply.diff import unified
from ollama_ops.errors import ApplyError, CommandError, OpsError
from ollama_ops.model import config
from ollama_ops.model import deployment as deployment_mod
from ollama_ops.plan import compose as plan
from ollama_ops.render import systemd as render
from tests.helpers import INSTALLER_UNIT, FakeOllama, FakeSystemctl, fake_runtime, host


def deployment(text: str = "") -> tuple[deployment_mod.Deployment, dict[str, str]]:
    d = plan.build(host("nvidia-1x24g"), config.loads(text))
    return d, render.render(d)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "var/lib/ollama-ops" not in str(p)
    }


def test_first_apply_writes_files_second_changes_nothing(root: Path) -> None:
    d, files = deployment()
    first = apply.apply(fake_runtime(root), d, files)
    assert {c.path for c in first.changes} == set(files)
    assert first.generation == 1
    for path in files:
        target = root / path.lstrip("/")
        assert target.read_text() == files[path]
        mode = stat.S_IMODE(target.stat().st_mode)
        assert mode == 0o644, oct(mode)
    state = root / "var/lib/ollama-ops"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    again = apply.apply(fake_runtime(root), d, files)
    assert again.changes == ()
    assert "nothing to change" in again.message
    # the packaged unit is never edited
    assert (root / "etc/systemd/system/ollama.service").read_text() == INSTALLER_UNIT


def test_rollback_restores_previous_bytes(root: Path) -> None:
    before = snapshot(root)
    d, files = deployment()
    apply.apply(fake_runtime(root), d, files)
    d2, files2 = deployment('[limits]\nmemory_max = "20G"\n')
    apply.apply(fake_runtime(root), d2, files2)
    middle = snapshot(root)
    assert middle != before
    assert apply.rollback(fake_runtime(root), "ollama.service") == 2
    assert (root / d.dropin_path.lstrip("/")).read_text() == files[d.dropin_path]
    assert apply.rollback(fake_runtime(root), "ollama.service") == 1
    assert snapshot(root) == before
    assert apply.rollback(fake_runtime(root), "ollama.service") is None


def test_stale_owned_files_are_removed(root: Path) -> None:
    d, files = deployment()
    apply.apply(fake_runtime(root), d, files)
    cpu = plan.build(host("cpu-small"), config.DeploymentConfig())
    pending = apply.pending_changes(root, render.render(cpu))
    assert any(c.path == deployment_mod.MODULES_LOAD_PATH and c.new is None for c in pending)


def test_diff_is_unified(root: Path) -> None:
    d, files = deployment()
    text = unified(apply.pending_changes(root, files))
    assert f"+++ b{d.dropin_path}" in text
    assert "--- /dev/null" in text


def test_live_apply_restarts_and_verifies(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, files = deployment()
    expected = activate.expected_properties(d)
    fake = FakeSystemctl(props=expected)
    ollama = FakeOllama()
    outcome = apply.apply(fake_runtime(root, fake, ollama=ollama), d, files)
    assert ollama.asked == ["http://127.0.0.1:11434"]
    assert outcome.restarted
    assert ("daemon-reload",) in fake.calls
    assert ("restart", "ollama.service") in fake.calls


def test_failed_start_rolls_back_byte_for_byte(root: Path) -> None:
    d, files = deployment()
    apply.apply(fake_runtime(root), d, files)
    (root / "srv/models").mkdir(parents=True)
    before = snapshot(root)
    d2, files2 = deployment('[service]\nmodels_dir = "/srv/models"\n')
    fake = FakeSystemctl(props=activate.expected_properties(d2), fail_start=True)
    with pytest.raises(ApplyError, match="previous configuration was restored") as info:
        apply.apply(fake_runtime(root, fake), d2, files2)
    assert "permission denied" in str(info.value)
    assert snapshot(root) == before
    assert fake.calls[-1] == ("restart", "ollama.service")  # restarted with the old files


def test_property_mismatch_rolls_back(root: Path) -> None:
    d, files = deployment()
    fake = FakeSystemctl(props={"MemoryMax": "infinity"})
    before = snapshot(root)
    with pytest.raises(ApplyError, match="MemoryMax='infinity'"):
        apply.apply(fake_runtime(root, fake), d, files)
    assert snapshot(root) == before


def test_write_failure_leaves_nothing_half_written(root: Path) -> None:
    d, files = deployment()
    before = snapshot(root)

    def full_disk(operation: str, path: str) -> None:
        if operation == "write" and "modules-load" in path:
            raise OSError(28, "No space left on device", path)

    with fileio.faults(full_disk), pytest.raises(ApplyError, match="No space left"):
        apply.apply(fake_runtime(root), d, files)
    assert snapshot(root) == before


def test_bad_root_is_a_clear_error(tmp_path: Path) -> None:
    d, files = deployment()
    with pytest.raises(OpsError, match="is not a directory"):
        apply.apply(fake_runtime(tmp_path / "missing"), d, files)


def test_path_escape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OpsError, match="refusing path"):
        fileio.host_path(tmp_path, "/etc/../../x")


def test_symlink_leading_out_of_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "host-etc"
    outside.mkdir()
    root = tmp_path / "image"
    (root / "etc/systemd").mkdir(parents=True)
    (root / "usr/share/ollama").mkdir(parents=True)
    (root / "etc/systemd/system").symlink_to(outside)  # as in a container image
    d, files = deployment()
    with pytest.raises(OpsError, match="leads outside --root"):
        apply.apply(fake_runtime(root), d, files)
    assert list(outside.iterdir()) == []


def test_concurrent_apply_is_refused(root: Path) -> None:
    import fcntl
    import os

    d, files = deployment()
    state = root / "var/lib/ollama-ops"
    state.mkdir(parents=True)
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(OpsError, match="another ollama-ops apply or rollback"):
            apply.apply(fake_runtime(root), d, files)
    finally:
        os.close(fd)
    assert not (root / d.dropin_path.lstrip("/")).exists()
    assert apply.apply(fake_runtime(root), d, files).generation == 1


def test_allowed_cpus_as_systemctl_prints_them_is_accepted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    d = plan.build(host("nvidia-2x-h100-2socket"), config.DeploymentConfig())
    files = render.render(d)
    root = tmp_path
    (root / "usr/share/ollama").mkdir(parents=True)
    expected = activate.expected_properties(d)
    assert expected["AllowedCPUs"] == "0-31,64-95"
    fake = FakeSystemctl(props={**expected, "AllowedCPUs": "0-31 64-95"})
    assert apply.apply(fake_runtime(root, fake), d, files).restarted
    wrong = FakeSystemctl(props={**expected, "AllowedCPUs": "0-31"})
    d2 = plan.build(host("nvidia-2x-h100-2socket"), config.loads("[limits]\ncpu_weight = 99\n"))
    with pytest.raises(ApplyError, match="AllowedCPUs='0-31'"):
        apply.apply(fake_runtime(root, wrong), d2, render.render(d2))


def test_missing_write_path_is_refused_before_writing(root: Path) -> None:
    d, files = deployment('[service]\nmodels_dir = "/data/models"\n')
    with pytest.raises(OpsError, match=r"ReadWritePaths=/data/models .* does not exist") as info:
        apply.apply(fake_runtime(root), d, files)
    assert "\n" not in str(info.value)
    assert not (root / "var/lib/ollama-ops").exists()
    assert not (root / d.dropin_path.lstrip("/")).exists()


def test_a_later_override_wins_without_a_false_rollback(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, files = deployment()
    override = root / "etc/systemd/system/ollama.service.d/override.conf"
    override.parent.mkdir(parents=True)
    override.write_text("[Service]\nMemoryMax=8G\n")
    shown = {**activate.expected_properties(d), "MemoryMax": str(8 * 1024**3)}
    outcome = apply.apply(fake_runtime(root, FakeSystemctl(props=shown)), d, files)
    assert outcome.restarted


class BrokenShow(FakeSystemctl):
    def show(self, unit: str, props: Sequence[str]) -> dict[str, str]:
        if self.started and "MemoryMax" in props:
            raise CommandError("systemctl show ollama.service: no answer after 60s")
        return super().show(unit, props)


def test_a_systemctl_failure_during_activation_still_rolls_back(root: Path) -> None:
    before = snapshot(root)
    d, files = deployment()
    with pytest.raises(
        ApplyError, match=r"no answer after 60s.*previous configuration was restored"
    ):
        apply.apply(fake_runtime(root, BrokenShow()), d, files)
    assert snapshot(root) == before


def test_owned_list_cannot_point_outside_our_files(tmp_path: Path) -> None:
    root = tmp_path / "image"
    (root / "usr/share/ollama").mkdir(parents=True)
    state = root / "var/lib/ollama-ops"
    state.mkdir(parents=True)
    (state / "owned.json").write_text(
        '["/etc/shadow", "/etc/systemd/system/ollama.service.d/x.conf"]'
    )
    assert journal.owned_files(root) == {"/etc/systemd/system/ollama.service.d/x.conf"}
    leak = root / "etc/systemd/system/ollama.service.d/x.conf"
    leak.parent.mkdir(parents=True)
    leak.symlink_to("/etc/hostname")
    _d, files = deployment()
    with pytest.raises(OpsError, match="is a symlink inside --root"):
        apply.pending_changes(root, files)


def test_rollback_restores_file_modes(root: Path) -> None:
    d, files = deployment()
    dropin = root / d.dropin_path.lstrip("/")
    dropin.parent.mkdir(parents=True)
    dropin.write_text("[Service]\nNice=5\n")
    dropin.chmod(0o600)
    apply.apply(fake_runtime(root), d, files)
    assert stat.S_IMODE(dropin.stat().st_mode) == 0o644
    apply.rollback(fake_runtime(root), "ollama.service")
    assert stat.S_IMODE(dropin.stat().st_mode) == 0o600
    assert dropin.read_text() == "[Service]\nNice=5\n"
