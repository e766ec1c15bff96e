"""apply and rollback of instances and the front door, with a fake systemd and a real nginx -t."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from ollama_ops.apply import activate
from ollama_ops.apply import instances as apply_instances
from ollama_ops.apply import transaction as apply
from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.errors import ApplyError, ExitStatus, PlanError
from ollama_ops.host import proc
from ollama_ops.model import facts as facts_mod
from ollama_ops.model.deployment import Deployment
from ollama_ops.render import systemd as render
from ollama_ops.runtime import Runtime
from tests.helpers import FakeOllama, FakeSystemctl
from tests.instances_helpers import TWO, need_nginx, plan, two_gpu_host

DOOR = '[frontdoor]\nlisten = "127.0.0.1:8080"\n'
NGINX_FILE = "/etc/nginx/conf.d/ollama-ops.conf"
FAST = "/etc/systemd/system/ollama@fast.service.d/50-ollama-ops.conf"
BIG = "/etc/systemd/system/ollama@big.service.d/50-ollama-ops.conf"


class Units(FakeSystemctl):
    """A fake systemd whose units show their own planned properties; ``crash`` fails one."""

    def __init__(self, d: Deployment, crash: str | None = None) -> None:
        super().__init__()
        self.by_unit = {d.unit_name: activate.expected_properties(d)}
        if d.instances is not None:
            for i in d.instances.instances:
                self.by_unit[i.unit_name] = activate.expected_properties(i)
        self.crash = crash

    def show(self, unit: str, props: Sequence[str]) -> dict[str, str]:
        failing = unit == self.crash
        state = {
            "ActiveState": "failed" if failing else "active",
            "SubState": "failed" if failing else "running",
            "Result": "exit-code" if failing else "success",
            "NRestarts": "0",
            "ExecMainStatus": "1" if failing else "0",
            **self.by_unit.get(unit, {}),
        }
        return {p: state.get(p, "") for p in props}


class Runs:
    """The runner for nginx on the live host: nginx -t passes or fails, systemctl reload."""

    def __init__(self, nginx_ok: bool = True) -> None:
        self.nginx_ok = nginx_ok
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], **kw: object) -> proc.Completed:
        self.calls.append(tuple(argv))
        if tuple(argv[:2]) == ("nginx", "-t"):
            err = "" if self.nginx_ok else 'nginx: [emerg] duplicate upstream "ollama_ops"'
            return proc.Completed(tuple(argv), 0 if self.nginx_ok else 1, "", err)
        return proc.Completed(tuple(argv), 0, "", "")


def live(root: Path, fake: FakeSystemctl, runs: Runs | None = None) -> Runtime:
    return Runtime(
        root=root,
        run=runs or Runs(),
        ollama=FakeOllama(),
        sleep=lambda s: None,
        make_systemctl=lambda: fake,
        live_override=True,
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "var/lib/ollama-ops" not in str(p)
    }


def restarts(fake: FakeSystemctl) -> list[str]:
    return [c[1] for c in fake.calls if c[0] == "restart"]


def test_first_apply_starts_everything_then_only_what_changed(root: Path) -> None:
    d = plan(TWO)
    fake = Units(d)
    out = apply.apply(live(root, fake), d, render.render(d))
    assert out.restarted
    assert restarts(fake) == ["ollama.service", "ollama@big.service", "ollama@fast.service"]
    ollama = FakeOllama()
    rt = Runtime(root=root, ollama=ollama, make_systemctl=lambda: fake, live_override=True)
    # One instance's variable changes: only that instance restarts.
    d2 = plan(TWO.replace("port = 11436", "port = 11436\nenvironment = { OLLAMA_DEBUG = 1 }"))
    fake.calls.clear()
    apply.apply(rt, d2, render.render(d2))
    assert restarts(fake) == ["ollama@big.service"]
    assert ollama.asked == ["http://127.0.0.1:11436"]


def test_removing_an_instance_stops_it_and_leaves_the_other_alone(root: Path) -> None:
    d = plan(TWO)
    fake = Units(d)
    apply.apply(live(root, fake), d, render.render(d))
    fast_before = (root / FAST.lstrip("/")).read_bytes()
    template_before = (root / "etc/systemd/system/ollama@.service").read_bytes()
    one = plan("[instances.fast]\ngpus = [0]\nport = 11435\n")
    fake.calls.clear()
    out = apply.apply(live(root, fake), one, render.render(one))
    assert {c.path: c.kind for c in out.changes} == {
        BIG: "removed",
        "/etc/systemd/system/multi-user.target.d/50-ollama-ops-instances.conf": "changed",
    }
    assert ("stop", "ollama@big.service") in fake.calls
    assert restarts(fake) == []  # neither ollama.service nor ollama@fast
    assert (root / FAST.lstrip("/")).read_bytes() == fast_before
    assert (root / "etc/systemd/system/ollama@.service").read_bytes() == template_before
    assert not (root / BIG.lstrip("/")).exists()


def test_an_instance_that_does_not_start_rolls_back_the_whole_set(root: Path) -> None:
    d = plan(TWO)
    apply.apply(live(root, Units(d)), d, render.render(d))
    before = snapshot(root)
    d2 = plan(TWO + '\n[instances.new]\nport = 11437\nmemory_max = "8G"\n')
    fake = Units(d2, crash="ollama@new.service")
    with pytest.raises(ApplyError, match=r"ollama@new\.service failed to stay up") as caught:
        apply.apply(live(root, fake), d2, render.render(d2))
    assert "\n" not in str(caught.value)
    assert snapshot(root) == before  # byte for byte, the template and every drop-in
    assert ("stop", "ollama@new.service") in fake.calls  # its drop-in is gone again


def test_rollback_restores_the_set_as_one_generation(root: Path) -> None:
    before = snapshot(root)
    d = plan(TWO)
    fake = Units(d)
    apply.apply(live(root, fake), d, render.render(d))
    fake.calls.clear()
    assert apply.rollback(live(root, fake), "ollama.service") == 1
    assert snapshot(root) == before
    assert ("stop", "ollama@fast.service") in fake.calls
    assert ("stop", "ollama@big.service") in fake.calls


def test_front_door_failing_live_nginx_t_keeps_the_old_config(root: Path) -> None:
    need_nginx()
    d = plan(TWO + DOOR)
    apply.apply(live(root, Units(d)), d, render.render(d))
    old = (root / NGINX_FILE.lstrip("/")).read_bytes()
    before = snapshot(root)
    d2 = plan(TWO + DOOR.replace("8080", "8081"))
    runs = Runs(nginx_ok=False)
    with pytest.raises(ApplyError, match="duplicate upstream"):
        apply.apply(live(root, Units(d2), runs), d2, render.render(d2))
    assert (root / NGINX_FILE.lstrip("/")).read_bytes() == old
    assert snapshot(root) == before
    assert ("systemctl", "reload-or-restart", "nginx.service") in runs.calls  # the old one back
    ok = Runs()
    apply.apply(live(root, Units(d2), ok), d2, render.render(d2))
    assert ok.calls[-2:] == [
        ("nginx", "-t", "-q"),
        ("systemctl", "reload-or-restart", "nginx.service"),
    ]
    assert b"listen 127.0.0.1:8081;" in (root / NGINX_FILE.lstrip("/")).read_bytes()


def test_a_front_door_nginx_rejects_is_never_written(root: Path) -> None:
    need_nginx()
    text = (
        TWO + DOOR + 'tls_certificate = "/etc/ssl/x.crt"\ntls_certificate_key = "/etc/ssl/x.key"\n'
    )
    d = plan(text)
    before = snapshot(root)
    with pytest.raises(PlanError, match="nginx -t rejects the front door") as caught:
        apply.apply(Runtime(root=root), d, render.render(d))
    assert "/etc/ssl/x.crt" in str(caught.value) and "\n" not in str(caught.value)
    assert snapshot(root) == before
    # With the certificate inside --root, nginx -t reads it there, and the file is written.
    (root / "etc/ssl").mkdir(parents=True)
    fixtures = Path(__file__).parent / "fixtures/instances"
    (root / "etc/ssl/x.crt").write_bytes((fixtures / "localhost.crt").read_bytes())
    (root / "etc/ssl/x.key").write_bytes((fixtures / "localhost.key").read_bytes())
    out = apply.apply(Runtime(root=root), d, render.render(d))
    assert NGINX_FILE in {c.path for c in out.changes}


def test_missing_nginx_is_one_line_and_nothing_is_written(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    facts_file = tmp_path / "facts.json"
    facts_file.write_text(facts_mod.dumps(two_gpu_host()))
    config_file = tmp_path / "cfg.toml"
    config_file.write_text(TWO + DOOR)
    before = snapshot(root)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nginx on it
    out, err = io.StringIO(), io.StringIO()
    argv = ["apply", "--root", str(root), "--facts", str(facts_file), "--config", str(config_file)]
    code = cli.main(argv, Env(out, err))
    assert code == ExitStatus.COMMAND_FAILED
    assert err.getvalue().count("\n") == 1 and "nginx not found" in err.getvalue()
    assert snapshot(root) == before
    assert not (root / "var/lib/ollama-ops/generations").exists()


def test_actions_follow_the_changed_paths() -> None:
    d = plan(TWO + DOOR)
    from ollama_ops.apply.diff import Change

    def acts(*changes: Change) -> apply_instances.Actions:
        return apply_instances.actions(d, changes)

    template = Change("/etc/systemd/system/ollama@.service", b"a", b"b")
    assert [x.unit_name for x in acts(template).restart] == [
        "ollama@big.service",
        "ollama@fast.service",
    ]
    assert acts(Change(FAST, None, b"x")).restart[0].unit_name == "ollama@fast.service"
    gone = Change("/etc/systemd/system/ollama@old.service.d/50-ollama-ops.conf", b"x", None)
    assert acts(gone).stop == ("ollama@old.service",)
    assert acts(Change(NGINX_FILE, b"a", b"b")).frontdoor
    assert not acts(
        Change("/etc/systemd/system/ollama.service.d/50-ollama-ops.conf", b"a", b"b")
    ).restart
    assert os.path.basename(FAST) == "50-ollama-ops.conf"
