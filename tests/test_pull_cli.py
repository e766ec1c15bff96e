"""`ollama-ops pull` and apply's [models] step, in-process, against the simulator and the
registry stand-in on 127.0.0.1.

systemd is the fake of test_models_egress (``SystemdModel``); the registry
stands behind a gate that answers 403 while that model's ``IPAddressDeny`` is
closed, as the service's IP filter would refuse the connection. So a pull
passes only if egress was really opened first, and a pull after the command
proves it was closed again.
"""

from __future__ import annotations

import io
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from ollama_ops.apply import activate
from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.errors import ExitStatus
from ollama_ops.model import config
from ollama_ops.models import egress
from ollama_ops.plan import compose
from tests.helpers import FIXTURES, FakeOllama, fake_runtime, host
from tests.sim_helpers import RegistryThread, SimThread
from tests.test_models_egress import CLOSE_SEQUENCE, CLOSED, OPEN_CALL, SystemdModel

MODEL = "smollm2:135m"
FACTS = str(FIXTURES / "hosts" / "nvidia-1x24g.json")


class GatedRegistry(RegistryThread):
    """The registry stand-in in a thread; ``allowed()`` False answers 403 (the IP filter).

    ``served`` lists (method, path, allowed); ``on_blob`` runs when a blob GET starts.
    """

    def __init__(self, allowed: Callable[[], bool], rate: float = 0.0) -> None:
        super().__init__(rate)
        self.allowed = allowed
        self.served: list[tuple[str, str, bool]] = []
        self.on_blob: Callable[[], None] | None = None

    def intercept(self, request: web.Request) -> web.StreamResponse | None:
        ok = self.allowed()
        self.served.append((request.method, request.path, ok))
        if not ok:
            return web.Response(status=403, text="blocked by the test's IP filter")
        if request.method == "GET" and "/blobs/" in request.path and self.on_blob:
            self.on_blob()
        return None


@pytest.fixture
def model(tmp_path: Path) -> SystemdModel:
    (tmp_path / "root").mkdir()
    return SystemdModel(tmp_path / "root")


@pytest.fixture
def registry(model: SystemdModel) -> Iterator[GatedRegistry]:
    with GatedRegistry(lambda: model.open) as r:
        yield r


@pytest.fixture
def sim(registry: GatedRegistry, tmp_path: Path, model: SystemdModel) -> Iterator[SimThread]:
    store = tmp_path / "models"
    store.mkdir()
    with SimThread(env={"OLLAMA_MODELS": str(store)}, registry=registry.url) as s:
        model.fake.props["Environment"] = f"OLLAMA_HOST={s.url.removeprefix('http://')}"
        yield s


def run(model: SystemdModel, *argv: str, ollama: FakeOllama | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, make_runtime=lambda r: fake_runtime(r, model.fake, ollama=ollama))
    code = cli.main([*argv, "--root", str(model.root)], env)
    return code, out.getvalue(), err.getvalue()


def tags(sim: SimThread) -> list[str]:
    return [m["name"] for m in httpx.get(sim.url + "/api/tags", timeout=10).json()["models"]]


def direct_pull_fails(sim: SimThread, name: str = "qwen3:0.6b") -> bool:
    """A pull through the server without ollama-ops: refused while egress is closed."""
    reply = httpx.post(sim.url + "/api/pull", json={"model": name, "stream": False}, timeout=30)
    return reply.status_code == 500 and "403" in reply.json()["error"]


def test_pull_opens_egress_pulls_and_closes_it(
    model: SystemdModel, sim: SimThread, registry: GatedRegistry
) -> None:
    assert direct_pull_fails(sim)  # closed: the registry cannot be reached
    code, out, err = run(model, "pull", MODEL)  # the URL comes from the unit's OLLAMA_HOST
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"pulling {MODEL} through {sim.url}")
    assert lines[1] == "opened egress of ollama.service for the pull (IPAddressDeny= at runtime)"
    assert f"{MODEL}: pulling manifest" in lines and f"{MODEL}: success" in lines
    assert lines[-2] == f"closed egress of ollama.service again: IPAddressDeny={CLOSED}"
    assert lines[-1].startswith("pulled 1 model(s), 2.0 MiB; egress of ollama.service was open")
    assert all(len(line) <= 100 for line in lines)
    assert MODEL in tags(sim)
    ours = [ok for _, path, ok in registry.served if "/smollm2/" in path]
    assert ours and all(ours)  # every request of the pull came while egress was open
    assert model.commands() == [OPEN_CALL, *CLOSE_SEQUENCE]
    assert not model.control.exists() and model.deny == CLOSED
    assert direct_pull_fails(sim)  # closed again


