"""A tune killed at any step is undone by the next `tune` or `apply` (tune/marker.py), with the
real plan + apply on a root directory and a fake systemd (no service runs here).

Each test leaves the files as a killed tune would at one step, then recovers:
- sweeping, after some settings were applied: the original, one restart;
- keeping, after the tune's generations were rolled back without a restart: the
  original, and the service restarted (it still ran the last setting);
- keeping, the winner applied but the config not yet written: the original;
- keeping, the config written: the winner stays;
- a generation rolled back by hand meanwhile, a tune still running, a tampered marker.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from ollama_ops.apply import activate
from ollama_ops.cli.common import Env
from ollama_ops.cli.main import main
from ollama_ops.errors import BusyError, ExitStatus, StateError
from ollama_ops.model import config as config_mod
from ollama_ops.plan import compose
from ollama_ops.runtime import Runtime
from ollama_ops.tune import configfile, marker
from ollama_ops.tune.applier import PlanApplier
from ollama_ops.tune.params import Setting
from tests.helpers import FIXTURES, FakeSystemctl, fake_runtime, host

FACTS = str(FIXTURES / "hosts" / "cpu-small.json")
DROPIN = "etc/systemd/system/ollama.service.d/50-ollama-ops.conf"
CONFIG_PATH = "etc/ollama-ops/ollama-ops.toml"
CONFIG = '[environment]\nOLLAMA_KEEP_ALIVE = "10m"  # mine\n'
NP = "OLLAMA_NUM_PARALLEL"


def np_(n: int) -> Setting:
    return Setting.of({NP: str(n)})


class Host:
    """A root after `ollama-ops apply`, with a fake systemd that records restarts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / CONFIG_PATH).parent.mkdir(parents=True)
        (root / CONFIG_PATH).write_text(CONFIG)
        cfg = config_mod.loads(CONFIG)
        props = activate.expected_properties(compose.build(host("cpu-small"), cfg))
        self.systemctl = FakeSystemctl(props=props)
        self.rt: Runtime = fake_runtime(root, self.systemctl)
        assert self.cli("apply")[0] == 0
        self.original = self.files()
        self.cfg = cfg

    def cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        env = Env(out, err, make_runtime=lambda r: self.rt)
        code = main([*argv, "--root", str(self.root), "--facts", FACTS], env)
        return code, out.getvalue(), err.getvalue()

    def files(self) -> dict[str, bytes]:
        keep = {}
        for p in sorted(self.root.rglob("*")):
            if p.is_file() and p.name not in ("tune.lock", "lock"):
                keep[str(p.relative_to(self.root))] = p.read_bytes()
        return keep

    def restarts(self) -> int:
        return sum(1 for c in self.systemctl.calls if c[0] == "restart")

    def start_tune(self) -> PlanApplier:
        state = marker.Marker(
            base=marker.newest_generation(self.root),
            unit="ollama.service",
            url="http://127.0.0.1:11434",
            started_at="2025-01-01T00:00:00+00:00",
            pid=4242,
        )
        marker.write(self.root, state)
        path = self.root / CONFIG_PATH
        return PlanApplier(self.rt, host("cpu-small"), self.cfg, path, state, timeout=5)


@pytest.fixture
def h(root: Path) -> Host:
    return Host(root)


def dropin(h: Host) -> str:
    return (h.root / DROPIN).read_text()


def test_killed_while_sweeping(h: Host) -> None:
    applier = h.start_tune()
    applier.apply(np_(2))
    applier.apply(np_(4))
    assert "OLLAMA_NUM_PARALLEL=4" in dropin(h) and marker.generations(h.root) == [1, 2, 3]
    restarts = h.restarts()
    note = marker.recover(h.rt)
    assert note is not None and "pid 4242" in note and "rolled back generation(s) 2, 3" in note
    assert h.files() == h.original
    assert h.restarts() == restarts + 1  # once, after the last rollback


def test_killed_while_keeping_before_the_winner_was_applied(h: Host) -> None:
    applier = h.start_tune()
    applier.apply(np_(2))
    state = marker.update(h.root, applier.marker, phase=marker.KEEPING)
    marker.roll_back_above(h.rt, state.base, state.unit, restart=False)
    assert h.files() != h.original  # only the marker differs: the service still runs 2
    restarts = h.restarts()
    marker.recover(h.rt)
    assert h.files() == h.original
    assert h.restarts() == restarts + 1  # forced: the files were right, the service was not


