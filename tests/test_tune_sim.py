"""`ollama-ops tune` in-process against the simulator, through the real plan + apply.

The service is the simulator as a child process, run by a stand-in for
systemd (:class:`SimService`): `restart` reads the drop-in that apply wrote
under the test's root and starts the simulator with its environment, so
each setting really is planned, rendered, written, restarted and verified.

- the tuner's pick is the argmax of throughput among the settings that meet
  the SLO, in the middle of the candidates (the SLO breaks the largest);
- not confirmed: the drop-in, the owned list and the generations are back
  byte for byte; --yes: the winner is in the config file and the drop-in,
  one generation over the original;
- Ctrl-C in a child: the original comes back; SIGKILL: the next `apply`
  or `tune` restores it;
- bad input: one line, and nothing applied.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_ops.apply import activate
from ollama_ops.cli.common import Env
from ollama_ops.cli.main import main
from ollama_ops.errors import ExitStatus
from ollama_ops.model import config as config_mod
from ollama_ops.plan import compose
from ollama_ops.runtime import Runtime
from ollama_ops.tune import marker
from ollama_ops.unitfile import effective
from ollama_ops.unitfile.syntax import parse_environment
from tests.helpers import FIXTURES, host
from tests.sim_helpers import SIM_PYTHON, SRC, free_port, sim_env

REPO = Path(__file__).resolve().parents[1]
FACTS = str(FIXTURES / "hosts" / "cpu-small.json")  # CPU only: the plan says NUM_PARALLEL=1
DROPIN = "etc/systemd/system/ollama.service.d/50-ollama-ops.conf"
STATE = "var/lib/ollama-ops"
MODEL = "tune:1b"

# One stream alone decodes 100 tokens/s; n streams share 100 * n**0.3 tokens/s, so each
# gets 100 * n**-0.7: throughput grows with OLLAMA_NUM_PARALLEL (1: 100, 2: 123, 4: 152,
# 8: 187 tokens/s) while the time per output token grows faster (10, 16, 26, 43 ms).
# Under tpot=33ms the best is 4: the largest breaks the SLO, the smaller are slower.
PROFILE: dict[str, Any] = {
    "gpus": [{"id": "GPU-tune", "name": "Tune GPU", "vram_bytes": 24 * 1024**3}],
    "models": [
        {
            "name": MODEL,
            "size": 1_000_000_000,
            "family": "llama",
            "parameter_size": "1B",
            "quantization_level": "Q4_0",
            "context_length": 8192,
            "load_seconds": 0.2,
            "prompt_tps": 1e6,
            "decode_tps": 100,
            "scaling_alpha": 0.3,
            "saturation": 64,
            "response_tokens": 30,
        }
    ],
}
SLO = "tpot=33ms"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class SimService:
    """ollama.service as systemd would run it here: the simulator with the drop-in's
    environment. The running process is recorded in a pid file, so another process (the
    test, after a tune was killed) can take the service over."""

    def __init__(self, root: Path, home: Path, port: int) -> None:
        self.root, self.home, self.port = root, home, port
        self.pidfile = home / "service.pid"
        self.log = home / "service.log"
        self.profile = home / "profile.json"
        self.profile.write_text(json.dumps(PROFILE))
        self.calls: list[str] = []
        self.props = activate.expected_properties(compose.build(host("cpu-small"), config(port)))

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def environment(self) -> dict[str, str]:
        unit = effective.load_effective(self.root, "ollama.service")
        env = parse_environment([a.value for a in unit.values("Service", "Environment")])
        return {k: v for k, v in env.items() if k.startswith("OLLAMA_") and k != "OLLAMA_MODELS"}

    def running_env(self) -> dict[str, str]:
        pid = self.pid()
        assert pid is not None, "the service is not running"
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        pairs = (item.decode().partition("=") for item in raw if item)
        return {k: v for k, _, v in pairs if k.startswith("OLLAMA_")}

    # -- what apply asks of systemd

    def manager_version(self) -> str:
        return "252"

    def daemon_reload(self) -> None:
        self.calls.append("daemon-reload")

    def restart(self, unit: str) -> None:
        self.calls.append("restart")
        self.stop(unit)
        env = sim_env(str(self.home), self.port, **self.environment())
        env.update(OLLAMA_MODELS=str(self.home / "models"), OLLAMA_SIM_PROFILE=str(self.profile))
        with self.log.open("a") as log:
            proc = subprocess.Popen(
                [SIM_PYTHON, "-m", "ollama_ops.sim", "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pidfile.write_text(str(proc.pid))

    def stop(self, unit: str = "ollama.service") -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        deadline = time.monotonic() + 10
        while _alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def enable(self, unit: str) -> None:
        self.calls.append("enable")

    def disable(self, unit: str) -> None:
        self.calls.append("disable")

    def reset_failed(self, unit: str) -> None:
        self.calls.append("reset-failed")

    def set_property_runtime(self, unit: str, assignments: Any) -> None:
        self.calls.append("set-property")

    def show(self, unit: str, props: Any) -> dict[str, str]:
        up = self.pid() is not None
        state = {
            "ActiveState": "active" if up else "inactive",
            "SubState": "running" if up else "dead",
            "Result": "success",
            "NRestarts": "0",
            "ExecMainStatus": "0",
            **self.props,
        }
        return {p: state.get(p, "") for p in props}

    def journal_tail(self, unit: str, lines: int = 5) -> list[str]:
        text = self.log.read_text() if self.log.exists() else ""
        return text.splitlines()[-lines:]


def config(port: int) -> config_mod.DeploymentConfig:
    return config_mod.loads(CONFIG.format(port=port))


CONFIG = """\
# the operator's config: tune must keep this comment and the rest of the file
[service]
bind = "127.0.0.1:{port}"

