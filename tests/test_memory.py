"""`ollama-ops memory`: cgroup v1/v2 readers on recorded files, the +20/+40 % rule, --apply."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from ollama_ops.apply import activate
from ollama_ops.cli.common import Env
from ollama_ops.cli.main import main
from ollama_ops.errors import ExitStatus, OpsError
from ollama_ops.host import proc
from ollama_ops.memory import cgroup
from ollama_ops.memory.recommend import LoadedModel, Observation, recommend
from ollama_ops.model import config
from ollama_ops.plan.compose import build
from ollama_ops.runtime import Runtime
from tests.helpers import FIXTURES, FakeOllama, FakeSystemctl, fake_runtime, host

CGROUPS = FIXTURES / "cgroup"
GROUP = "/system.slice/ollama.service"
GiB = 1024**3
HOST = str(FIXTURES / "hosts" / "nvidia-1x24g.json")  # 64 GiB of RAM


# ---------------------------------------------------------------- readers


def test_v1_real_files() -> None:
    cg = cgroup.read(CGROUPS / "v1", GROUP, "ollama.service")
    assert (cg.version, cg.current, cg.peak) == (1, 166637568, 742699008)
    assert cg.max is None and cg.high is None  # 9223372036854771712 = no limit
    assert cg.oom_kills == 0
    assert cg.path == "/sys/fs/cgroup/memory/system.slice/ollama.service"


def test_v1_real_oom_kill() -> None:
    cg = cgroup.read(CGROUPS / "v1-oom", GROUP, "ollama.service")
    assert (cg.peak, cg.max, cg.oom_kills, cg.limit_hits) == (256 * 1024**2, 256 * 1024**2, 1, 92)


def test_v2_files_and_missing_peak(tmp_path: Path) -> None:
    cg = cgroup.read(CGROUPS / "v2", GROUP, "ollama.service")
    assert (cg.version, cg.current, cg.peak) == (2, 9784467456, 11177320448)
    assert (cg.high, cg.max) == (51109691392, 59415461888)
    assert cg.events == {
        "low": 0,
        "high": 0,
        "max": 0,
        "oom": 0,
        "oom_kill": 0,
        "oom_group_kill": 0,
    }
    oom = cgroup.read(CGROUPS / "v2-oom", GROUP, "ollama.service")
    assert (oom.high, oom.oom_kills, oom.limit_hits) == (None, 1, 35)  # memory.high "max"
    old_kernel = tmp_path / "root"
    shutil.copytree(CGROUPS / "v2", old_kernel)
    (old_kernel / "sys/fs/cgroup/system.slice/ollama.service/memory.peak").unlink()
    assert cgroup.read(old_kernel, GROUP, "ollama.service").peak is None


def test_no_cgroup_is_one_line(tmp_path: Path) -> None:
    for group, needle in (("", "not running"), (GROUP, "no memory accounting")):
        with pytest.raises(OpsError, match=needle) as err:
            cgroup.read(tmp_path, group, "ollama.service")
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------- the rule


def obs(name: str, **kw: object) -> Observation:
    base: dict[str, object] = {
        "unit": "ollama.service",
        "memory": cgroup.read(CGROUPS / name, GROUP, "ollama.service"),
        "host_memory": 64 * GiB,
        "uptime_s": 6 * 3600.0,
        "loads_since_start": 3,
        "loaded": (),
    }
    base.update(kw)
    return Observation(**base)  # type: ignore[arg-type]


def test_peak_plus_20_and_40_percent() -> None:
    rec = recommend(obs("v2"))
    peak = 11177320448
    assert rec.base == peak and rec.trusted
    assert rec.memory_high == -(-peak * 1.2 // 1024**2) * 1024**2
    assert rec.memory_max == -(-peak * 1.4 // 1024**2) * 1024**2
    assert rec.memory_high < rec.memory_max <= 64 * GiB
    assert rec.base_reason == "measured peak 10.4 GiB over 6.0 h (cgroup v2)"


def test_never_below_what_loaded_models_need() -> None:
    big = LoadedModel("llama3.1:70b", 42 * GiB, 20 * GiB)  # 22 GiB of it in RAM
    rec = recommend(obs("v2", loaded=(big,)))
    assert rec.base == 22 * GiB
    assert "the loaded models need 22.0 GiB of RAM (llama3.1:70b)" in rec.base_reason
    assert rec.memory_max >= 22 * GiB * 1.4


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"uptime_s": 600.0}, "started 10 min ago"),
        ({"loads_since_start": 0, "loaded": ()}, "no model was loaded since the start"),
    ],
)
def test_young_or_idle_peaks_are_not_trusted(kw: dict[str, object], needle: str) -> None:
    rec = recommend(obs("v2", **kw))
    assert not rec.trusted and any(needle in w for w in rec.warnings)


def test_a_capped_peak_is_not_trusted() -> None:
    rec = recommend(obs("v2-oom"))
    assert any("OOM-killed 1 time(s)" in w for w in rec.warnings)
    rec = recommend(obs("v1-oom"))
    assert any("OOM-killed" in w for w in rec.warnings)


def test_capped_at_the_host_ram() -> None:
    rec = recommend(obs("v2", host_memory=12 * GiB))
    assert rec.memory_max == 12 * GiB and rec.memory_high <= rec.memory_max
    assert any("exceeds the host's 12.0 GiB" in n for n in rec.notes)


# ---------------------------------------------------------------- the command


class NoJournal:
    def __call__(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = 60.0,
        env: Mapping[str, str] | None = None,
        input_text: str | None = None,
    ) -> proc.Completed:
        line = json.dumps(
            {"MESSAGE": 'msg="llama runner started in 3.10 seconds"', "SYSLOG_IDENTIFIER": "ollama"}
        )
        return proc.Completed(tuple(argv), 0, line + "\n", "")


def live_root(root: Path, name: str) -> Path:
    shutil.copytree(CGROUPS / name, root, dirs_exist_ok=True)
    return root


def runtime_for(root: Path, systemctl: FakeSystemctl, **kw: object) -> Runtime:
    rt = fake_runtime(
        root, systemctl, ollama=FakeOllama(models=[{"name": "llama3.2:3b", "size": 3 * GiB,
                                                    "size_vram": 3 * GiB}])
    )  # fmt: skip
    return dataclasses.replace(rt, run=NoJournal(), clock=lambda: 20000.0, **kw)  # type: ignore[arg-type]


def cli(rt: Runtime, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Env(stdout=out, stderr=err, make_runtime=lambda root: rt))
    return code, out.getvalue(), err.getvalue()


def props(started_s: float = 1000.0) -> dict[str, str]:
    return {"ControlGroup": GROUP, "ActiveEnterTimestampMonotonic": str(int(started_s * 1e6))}


def test_memory_reads_the_live_unit(root: Path) -> None:
    rt = runtime_for(live_root(root, "v2"), FakeSystemctl(props()))
    code, out, err = cli(rt, "memory", "--facts", HOST)
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("ollama.service: MemoryHigh=12792M (+20 %), MemoryMax=14924M (+40 %)")
    assert "running 5.3 h" in out and "model loads since the start: 1" in out
    assert "llama3.2:3b 3.0 GiB (0 B in RAM)" in out
    assert "The peak is trustworthy" in out
    assert all(len(line) <= 100 for line in out.splitlines()), out
    data = json.loads(cli(rt, "memory", "--facts", HOST, "--json")[1])
    assert data["recommendation"]["trusted"] is True and data["cgroup"]["version"] == 2


def test_memory_with_no_cgroup_is_one_line(root: Path) -> None:
    rt = runtime_for(root, FakeSystemctl({"ControlGroup": ""}))
    code, _out, err = cli(rt, "memory", "--facts", HOST)
    assert code == ExitStatus.BAD_INPUT and err.count("\n") == 1 and "not running" in err


def test_apply_writes_the_config_with_its_origin_and_applies(root: Path) -> None:
    live_root(root, "v2")
    cfg_path = root / "etc/ollama-ops/ollama-ops.toml"
    cfg_path.parent.mkdir(parents=True)
    cfg_path.write_text('# my notes\n[service]\nbind = "127.0.0.1:11434"  # keep\n')
    planned = build(host("nvidia-1x24g"), config.loads(
        '[limits]\nmemory_high = "12792M"\nmemory_max = "14924M"\n'
    ))  # fmt: skip
    systemctl = FakeSystemctl({**props(), **activate.expected_properties(planned)})
    rt = runtime_for(root, systemctl)
    code, _out, err = cli(rt, "memory", "--facts", HOST, "--apply")
    assert code == 0, err
    text = cfg_path.read_text()
    assert text.startswith('# my notes\n[service]\nbind = "127.0.0.1:11434"  # keep\n')
    assert 'memory_high = "12792M" # ollama-ops memory ' in text
    assert "measured peak 10.4 GiB over 5.3 h (cgroup v2)" in text
    dropin = (root / "etc/systemd/system/ollama.service.d/50-ollama-ops.conf").read_text()
    assert "MemoryHigh=12792M\n" in dropin and "MemoryMax=14924M\n" in dropin
    assert ("restart", "ollama.service") in systemctl.calls


def test_apply_refuses_an_untrusted_peak_and_restores_on_failure(root: Path) -> None:
    live_root(root, "v2")
    young = runtime_for(root, FakeSystemctl(props(started_s=19500.0)))
    code, _, err = cli(young, "memory", "--facts", HOST, "--apply")
    assert code == ExitStatus.BAD_INPUT and "not to be trusted" in err and err.count("\n") == 1
    cfg_path = root / "etc/ollama-ops/ollama-ops.toml"
    assert not cfg_path.exists()
    failing = runtime_for(root, FakeSystemctl({**props(), "ActiveState": "failed"}))
    code, _, err = cli(failing, "memory", "--facts", HOST, "--apply")
    assert code == ExitStatus.APPLY_FAILED
    assert not cfg_path.exists()  # the config went back with the files
