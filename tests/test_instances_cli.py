"""`ollama-ops instance add|list|remove` in-process: the TOML edits, output, one-line errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.errors import ExitStatus
from ollama_ops.model import config
from ollama_ops.model import facts as facts_mod
from tests.instances_helpers import two_gpu_host

COMMENTED = """\
# The operator's notes stay where they are.
[service]
bind = "127.0.0.1:11434"  # loopback only

[environment]
OLLAMA_KEEP_ALIVE = "30m"  # for every unit
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), Env(out, err))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def setup(root: Path, tmp_path: Path) -> tuple[list[str], Path]:
    facts_file = tmp_path / "facts.json"
    facts_file.write_text(facts_mod.dumps(two_gpu_host()))
    cfg = root / "etc/ollama-ops/ollama-ops.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(COMMENTED)
    return ["--root", str(root), "--facts", str(facts_file)], cfg


def test_add_list_remove_keep_the_operators_comments(setup: tuple[list[str], Path]) -> None:
    common, cfg = setup
    code, out, err = run(
        "instance", "add", "fast", "--gpus", "0", "--model", "llama3.2:3b", *common
    )
    assert code == 0, err
    assert "added ollama@fast.service on http://127.0.0.1:11435" in out
    code, out, err = run(
        "instance", "add", "big", "--gpus", "1", "--memory-max", "200G",
        "--env", "OLLAMA_KEEP_ALIVE=1h", "--models-dir", "shared", *common,
    )  # fmt: skip
    assert code == 0, err
    text = cfg.read_text()
    assert text.startswith(COMMENTED)  # every comment and value of the operator kept
    parsed = config.loads(text)
    assert [(i.name, i.port, i.gpus) for i in parsed.instances] == [
        ("big", 11436, (1,)),
        ("fast", 11435, (0,)),
    ]
    assert parsed.instances[0].memory_max == 200 * 1024**3
    assert parsed.instances[0].environment == {"OLLAMA_KEEP_ALIVE": "1h"}

    code, out, _ = run("instance", "list", *common)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "2 instance(s); no front door"
    assert lines[1].split()[:3] == ["UNIT", "URL", "GPUS"]
    assert "ollama@big.service" in lines[2] and "read-only" in lines[2] and "200.0 GiB" in lines[2]
    code, out, _ = run("instance", "list", "--json", *common)
    data = json.loads(out)
    assert [r["unit"] for r in data["instances"]] == ["ollama@big.service", "ollama@fast.service"]
    assert data["instances"][1]["gpus"] == "GPU-1f6a3b0c-0000-4000-8000-000000000000"

    code, out, err = run("instance", "remove", "big", *common)
    assert code == 0, err
    assert "`ollama-ops apply` stops ollama@big.service" in out
    text = cfg.read_text()
    assert text.startswith(COMMENTED) and "[instances.big]" not in text
    assert "[instances.fast]" in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["add", "../x"], "instance name '../x' is not allowed"),
        (["add", "a b"], "instance name 'a b' is not allowed"),
        (["add", "a%b"], "instance name 'a%b' is not allowed"),
        (["add", "x" * 300], "too long"),
        (["add", "a", "--gpus", "9"], "GPU 9 does not exist"),
        (["add", "a", "--port", "11434"], "is ollama.service's port"),
        (["add", "a", "--memory-max", "5T"], "instances.a.memory_max"),
        (["add", "a", "--env", "OLLAMA_HOST=0.0.0.0"], "ollama-ops sets OLLAMA_HOST"),
        (["add", "a", "--env", "JUNK"], "write NAME=VALUE"),
        (["add", "a", "--model", "x=1G", "--model", "y"], "to every model"),
        (["add", "a", "--gpus", "0", "--model", "llama3.1:405b"], "needs about"),
        (["remove", "nope"], "no instance 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_the_file_stays(
    setup: tuple[list[str], Path], args: list[str], needle: str
) -> None:
    common, cfg = setup
    before = cfg.read_bytes()
    code, out, err = run("instance", *args, *common)
    assert code == ExitStatus.BAD_INPUT, out + err
    assert needle in err and err.count("\n") == 1 and err.startswith("ollama-ops: error: ")
    assert cfg.read_bytes() == before


def test_second_add_of_a_name_and_a_clash_with_an_existing_instance(
    setup: tuple[list[str], Path],
) -> None:
    common, cfg = setup
    assert run("instance", "add", "a", "--gpus", "0", *common)[0] == 0
    after_first = cfg.read_bytes()
    code, _, err = run("instance", "add", "a", *common)
    assert code == ExitStatus.BAD_INPUT and "already in" in err
    code, _, err = run("instance", "add", "b", "--gpus", "0", *common)
    assert code == ExitStatus.BAD_INPUT and "GPU 0 is in instances a and b" in err
    assert cfg.read_bytes() == after_first


def test_add_creates_the_config_and_plan_then_shows_the_instance(
    root: Path, tmp_path: Path
) -> None:
    facts_file = tmp_path / "facts.json"
    facts_file.write_text(facts_mod.dumps(two_gpu_host()))
    common = ["--root", str(root), "--facts", str(facts_file)]
    code, _, err = run("instance", "add", "solo", "--gpus", "0", *common)
    assert code == 0, err
    assert (root / "etc/ollama-ops/ollama-ops.toml").read_text() == (
        "[instances.solo]\ngpus = [0]\nport = 11435\n"
    )
    code, out, _ = run("plan", *common)
    assert code == 0
    assert "Settings for ollama@solo.service" in out
    assert "+++ b/etc/systemd/system/ollama@solo.service.d/50-ollama-ops.conf" in out
    code, out, _ = run("apply", "--dry-run", *common)
    assert code == ExitStatus.CHANGES_PENDING and "ollama@.service" in out
    code, out, err = run("apply", *common)
    assert code == 0, err
    code, out, _ = run("apply", "--dry-run", *common)
    assert code == 0 and out == "nothing to change\n"


def test_plan_and_apply_refuse_an_instance_store_that_does_not_exist(
    setup: tuple[list[str], Path], root: Path
) -> None:
    """The one preflight (plan/preflight.py) covers each instance's write paths too."""
    common, cfg = setup
    cfg.write_text('[instances.big]\ngpus = [1]\nport = 11436\nmodels_dir = "/srv/big"\n')
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    for command in (["plan"], ["apply", "--dry-run"], ["apply"]):
        code, out, err = run(*command, *common)
        assert code != 0, (command, out)
        assert "ReadWritePaths=/srv/big" in err and "does not exist" in err, (command, err)
        assert err.count("\n") == 1
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    (root / "srv/big").mkdir(parents=True)
    code, out, err = run("plan", *common)
    assert code == 0, err
    assert "Settings for ollama@big.service" in out