[environment]
OLLAMA_KEEP_ALIVE = "10m"  # and this one
"""


def make_env(service: SimService) -> tuple[Env, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()

    def runtime(root: Path) -> Runtime:
        return Runtime(root=root, make_systemctl=lambda: service, live_override=True)

    return Env(out, err, make_runtime=runtime), out, err


def cli(service: SimService, *argv: str) -> tuple[int, str, str]:
    env, out, err = make_env(service)
    facts = [] if argv[0] == "rollback" else ["--facts", FACTS]
    code = main([*argv, "--root", str(service.root), *facts], env)
    return code, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file ollama-ops wrote or keeps: the drop-in, the config, the state directory."""
    files = {}
    for base in (root / "etc", root / STATE):
        for p in sorted(base.rglob("*")):
            if p.is_file() and p.name != "tune.lock":
                files[str(p.relative_to(root))] = p.read_bytes()
    return files


@pytest.fixture
def service(root: Path, tmp_path: Path) -> Iterator[SimService]:
    """ollama-ops applied over the installer's unit, the simulator running as the service."""
    home = tmp_path / "home"
    home.mkdir()
    svc = SimService(root, home, free_port())
    (root / "etc/ollama-ops").mkdir(parents=True)
    (root / "etc/ollama-ops/ollama-ops.toml").write_text(CONFIG.format(port=svc.port))
    try:
        code, out, err = cli(svc, "apply", "--timeout", "30")
        assert code == 0, out + err
        yield svc
    finally:
        svc.stop()


def tune(service: SimService, *argv: str) -> tuple[int, str, str]:
    return cli(service, "tune", "--model", MODEL, *argv)


