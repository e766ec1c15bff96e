"""The CLI in-process: arguments, output, exit codes, one-line errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.errors import ExitStatus
from ollama_ops.runtime import Runtime
from tests.helpers import FIXTURES


def run(*argv: str, env: Env | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = env or Env()
    env.stdout, env.stderr = out, err
    code = cli.main(list(argv), env)
    return code, out.getvalue(), err.getvalue()


FACTS = str(FIXTURES / "hosts" / "nvidia-1x24g.json")


def test_facts_json_round_trips_into_plan(tmp_path: Path, root: Path) -> None:
    code, out, _ = run("facts", "--json")
    assert code == 0
    data = json.loads(out)
    for key in ("memory_bytes", "cpus", "numa_nodes", "gpus", "systemd_version"):
        assert key in data
    facts_file = tmp_path / "facts.json"
    facts_file.write_text(out)
    code, out, err = run("plan", "--facts", str(facts_file), "--root", str(root))
    assert code == 0, err
    assert "MemoryMax=" in out


def test_plan_explains_and_diffs(root: Path) -> None:
    code, out, _ = run("plan", "--facts", FACTS, "--root", str(root))
    assert code == 0
    assert "MemoryHigh=" in out
    assert "80% of" in out
    assert "CUDA_VISIBLE_DEVICES=0" in out
    assert "RestartSteps (not written)" not in out  # the fixture host runs systemd 255
    assert "+++ b/etc/systemd/system/ollama.service.d/50-ollama-ops.conf" in out


def test_apply_dry_run_then_apply_then_nothing(root: Path) -> None:
    code, out, _ = run("apply", "--facts", FACTS, "--root", str(root), "--dry-run")
    assert code == ExitStatus.CHANGES_PENDING
    assert "+++ b/" in out
    assert not (root / "etc/systemd/system/ollama.service.d").exists()
    code, out, _ = run("apply", "--facts", FACTS, "--root", str(root))
    assert code == 0
    assert "generation 1" in out
    code, out, _ = run("apply", "--facts", FACTS, "--root", str(root))
    assert code == 0
    assert "nothing to change" in out
    code, out, _ = run("apply", "--facts", FACTS, "--root", str(root), "--dry-run")
    assert code == 0
    code, out, _ = run("rollback", "--root", str(root))
    assert code == 0
    assert not (root / "etc/systemd/system/ollama.service.d/50-ollama-ops.conf").exists()


def test_config_inside_root_is_used(root: Path) -> None:
    cfg = root / "etc/ollama-ops/ollama-ops.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[limits]\ncpu_weight = 321\n")
    code, out, _ = run("plan", "--facts", FACTS, "--root", str(root))
    assert code == 0
    assert "CPUWeight=321" in out
    assert "config" in out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("[limits]\nmemroy_max = '1G'\n", "did you mean 'memory_max'"),
        ("[limits]\nmemory_max = '-1G'\n", "not a size"),
        (
            "[limits]\nmemory_high = '9G'\nmemory_max = '8G'\n",
            "MemoryHigh must be at most MemoryMax",
        ),
        ("[service]\nbind = '0.0.0.0'\n", "exposes the API to the network"),
        ('[environment]\nX = "a\\nExecStartPre=/bin/evil"\n', "control character"),
        ("not toml ===", "not valid TOML"),
    ],
)
def test_bad_config_one_line_nonzero_nothing_written(root: Path, content: str, needle: str) -> None:
    cfg = root / "bad.toml"
    cfg.write_text(content)
    before = sorted(p for p in root.rglob("*"))
    code, _out, err = run("apply", "--facts", FACTS, "--config", str(cfg), "--root", str(root))
    assert code == ExitStatus.BAD_INPUT
    assert needle in err
    assert err.count("\n") == 1
    assert err.startswith("ollama-ops: error: ")
    assert sorted(p for p in root.rglob("*")) == before


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{", "not valid JSON"),
        ('{"memory_bytes": -5}', "impossible"),
        ('{"memory_bytes": 1000, "cpu": 4}', "did you mean 'cpus'"),
        ('{"memory_bytes": 1000, "gpus": [{"vendor": "intel"}]}', "use one of"),
        ('{"memory_bytes": 1000, "numa_nodes": [{"id": 0, "cpus": "0-x"}]}', "CPU list"),
    ],
)
def test_bad_facts_one_line(root: Path, tmp_path: Path, content: str, needle: str) -> None:
    facts_file = tmp_path / "f.json"
    facts_file.write_text(content)
    code, _, err = run("plan", "--facts", str(facts_file), "--root", str(root))
    assert code == ExitStatus.BAD_INPUT
    assert needle in err
    assert err.count("\n") == 1


def test_missing_root_and_missing_facts_file(tmp_path: Path) -> None:
    code, _, err = run("plan", "--root", str(tmp_path / "nope"))
    assert code == ExitStatus.BAD_INPUT
    assert "is not a directory" in err
    code, _, err = run("plan", "--facts", str(tmp_path / "nope.json"), "--root", str(tmp_path))
    assert code == ExitStatus.BAD_INPUT
    assert "cannot be read" in err


def test_rollback_without_generation_is_not_a_failure(root: Path) -> None:
    code, out, _ = run("rollback", "--root", str(root))
    assert code == ExitStatus.OK
    assert "nothing to roll back" in out


def test_live_apply_without_systemctl_fails_before_writing(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(root))
    before = sorted(root.rglob("*"))
    live = Env(make_runtime=lambda r: Runtime(root=r, live_override=True))
    code, _, err = run("apply", "--facts", FACTS, "--root", str(root), env=live)
    assert code == ExitStatus.COMMAND_FAILED
    assert "systemctl not found" in err
    assert sorted(root.rglob("*")) == before


def test_audit_exit_code_follows_worst_finding(root: Path) -> None:
    guide = (FIXTURES / "audit" / "guide-hardened.conf").read_text()
    dropin = root / "etc/systemd/system/ollama.service.d/hardened.conf"
    dropin.parent.mkdir(parents=True)
    dropin.write_text(guide)
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/ollama").write_text("#!/bin/sh\n")
    (root / "usr/local/bin/ollama").chmod(0o755)
    code, out, _ = run("audit", "--root", str(root), "--facts", FACTS, "--json")
    report = json.loads(out)
    ids = {f["id"] for f in report["findings"]}
    # The fixture host runs systemd 255, so RestartSteps= is known there.
    assert {"misplaced-key", "api-exposed", "home-not-writable"} <= ids
    assert code == {"warning": 10, "error": 11, "critical": 12}[report["worst"]]
    assert code >= ExitStatus.AUDIT_ERROR

    dropin.unlink()
    code, _, err = run("apply", "--facts", FACTS, "--root", str(root))
    assert code == 0, err
    code, out, _ = run("audit", "--root", str(root), "--facts", FACTS)
    assert code == ExitStatus.OK, out


def test_simulate_passes_every_argument_to_the_simulator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        code: object = cli.main(["simulate", "--help"])
    except SystemExit as exc:  # argparse's way of ending --help
        code = exc.code
    assert code == 0
    assert "usage: ollama serve" in capsys.readouterr().out


def test_simulate_serves_the_api(tmp_path: Path) -> None:
    """`ollama-ops simulate` as a user starts it: a real process on a free loopback port."""
    import os
    import socket
    import subprocess
    import sys
    import time

    from ollama_ops.host.ollama_api import HttpOllama

    api = HttpOllama()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HOME": str(tmp_path), "OLLAMA_HOST": f"127.0.0.1:{port}"}
    exe = Path(sys.executable).parent / "ollama-ops"
    server = subprocess.Popen([str(exe), "simulate"], env=env, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            if api.is_up(url, timeout=0.5):
                break
            time.sleep(0.1)
        assert api.is_up(url)
        assert api.version(url)
        assert (tmp_path / ".ollama" / "id_ed25519").stat().st_mode & 0o777 == 0o600
    finally:
        server.terminate()
        assert server.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("home", "/usr/share/my ollama"),
        ("binary", "/bin/ollama\nExecStartPre=/bin/sh"),
        ("user", "ollama root"),
    ],
)
def test_facts_values_that_would_split_a_unit_line_are_refused(
    root: Path, tmp_path: Path, field: str, value: str
) -> None:
    data = json.loads((FIXTURES / "hosts" / "cpu-small.json").read_text())
    data["ollama"][field] = value
    facts_file = tmp_path / "f.json"
    facts_file.write_text(json.dumps(data))
    code, _, err = run("apply", "--facts", str(facts_file), "--root", str(root))
    assert code == ExitStatus.BAD_INPUT
    assert f"ollama.{field}" in err
    assert err.count("\n") == 1
    assert not (root / "etc/systemd/system/ollama.service.d").exists()


def test_second_apply_keeps_the_unit_it_wrote(tmp_path: Path) -> None:
    data = json.loads((FIXTURES / "hosts" / "cpu-small.json").read_text())
    data["ollama"] = {"binary": "/usr/local/bin/ollama"}  # no user, no unit
    facts_file = tmp_path / "f.json"
    facts_file.write_text(json.dumps(data))
    root = tmp_path / "r"
    root.mkdir()
    code, out, err = run("apply", "--facts", str(facts_file), "--root", str(root))
    assert code == 0, err
    assert (root / "etc/systemd/system/ollama.service").is_file()
    code, out, err = run("apply", "--facts", str(facts_file), "--root", str(root))
    assert code == 0 and "nothing to change" in out, out + err
    assert (root / "etc/systemd/system/ollama.service").is_file()


def test_vendor_unit_of_the_configured_name_is_not_shadowed(root: Path) -> None:
    vendor = root / "usr/lib/systemd/system/ollama-gpu.service"
    vendor.parent.mkdir(parents=True)
    vendor.write_text("[Service]\nExecStart=/opt/ollama/bin/ollama serve\nUser=ollama\n")
    cfg = root / "etc/ollama-ops/ollama-ops.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[service]\nunit = "ollama-gpu.service"\n')
    code, out, err = run("plan", "--root", str(root), "--facts", FACTS)
    assert code == 0, err
    assert "etc/systemd/system/ollama-gpu.service.d/50-ollama-ops.conf" in out
    assert "+++ b/etc/systemd/system/ollama-gpu.service\n" not in out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"memory_bytes": 34359738368, "cpus": 4, "numa_nodes": 5}', "must be a list"),
        (b'{"memory_bytes": 1000, "hostname": "\xff"}', "not UTF-8"),
    ],
)
def test_malformed_facts_types_are_one_line(
    root: Path, tmp_path: Path, content: bytes, needle: str
) -> None:
    facts_file = tmp_path / "f.json"
    facts_file.write_bytes(content)
    code, _, err = run("plan", "--facts", str(facts_file), "--root", str(root))
    assert code == ExitStatus.BAD_INPUT
    assert needle in err and err.count("\n") == 1


def test_dry_run_checks_what_apply_would_refuse(root: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[service]\nmodels_dir = "/data/models"\n')
    code, _, err = run(
        "apply", "--facts", FACTS, "--config", str(cfg), "--root", str(root), "--dry-run"
    )
    assert code == ExitStatus.BAD_INPUT and "does not exist" in err


def test_readme_exit_codes_are_the_one_table() -> None:
    from ollama_ops.errors import exit_codes_markdown

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("<!-- exit-codes:start -->\n")[1].split("<!-- exit-codes:end -->")[0]
    assert block == exit_codes_markdown()


def test_a_symlink_loop_in_the_dropin_directory_is_not_changes_pending(root: Path) -> None:
    # Issue 6: an unexpected OSError used to exit 1, which --dry-run means "changes pending".
    loop = root / "etc/systemd/system/ollama.service.d"
    loop.symlink_to(loop)  # the drop-in directory is a symlink to itself
    code, _, err = run("apply", "--dry-run", "--root", str(root), "--facts", FACTS)
    assert code not in (ExitStatus.OK, ExitStatus.CHANGES_PENDING, ExitStatus.INTERNAL), err
    assert code in (ExitStatus.BAD_INPUT, ExitStatus.STATE)
    assert err.count("\n") == 1 and "ollama.service.d" in err


def test_a_file_where_the_generations_directory_should_be_is_a_state_error(root: Path) -> None:
    state = root / "var/lib/ollama-ops"
    state.mkdir(parents=True, mode=0o700)
    (state / "generations").write_text("not a directory")
    code, _, err = run("apply", "--root", str(root), "--facts", FACTS)
    assert code == ExitStatus.STATE, err
    assert err.count("\n") == 1 and "generations" in err


def test_an_unexpected_exception_is_one_line_and_its_own_code(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ollama_ops.cli import common

    def boom(*_: object, **__: object) -> None:
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(common, "load_config", boom)
    code, _, err = run("plan", "--root", str(root), "--facts", FACTS)
    assert code == ExitStatus.INTERNAL
    assert err.count("\n") == 1 and "ZeroDivisionError" in err and "--debug" in err
    code, _, err = run("--debug", "plan", "--root", str(root), "--facts", FACTS)
    assert code == ExitStatus.INTERNAL  # --debug adds the traceback, never changes the code
    assert "Traceback" in err