def keep_until_config(h: Host, *, write_config: bool) -> None:
    """PlanApplier.keep, step by step, killed before the marker is removed."""
    applier = h.start_tune()
    applier.apply(np_(2))
    state = marker.update(h.root, applier.marker, phase=marker.KEEPING)
    marker.roll_back_above(h.rt, state.base, state.unit, restart=False)
    path = h.root / CONFIG_PATH
    text = configfile.with_environment(path.read_text(), {NP: "2"}, str(path))
    gen = applier.apply(np_(2))
    assert gen == "applied as generation 2"
    marker.update(
        h.root,
        state,
        winner_generation=2,
        config_path=str(path),
        config_sha256=hashlib.sha256(text.encode()).hexdigest(),
    )
    if write_config:
        configfile.write(path, text)


def test_killed_after_the_winner_was_applied_but_not_written(h: Host) -> None:
    keep_until_config(h, write_config=False)
    marker.recover(h.rt)
    assert h.files() == h.original


def test_killed_after_the_config_was_written_keeps_the_winner(h: Host) -> None:
    keep_until_config(h, write_config=True)
    restarts = h.restarts()
    note = marker.recover(h.rt)
    assert note is not None and "kept generation 2" in note
    assert "OLLAMA_NUM_PARALLEL=2" in dropin(h) and marker.generations(h.root) == [1, 2]
    assert "OLLAMA_NUM_PARALLEL = 2" in (h.root / CONFIG_PATH).read_text()
    assert marker.read(h.root) is None and h.restarts() == restarts
    assert h.cli("apply")[1].startswith(
        "apply: nothing to change: the installed files already match"
    )


def test_keeping_after_the_original_was_put_back_for_the_question(h: Host) -> None:
    applier = h.start_tune()
    applier.apply(np_(2))
    applier.apply(np_(4))
    first = applier.restore()  # before asking on a terminal
    assert h.files() == h.original and "rolled back generation(s) 2, 3" in first
    note = applier.keep(np_(4))
    assert note.startswith("kept: wrote OLLAMA_NUM_PARALLEL = 4 to ")
    assert "OLLAMA_NUM_PARALLEL=4" in dropin(h) and marker.generations(h.root) == [1, 2]
    assert marker.read(h.root) is None
    # Answered no instead: restoring again changes nothing and says what the first did.
    again = h.start_tune()
    again.apply(np_(8))
    first = again.restore()
    assert first.endswith("(rolled back generation(s) 3)") and again.restore() == first
    assert "OLLAMA_NUM_PARALLEL=4" in dropin(h)


def test_a_generation_rolled_back_by_hand_meanwhile(h: Host) -> None:
    applier = h.start_tune()
    applier.apply(np_(2))
    applier.apply(np_(4))
    code, out, err = main_rollback(h)
    assert code == 0, out + err
    marker.recover(h.rt)
    assert h.files() == h.original


def main_rollback(h: Host) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, make_runtime=lambda r: h.rt)
    return main(["rollback", "--root", str(h.root)], env), out.getvalue(), err.getvalue()


def test_apply_restores_first_and_waits_for_a_running_tune(h: Host) -> None:
    applier = h.start_tune()
    applier.apply(np_(2))
    with marker.tune_lock(h.root):  # a tune is running
        with pytest.raises(BusyError, match="a tune is running"):
            marker.recover(h.rt)
        code, _out, err = h.cli("apply")
        assert code == ExitStatus.BUSY and err.count("\n") == 1, err
    code, out, err = h.cli("apply")
    assert code == 0, out + err
    assert "cut short: restored the original configuration" in err
    assert h.files() == h.original


def test_a_tampered_marker_is_refused_in_one_line(h: Host) -> None:
    path = h.root / "var/lib/ollama-ops/tune.json"
    path.write_text('{"base": "x"}')
    with pytest.raises(StateError, match="is not a tune marker"):
        marker.recover(h.rt)
    path.write_text('{"base": 1, "unit": "ollama.service", "url": "u", "started_at": "t", '
                    '"pid": 1, "phase": "dancing"}')  # fmt: skip
    code, _out, err = h.cli("apply")
    assert code == ExitStatus.STATE and err.count("\n") == 1 and "unexpected values" in err
    os.unlink(path)
    assert h.cli("apply")[0] == 0