def test_the_pick_is_the_best_throughput_that_meets_the_slo(
    service: SimService, tmp_path: Path
) -> None:
    before = snapshot(service.root)
    report = tmp_path / "tune.json"
    code, out, err = tune(
        service, "--param", "num_parallel=1,2,4,8", "--slo", SLO, "--min-share", "90",
        "--concurrency", "8", "--duration", "3", "--json", str(report),
    )  # fmt: skip
    assert code == 0, out + err
    doc = json.loads(report.read_text())
    rows = doc["settings"]
    assert [r["setting"]["OLLAMA_NUM_PARALLEL"] for r in rows] == ["1", "2", "4", "8"]
    assert all(r["figures"] and r["figures"]["ok"] == r["figures"]["requests"] for r in rows), rows
    # The full sweep, judged here from its figures: the argmax among those meeting the SLO.
    meets = [r for r in rows if r["figures"]["slo_share"] >= 0.9]
    best = max(meets, key=lambda r: r["figures"]["output_tokens_per_s"])
    assert doc["winner"] == best["setting"] and best["winner"]
    # Not trivially the first or the last: the SLO breaks the largest, the smaller are slower.
    assert doc["winner"] == {"OLLAMA_NUM_PARALLEL": "4"}, out
    assert rows[3]["why_lost"].startswith("breaks the SLO"), rows[3]
    assert all(rows[i]["why_lost"].startswith("slower") for i in (0, 1)), rows
    tps = [r["figures"]["output_tokens_per_s"] for r in rows]
    assert tps[0] < tps[1] < tps[2] < tps[3], tps  # the simulator's curve, as measured
    # One benchmark per setting, one restart per setting that differs from the current.
    assert service.calls.count("restart") == 1 + 3 + 1  # the fixture's apply, 3, the restore
    # Not confirmed (no terminal, no --yes): everything is back as it was, byte for byte.
    assert "not written" in out and "--yes" in out
    assert snapshot(service.root) == before
    assert service.running_env()["OLLAMA_NUM_PARALLEL"] == "1"
    assert out.splitlines()[0].startswith("tune: best is num_parallel=4: ")
    assert all(len(line) <= 100 for line in out.splitlines())


def test_yes_writes_the_winner_and_applies_it_as_one_generation(service: SimService) -> None:
    before = snapshot(service.root)
    code, out, err = tune(
        service, "--param", "num_parallel=1,4", "--concurrency", "4", "--duration", "1.5", "--yes"
    )
    assert code == 0, out + err
    assert "kept: wrote OLLAMA_NUM_PARALLEL = 4" in out, out
    text = (service.root / "etc/ollama-ops/ollama-ops.toml").read_text()
    assert config_mod.loads(text).environment["OLLAMA_NUM_PARALLEL"] == "4"
    old = before["etc/ollama-ops/ollama-ops.toml"].decode()
    assert text.startswith(old.rstrip("\n")) and "# and this one" in text  # the rest intact
    dropin = (service.root / DROPIN).read_text()
    assert "OLLAMA_NUM_PARALLEL=4" in dropin and service.running_env()["OLLAMA_NUM_PARALLEL"] == "4"
    assert marker.generations(service.root) == [1, 2]  # the fixture's apply, the winner
    assert marker.read(service.root) is None
    # A plain apply now changes nothing; a rollback brings back the drop-in from before tune.
    code, out, _err = cli(service, "apply")
    assert code == 0 and "nothing to change" in out
    code, out, _err = cli(service, "rollback")
    assert code == 0
    assert (service.root / DROPIN).read_bytes() == before[DROPIN]


def test_a_missing_model_or_server_and_bad_options_apply_nothing(service: SimService) -> None:
    before = snapshot(service.root)
    restarts = service.calls.count("restart")
    cases = [
        (["--model", "nope:1b"], ExitStatus.COMMAND_FAILED, "model 'nope:1b' is not on"),
        (["--model", MODEL, "--url", f"http://127.0.0.1:{free_port()}"], 3, "cannot reach"),
        (["--model", MODEL, "--param", "num_paralel=1,2"], 2, "did you mean 'num_parallel'?"),
        (["--model", MODEL, "--slo", "ttft<5"], 2, "--slo 'ttft<5': cannot read"),
        (["--model", MODEL, "--param", "num_parallel=0"], 2, "whole number from 1 to 256"),
    ]
    for argv, status, needle in cases:
        code, out, err = cli(service, "tune", *argv)
        assert code == status, (argv, out, err)
        assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
        assert out == ""
        assert snapshot(service.root) == before
    assert service.calls.count("restart") == restarts  # nothing was restarted either