def test_json_lines(model: SystemdModel, sim: SimThread) -> None:
    code, out, _ = run(model, "pull", MODEL, "--url", sim.url, "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    events = [r["event"] for r in rows]
    assert events[:2] == ["start", "open"] and events[-3:] == ["pulled", "closed", "done"]
    progress = [r for r in rows if r["event"] == "progress"]
    assert progress[0]["status"] == "pulling manifest" and progress[-1]["status"] == "success"
    assert any(r.get("total") for r in progress)


def test_an_unknown_model_is_exit_3_and_egress_is_closed(
    model: SystemdModel, sim: SimThread
) -> None:
    code, out, err = run(model, "pull", "nosuch:1b", "--url", sim.url)
    assert code == ExitStatus.COMMAND_FAILED
    assert (
        err.count("\n") == 1
        and "pulling nosuch:1b failed: pull model manifest: file does not exist" in err
    )
    assert "closed egress of ollama.service again" in out
    assert model.deny == CLOSED and model.commands() == [OPEN_CALL, *CLOSE_SEQUENCE]


def test_ctrl_c_in_the_middle_of_a_download_closes_egress(
    model: SystemdModel, tmp_path: Path
) -> None:
    with GatedRegistry(lambda: model.open, rate=512 * 1024) as slow:
        slow.on_blob = lambda: os.kill(os.getpid(), signal.SIGINT)
        store = tmp_path / "models"
        store.mkdir()
        with SimThread(env={"OLLAMA_MODELS": str(store)}, registry=slow.url) as s:
            code, out, err = run(model, "pull", "tinyllama:1.1b", "--url", s.url)
            assert code == ExitStatus.INTERRUPTED, err
            assert "closed egress of ollama.service again" in out
            assert model.deny == CLOSED and model.commands() == [OPEN_CALL, *CLOSE_SEQUENCE]
            assert not egress.Paths.of(model.root, "ollama.service").marker.exists()
            assert "tinyllama:1.1b" not in tags(s)


def test_pull_without_names_takes_the_config_models(model: SystemdModel, sim: SimThread) -> None:
    conf = model.root / "etc/ollama-ops/ollama-ops.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text('[models]\npull = ["smollm2"]\nwarm = ["qwen3:0.6b"]\n')
    code, out, err = run(model, "pull", "--url", sim.url)
    assert code == 0, err
    assert "pulling smollm2:latest, qwen3:0.6b through" in out
    assert {"smollm2:latest", "qwen3:0.6b"} <= set(tags(sim))
    assert model.commands() == [OPEN_CALL, *CLOSE_SEQUENCE]  # one window for both


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["pull"], "name the models to pull"),
        (["pull", "a/b/c/d"], "not a model name Ollama accepts"),
    ],
)
def test_bad_input_is_exit_2_and_opens_nothing(
    model: SystemdModel, argv: list[str], needle: str
) -> None:
    code, _out, err = run(model, *argv)
    assert code == ExitStatus.BAD_INPUT and needle in err and err.count("\n") == 1
    assert model.commands() == []


def test_pull_refuses_a_root_other_than_the_live_one(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["pull", MODEL, "--root", str(tmp_path)], Env(out, err))
    assert code == ExitStatus.BAD_INPUT and "live system only" in err.getvalue()


def test_a_server_that_is_down_is_exit_3_and_opens_nothing(model: SystemdModel) -> None:
    code, _out, err = run(model, "pull", MODEL, "--url", "http://127.0.0.1:9")
    assert code == ExitStatus.COMMAND_FAILED and "is the service up?" in err
    assert model.commands() == []


def test_close_only(model: SystemdModel) -> None:
    code, out, _ = run(model, "pull", "--close")
    assert code == 0 and "no egress of ollama.service was left open" in out
    paths = egress.Paths.of(model.root, "ollama.service")
    paths.marker.parent.mkdir(parents=True, exist_ok=True)
    paths.marker.write_text(egress.Marker("ollama.service", CLOSED, None, 1, 0.0).dumps())
    model.fake.set_property_runtime("ollama.service", ["IPAddressDeny="])
    code, out, _ = run(model, "pull", "--close")
    assert code == 0 and "left open by an interrupted pull (pid 1)" in out
    assert model.deny == CLOSED and not paths.marker.exists()


# ---------------------------------------------------------------- apply's [models] step


def write_config(model: SystemdModel, sim: SimThread, models: str) -> None:
    conf = model.root / "etc/ollama-ops/ollama-ops.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    bind = sim.url.removeprefix("http://")
    conf.write_text(f'[service]\nbind = "{bind}"\n\n[models]\n{models}\n')