def test_tune_refuses_when_the_config_was_not_applied(service: SimService) -> None:
    path = service.root / "etc/ollama-ops/ollama-ops.toml"
    path.write_text(path.read_text() + 'OLLAMA_DEBUG = "1"\n')
    before = snapshot(service.root)
    code, _out, err = tune(service, "--duration", "1")
    assert code == ExitStatus.BAD_INPUT and "run `ollama-ops apply` first" in err, err
    assert snapshot(service.root) == before


# ---------------------------------------------------------------- interrupted and killed

_CHILD = """
import sys
from pathlib import Path
from tests.test_tune_sim import SimService, make_env
from ollama_ops.cli.main import main
root, home, port, *argv = sys.argv[1:]
service = SimService(Path(root), Path(home), int(port))
env, out, err = make_env(service)
env.stdout, env.stderr = sys.stdout, sys.stderr
sys.exit(main(argv + ["--root", root], env))
"""


@contextlib.contextmanager
def tune_child(service: SimService, *argv: str) -> Iterator[subprocess.Popen[str]]:
    """`ollama-ops tune` in a child process (signals reach it alone), on the same service."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{REPO}", "PYTHONUNBUFFERED": "1"}
    args = [str(service.root), str(service.home), str(service.port), "tune", "--model", MODEL]
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, *args, "--facts", FACTS, *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 90) -> str:
    """The child's stderr up to the line holding ``needle`` (its benchmark then runs 5 s)."""
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if not ready:
            continue
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            time.sleep(0.5)  # into the benchmark
            return "".join(seen)
    raise AssertionError(f"no {needle!r} from the tune: {''.join(seen)}")


SECOND = "num_parallel=2: applied as generation"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_restores_the_original(
    service: SimService, sig: signal.Signals, tmp_path: Path
) -> None:
    before = snapshot(service.root)
    report = tmp_path / "partial.json"
    argv = ("--param", "num_parallel=1,2,4", "--concurrency", "2", "--duration", "5", "--yes")
    with tune_child(service, *argv, "--json", str(report)) as proc:
        err = wait_for_line(proc, SECOND)
        proc.send_signal(sig)
        err += proc.communicate(timeout=60)[1]
    assert proc.returncode == ExitStatus.INTERRUPTED, err
    assert "tune interrupted; restored the original configuration" in err, err
    assert "Traceback" not in err
    assert snapshot(service.root) == before
    assert service.running_env()["OLLAMA_NUM_PARALLEL"] == "1"
    doc = json.loads(report.read_text())  # the settings measured so far
    assert doc["partial"] and doc["winner"] is None and not doc["kept"]
    assert [r["setting"]["OLLAMA_NUM_PARALLEL"] for r in doc["settings"]] == ["1"]
    assert doc["settings"][0]["figures"]["ok"] > 0


@pytest.mark.parametrize("next_command", ["apply", "tune"])
def test_a_killed_tune_is_restored_by_the_next_apply_or_tune(
    service: SimService, next_command: str
) -> None:
    before = snapshot(service.root)
    argv = ("--param", "num_parallel=1,2,4", "--concurrency", "2", "--duration", "5", "--yes")
    with tune_child(service, *argv) as proc:
        wait_for_line(proc, SECOND)
        proc.kill()
        proc.wait(30)
    assert marker.read(service.root) is not None  # the killed tune left its marker
    assert service.running_env()["OLLAMA_NUM_PARALLEL"] == "2"
    if next_command == "apply":
        code, out, err = cli(service, "apply")
        assert code == 0, out + err
        assert "was cut short: restored the original configuration" in err, err
        assert "nothing to change" in out
    else:
        code, out, err = tune(service, "--param", "num_parallel=1", "--duration", "1")
        assert code == 0, out + err
        assert "was cut short: restored the original configuration" in err, err
        assert "the current setting is the best" in out
    assert snapshot(service.root) == before
    assert service.running_env()["OLLAMA_NUM_PARALLEL"] == "1"