def planned_props(model: SystemdModel) -> None:
    """What systemctl show answers after a good restart: the plan's values."""
    text = (model.root / "etc/ollama-ops/ollama-ops.toml").read_text()
    d = compose.build(host("nvidia-1x24g"), config.loads(text))
    model.fake.props.update(activate.expected_properties(d))


def installer_root(model: SystemdModel) -> None:
    from tests.helpers import INSTALLER_UNIT

    unit = model.root / "etc/systemd/system/ollama.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(INSTALLER_UNIT)
    (model.root / "usr/share/ollama").mkdir(parents=True, exist_ok=True)


def test_apply_pulls_and_warms_the_models_list_and_verifies(
    model: SystemdModel, sim: SimThread
) -> None:
    installer_root(model)
    write_config(model, sim, 'pull = ["smollm2:135m"]\nwarm = ["qwen3:0.6b"]\nkeep_alive = "-1"')
    planned_props(model)
    code, out, err = run(model, "apply", "--facts", FACTS)
    assert code == 0, err
    assert "applied generation 1" in out
    assert "qwen3:0.6b: loaded (done_reason load), keep_alive -1" in out
    last = out.splitlines()[-1]
    assert last.startswith("models: pulled smollm2:135m, qwen3:0.6b (egress open ")
    assert last.endswith("closed again); loaded and kept warm: qwen3:0.6b")
    assert {"smollm2:135m", "qwen3:0.6b"} <= set(tags(sim))
    ps = httpx.get(sim.url + "/api/ps", timeout=10).json()["models"]
    assert [m["name"] for m in ps] == ["qwen3:0.6b"]
    assert int(ps[0]["expires_at"][:4]) > 2300  # keep_alive -1: Go's "forever", ~292 years
    assert model.deny == CLOSED
    opens = [c for c in model.fake.calls if c == OPEN_CALL]
    # again: nothing to change, models present, no egress opened
    code, out, err = run(model, "apply", "--facts", FACTS)
    assert code == 0, err
    assert "nothing to change" in out
    assert "already present: smollm2:135m, qwen3:0.6b" in out
    assert [c for c in model.fake.calls if c == OPEN_CALL] == opens


def test_a_failed_models_step_is_exit_3_and_says_the_service_was_applied(
    model: SystemdModel, sim: SimThread
) -> None:
    installer_root(model)
    write_config(model, sim, 'pull = ["nosuch:1b"]')
    planned_props(model)
    code, out, err = run(model, "apply", "--facts", FACTS)
    assert code == ExitStatus.COMMAND_FAILED
    assert "applied generation 1" in out
    assert err.count("\n") == 1
    assert "ollama.service was applied and is up, but its [models] step failed" in err
    assert "file does not exist" in err
    assert (model.root / "etc/systemd/system/ollama.service.d/50-ollama-ops.conf").exists()
    assert model.deny == CLOSED


def test_apply_under_a_root_does_not_pull(
    model: SystemdModel, sim: SimThread, tmp_path: Path
) -> None:
    installer_root(model)
    write_config(model, sim, 'pull = ["smollm2:135m"]')
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["apply", "--facts", FACTS, "--root", str(model.root)], Env(out, err))
    assert code == 0, err.getvalue()
    assert "models: not pulled (--root: nothing runs here)" in out.getvalue()
    assert MODEL not in tags(sim)


def test_apply_closes_egress_a_killed_pull_left_open(model: SystemdModel, sim: SimThread) -> None:
    """Without [models] too: the runtime IPAddressDeny= would otherwise outlive the apply."""
    installer_root(model)
    write_config(model, sim, "")
    planned_props(model)
    paths = egress.Paths.of(model.root, "ollama.service")
    paths.marker.parent.mkdir(parents=True)
    paths.marker.write_text(egress.Marker("ollama.service", CLOSED, None, 77, 0.0).dumps())
    model.fake.set_property_runtime("ollama.service", ["IPAddressDeny="])
    assert model.open
    code, out, err = run(model, "apply", "--facts", FACTS)
    assert code == 0, err
    assert "closed egress of ollama.service left open by an interrupted pull (pid 77)" in out
    assert model.deny == CLOSED and not paths.marker.exists()


def test_apply_no_restart_does_not_pull(model: SystemdModel, sim: SimThread) -> None:
    installer_root(model)
    write_config(model, sim, 'pull = ["smollm2:135m"]')
    code, out, err = run(model, "apply", "--facts", FACTS, "--no-restart")
    assert code == 0, err
    assert "models: not pulled (--no-restart); run `ollama-ops pull` on the host" in out
    assert MODEL not in tags(sim) and model.commands() == [("daemon-reload",)]
