"""What an operator reads (issue 7 item 19): every command's output, for every fixture host.

- a summary first (what changed or would change, what to do next), then the details;
- no line wider than 100 terminal cells, whatever the host, config or outcome;
- colour only on a terminal (NO_COLOR and TERM=dumb respected), nothing else changed by it;
- the same facts in --json (plan, apply, rollback, audit, facts, config), parsed here;
- every option of every command has help text;
- rollback says what it restored and leaves no empty directory; apply --root says that
  nothing was reloaded; config sizes are written as the rules write them.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.cells import cell_len

from ollama_ops.apply import activate
from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.cli.facts import facts_doc
from ollama_ops.cli.output import wrap
from ollama_ops.errors import ExitStatus, exit_codes_help
from ollama_ops.model import config
from ollama_ops.model import facts as facts_mod
from ollama_ops.plan import compose, explain
from ollama_ops.runtime import Runtime
from tests.helpers import FIXTURES, HOSTS, FakeOllama, FakeSystemctl, fake_runtime, host

ANSI = re.compile(r"\x1b\[[0-9;]*m")
WIDTH = 100
DROPIN_DIR = "etc/systemd/system/ollama.service.d"
NVIDIA = FIXTURES / "hosts" / "nvidia-1x24g.json"

# A config that sets every kind of key, long values included.
FULL_CONFIG = """\
[service]
bind = "0.0.0.0:11434"
allowed_networks = ["10.0.0.0/8", "192.168.0.0/16", "172.16.0.0/12", "fd00::/8"]
models_dir = "/srv/ollama/a-rather-long-directory-name-for-the-models-of-this-host/models"
[limits]
memory_high = "2G"
memory_max = "3G"
cpu_weight = 300
nofile = 131072
[hardening]
relax = ["MemoryDenyWriteExecute"]
read_write_paths = ["/srv/cache"]
[environment]
OLLAMA_DEBUG = "1"
"""


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test decides about colour itself; a terminal is 100 columns wide."""
    for name in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", str(WIDTH))


def run(
    *argv: str,
    systemctl: FakeSystemctl | None = None,
    stdout: io.StringIO | None = None,
    make_runtime: Callable[[Path], Runtime] | None = None,
) -> tuple[int, str, str]:
    out, err = stdout or io.StringIO(), io.StringIO()
    env = Env(out, err, make_runtime=make_runtime or (lambda r: fake_runtime(r, systemctl)))
    code = cli.main(list(argv), env)
    return code, out.getvalue(), err.getvalue()


def too_wide(text: str) -> list[str]:
    return [line for line in ANSI.sub("", text).splitlines() if cell_len(line) > WIDTH]


def assert_summary_first(text: str, summary: str) -> None:
    """``text`` starts with ``summary``, wrapped as the commands wrap it."""
    expected = wrap(summary, WIDTH, "", "  ")
    assert text.splitlines()[: len(expected)] == expected


def says(text: str) -> str:
    """The words of ``text`` with any wrapping undone."""
    return " ".join(text.split())


def planned(facts_file: Path, cfg: str = "") -> dict[str, str]:
    """What systemctl show reports once the plan for this host is running."""
    d = compose.build(
        host(facts_file.stem), config.loads(cfg) if cfg else config.DeploymentConfig()
    )
    return activate.expected_properties(d)


def session(
    root: Path,
    facts_file: Path,
    cfg: Path | None,
    live_runtime: Callable[[Path], Runtime] | None = None,
) -> Iterator[tuple[str, int, str]]:
    """Every command an operator runs on this host, in order, with its exit code and output;
    the live system is a fake systemd that takes the plan, or ``live_runtime``."""
    facts = ["--facts", str(facts_file), "--root", str(root)]
    facts += ["--config", str(cfg)] if cfg else []
    where = ["--root", str(root)]
    for argv in (
        ["config", "keys"],
        ["config", "show", *where, *(["--config", str(cfg)] if cfg else [])],
        ["plan", *facts],
        ["apply", *facts, "--dry-run"],
        ["apply", *facts],
        ["apply", *facts],
        ["apply", *facts, "--dry-run"],
        ["plan", *facts],
        ["audit", "--facts", str(facts_file), *where],
        ["rollback", *where],
        ["rollback", *where],
        ["audit", "--facts", str(facts_file), *where],
    ):
        code, out, err = run(*argv)
        assert err == "", (argv, err)
        yield " ".join(argv[:2]), code, out
    # The live system, with a systemd that takes the plan.
    live = (
        None
        if live_runtime
        else FakeSystemctl(props=planned(facts_file, cfg.read_text() if cfg else ""))
    )
    for argv in (
        ["apply", *facts],
        ["rollback", *where],
        ["apply", *facts, "--no-restart"],
        ["rollback", *where, "--no-restart"],
    ):
        code, out, err = run(*argv, systemctl=live, make_runtime=live_runtime)
        assert err == "", (argv, err)
        yield " ".join(argv[:2]), code, out


def prepare_full_config(root: Path) -> Path:
    for path in (
        "srv/cache",
        "srv/ollama/a-rather-long-directory-name-for-the-models-of-this-host/models",
    ):
        (root / path).mkdir(parents=True)
    cfg = root.parent / "full.toml"
    cfg.write_text(FULL_CONFIG)
    return cfg


@pytest.mark.parametrize("with_config", [False, True], ids=["rules", "full-config"])
@pytest.mark.parametrize("facts_file", HOSTS, ids=lambda p: p.stem)
def test_every_command_fits_100_columns_with_its_summary_first(
    root: Path, facts_file: Path, with_config: bool
) -> None:
    cfg = prepare_full_config(root) if with_config else None
    seen = set()
    for command, code, out in session(root, facts_file, cfg):
        assert too_wide(out) == [], (command, too_wide(out))
        name = command.split()[0]
        first = out.splitlines()[0]
        # The summary comes first and names the command ("apply --dry-run: ...").
        assert re.match(rf"{name}( keys| --dry-run)?: ", first), out
        assert code in (ExitStatus.OK, ExitStatus.CHANGES_PENDING) or name == "audit", (
            command,
            code,
            out,
        )
        seen.add(name)
    assert seen == {"config", "plan", "apply", "audit", "rollback"}
    doc = facts_doc(host(facts_file.stem))
    assert too_wide(doc.plain()) == []
    assert doc.plain().startswith(f"facts: host {host(facts_file.stem).hostname}: ")


def test_two_instances_and_a_front_door_fit_100_columns_too(root: Path, tmp_path: Path) -> None:
    """plan, apply, audit and rollback with [instances] and [frontdoor]: every instance and the
    front door in the plan, apply and rollback say what they restarted, stopped and reloaded,
    audit covers each instance and exits with the worst finding of them all."""
    from tests.instances_helpers import TWO, need_nginx, plan, two_gpu_host
    from tests.test_instances_apply import DOOR, Runs, Units

    need_nginx()  # apply runs nginx -t on the front door before writing
    facts_file = tmp_path / "two-gpus.json"
    facts_file.write_text(facts_mod.dumps(two_gpu_host()))
    cfg = tmp_path / "instances.toml"
    cfg.write_text(TWO + DOOR)
    units, runs = Units(plan(TWO + DOOR)), Runs()

    def live(r: Path) -> Runtime:  # a systemd that takes the plan; nginx -t and reload faked
        return Runtime(
            root=r,
            run=runs,
            ollama=FakeOllama(),
            sleep=lambda s: None,
            make_systemctl=lambda: units,
            live_override=True,
        )

    outputs: dict[str, list[str]] = {}
    codes: dict[str, list[int]] = {}
    for command, code, out in session(root, facts_file, cfg, live):
        assert too_wide(out) == [], (command, too_wide(out))
        assert re.match(rf"{command.split()[0]}( keys| --dry-run)?: ", out), out
        assert code in (ExitStatus.OK, ExitStatus.CHANGES_PENDING) or "audit" in command
        outputs.setdefault(command, []).append(says(out))
        codes.setdefault(command, []).append(code)
    plan_text = outputs["plan --facts"][0]
    for needle in (
        "also 2 instances of ollama@.service (ollama@big.service, ollama@fast.service)",
        "Template ollama@.service for ollama@big.service, ollama@fast.service",
        "Settings for ollama@fast.service",
        "Settings for ollama@big.service",
        "Front door /etc/nginx/conf.d/ollama-ops.conf (nginx; value, source, reason):",
        "listen 127.0.0.1:8080 config frontdoor.listen",
        "+++ b/etc/nginx/conf.d/ollama-ops.conf",
    ):
        assert needle in plan_text, needle
    assert (
        "restarts ollama.service, ollama@big.service, ollama@fast.service, reloads nginx"
        in outputs["apply --facts"][0]  # the first --dry-run
    )
    not_live, live_apply, no_restart = outputs["apply --facts"][1], *outputs["apply --facts"][-2:]
    assert (
        "`systemctl daemon-reload && systemctl restart ollama.service ollama@big.service "
        "ollama@fast.service && systemctl reload nginx`" in not_live
    )
    assert (
        "ollama.service restarted and its API answers, ollama@big.service, ollama@fast.service "
        "restarted and their APIs answer, nginx reloaded the front door" in live_apply
    )
    assert "nothing was restarted or reloaded (--no-restart)" in no_restart
    audit = outputs["audit --facts"][0]
    assert audit.startswith("audit: ollama.service and 2 instances: ")
    for unit in ("ollama.service", "ollama@big.service", "ollama@fast.service"):
        assert f"audit: {unit}: " in audit
    live_rollback, held = outputs["rollback --root"][-2:]
    assert (
        "ollama@big.service stopped, ollama@fast.service stopped, nginx reloaded" in live_rollback
    )
    assert (
        "&& systemctl stop ollama@big.service ollama@fast.service && systemctl reload nginx`"
        in (held)
    )
    assert ("systemctl", "reload-or-restart", "nginx.service") in runs.calls
    # The --json twins say the same.
    args = ["--facts", str(facts_file), "--root", str(root), "--config", str(cfg), "--json"]
    planned_json = json.loads(run("plan", *args)[1])["instances"]
    assert [i["unit"] for i in planned_json["instances"]] == [
        "ollama@big.service",
        "ollama@fast.service",
    ]
    assert planned_json["frontdoor"]["path"] == "/etc/nginx/conf.d/ollama-ops.conf"
    assert json.loads(run("apply", "--dry-run", *args)[1])["units"] == {
        "restart": ["ollama.service", "ollama@big.service", "ollama@fast.service"],
        "stop": [],
        "reload_nginx": True,
    }


def test_facts_of_this_machine_fit_too() -> None:
    code, out, err = run("facts")
    assert code == 0, err
    assert out.startswith("facts: host ") and too_wide(out) == []


def test_hostile_names_and_long_paths_still_fit(root: Path, tmp_path: Path) -> None:
    data = json.loads(NVIDIA.read_text())
    data["hostname"] = "漢" * 120  # 240 cells in one word
    for gpu in data.get("gpus", []):
        gpu["name"] = "GPU " * 40 + "x" * 90
    facts_file = tmp_path / "hostile.json"
    facts_file.write_text(json.dumps(data))
    code, out, err = run("plan", "--facts", str(facts_file), "--root", str(root))
    assert code == 0, err
    assert too_wide(out) == []
    assert "漢" * 120 in "".join(out.split())  # folded, not cut


# ------------------------------------------------------------------------ colour


COLOUR_COMMANDS = [
    ["plan"],
    ["apply", "--dry-run"],
    ["audit"],
    ["config", "show"],
    ["config", "keys"],
    ["rollback"],
    ["facts"],
]


def colour_run(root: Path, argv: list[str], stdout: io.StringIO) -> str:
    facts = str(NVIDIA)
    if argv[0] in ("plan", "apply", "audit"):
        argv = [*argv, "--facts", facts]
    if argv[0] == "rollback":  # something to roll back
        assert run("apply", "--facts", facts, "--root", str(root))[0] == 0
    if argv[:2] != ["config", "keys"] and argv[0] != "facts":
        argv = [*argv, "--root", str(root)]
    code, out, err = run(*argv, stdout=stdout)
    assert err == "" and code in (0, 1, 10, 11, 12), (code, err)
    return out


@pytest.mark.parametrize("argv", COLOUR_COMMANDS, ids=" ".join)
def test_colour_on_a_terminal_only_and_it_changes_nothing_else(
    tmp_path: Path, argv: list[str]
) -> None:
    from tests.helpers import INSTALLER_UNIT

    def fresh(name: str) -> Path:
        root = tmp_path / name
        (root / "etc/systemd/system").mkdir(parents=True)
        (root / "etc/systemd/system/ollama.service").write_text(INSTALLER_UNIT)
        (root / "usr/share/ollama").mkdir(parents=True)
        return root

    coloured = colour_run(fresh("tty1"), argv, Tty())
    plain = colour_run(fresh("pipe"), argv, io.StringIO())
    assert "\x1b[" in coloured
    assert "\x1b" not in plain
    assert ANSI.sub("", coloured).replace(str(tmp_path / "tty1"), "R") == plain.replace(
        str(tmp_path / "pipe"), "R"
    )


@pytest.mark.parametrize("setting", ["NO_COLOR=1", "TERM=dumb"])
@pytest.mark.parametrize("argv", COLOUR_COMMANDS, ids=" ".join)
def test_no_colour_with_no_color_or_a_dumb_terminal(
    root: Path, argv: list[str], setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, value = setting.split("=")
    monkeypatch.setenv(name, value)
    out = colour_run(root, argv, Tty())
    assert out and "\x1b" not in out


# ------------------------------------------------------------------------- JSON


def test_json_twins_parse_and_say_what_the_text_says(root: Path) -> None:
    facts = ["--facts", str(NVIDIA), "--root", str(root)]
    text = {}
    data = {}
    for argv in (
        ["plan", *facts],
        ["apply", *facts, "--dry-run"],
    ):
        _, text[argv[0] + str(len(argv))], _ = run(*argv)
        _, out, err = run(*argv, "--json")
        assert err == ""
        data[argv[0] + str(len(argv))] = json.loads(out)
    plan, dry = data["plan5"], data["apply6"]
    assert plan["command"] == "plan" and dry["command"] == "apply" and dry["dry_run"] is True
    for doc, txt in ((plan, text["plan5"]), (dry, text["apply6"])):
        assert_summary_first(txt, doc["summary"])
    assert set(plan) >= {"summary", "root", "unit", "host", "changes", "files", "next", "notes",
                         "settings", "diff", "guide"}  # fmt: skip
    assert plan["changes"] == {"new": 2, "changed": 0, "removed": 0}
    assert {"key", "value", "source", "reason", "section"} == set(plan["settings"][0])
    assert plan["next"].startswith("ollama-ops apply --root ")
    assert dry["diff"] == plan["diff"] and "+++ b/" in dry["diff"]

    code, out, _ = run("apply", *facts, "--json")
    applied = json.loads(out)
    assert code == 0 and applied["generation"] == 1
    assert applied["reloaded"] is False and applied["restarted"] is False
    assert [f["status"] for f in applied["files"]] == ["new", "new"]
    assert "nothing was reloaded" in applied["summary"]

    code, out, _ = run("audit", "--facts", str(NVIDIA), "--root", str(root), "--json")
    report = json.loads(out)
    assert report["command"] == "audit" and report["summary"].startswith("audit: ollama.service")
    assert {"unit", "fragment", "dropins", "exposure", "worst", "findings"} <= set(report)

    code, out, _ = run("rollback", "--root", str(root), "--json")
    rolled = json.loads(out)
    assert code == 0 and rolled["generation"] == 1 and rolled["command"] == "rollback"
    assert {f["status"] for f in rolled["files"]} == {"removed"}
    assert {f["path"] for f in rolled["files"]} == {f["path"] for f in applied["files"]}
    code, out, _ = run("rollback", "--root", str(root), "--json")
    assert json.loads(out)["generation"] is None

    code, out, _ = run("facts", "--json")
    assert code == 0 and {"memory_bytes", "cpus", "gpus"} <= set(json.loads(out))

    code, out, _ = run("config", "show", "--root", str(root), "--json")
    shown = json.loads(out)
    assert shown["source"] is None and shown["keys"]["limits.cpu_weight"] == {
        "value": None,
        "set": False,
    }
    code, out, _ = run("config", "keys", "--json")
    assert {row["key"] for row in json.loads(out)} >= {"service.bind", "[environment]"}


# ------------------------------------------------------------------------- help


def parsers(
    parser: argparse.ArgumentParser, path: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, f"{path} {name}")


def no_help(action: argparse.Action) -> bool:
    return not action.help or action.help == argparse.SUPPRESS


FOUNDATION = ("facts", "plan", "apply", "rollback", "audit", "config", "simulate")


def test_every_option_of_every_command_has_help() -> None:
    """Walks whatever COMMANDS registers, commands added later and sub-commands included."""
    walked = dict(parsers(cli.build_parser(), "ollama-ops"))
    assert len(walked) > len(cli.COMMANDS)
    options = [
        f"{path}: {'/'.join(action.option_strings)}"
        for path, parser in walked.items()
        for action in parser._actions
        if action.option_strings and no_help(action)
    ]
    assert options == []
    # The foundation's positional arguments say what they are too.
    positionals = [
        f"{path}: {action.dest}"
        for path, parser in walked.items()
        if path.split()[1:2] and path.split()[1] in FOUNDATION
        for action in parser._actions
        if not action.option_strings
        and not isinstance(action, argparse._SubParsersAction)
        and no_help(action)
    ]
    assert positionals == []


def test_help_fits_and_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], *([name, "--help"] for name in ("facts", "plan", "apply",
                                                             "rollback", "audit", "config"))):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert too_wide(out) == [], argv
        if argv == ["--help"]:
            assert exit_codes_help() in out


# ---------------------------------------------------------------- what it says


def test_rollback_says_what_it_restored_and_leaves_no_empty_directory(
    root: Path, tmp_path: Path
) -> None:
    facts = ["--facts", str(NVIDIA), "--root", str(root)]
    cfg = tmp_path / "c.toml"
    cfg.write_text("[limits]\ncpu_weight = 200\n")
    assert run("apply", *facts)[0] == 0
    assert run("apply", *facts, "--config", str(cfg))[0] == 0
    code, out, _ = run("rollback", "--root", str(root))
    assert code == 0
    assert says(out).startswith(
        f"rollback: the files under {root} are as they were before generation 2 (1 file restored)"
    )
    assert re.search(rf"restored +/{DROPIN_DIR}/50-ollama-ops.conf", out)
    assert "CPUWeight=150" in (root / DROPIN_DIR / "50-ollama-ops.conf").read_text()
    code, out, _ = run("rollback", "--root", str(root))
    assert "before generation 1 (2 files it had created removed)" in " ".join(out.split())
    assert not (root / DROPIN_DIR).exists()
    assert not (root / "etc/modules-load.d").exists()
    code, out, _ = run("rollback", "--root", str(root))
    assert code == 0 and out.startswith("rollback: nothing to roll back")


def test_apply_says_whether_systemd_was_told(root: Path) -> None:
    facts = ["--facts", str(NVIDIA), "--root", str(root)]
    code, out, _ = run("apply", *facts)
    summary = says(out)
    assert "nothing was reloaded or restarted" in summary
    assert "systemctl daemon-reload && systemctl restart ollama.service" in summary
    assert run("rollback", "--root", str(root))[0] == 0

    live = FakeSystemctl(props=planned(NVIDIA))
    code, out, _ = run("apply", *facts, "--no-restart", systemctl=live)
    summary = says(out)
    assert "systemd reloaded them, ollama.service was not restarted" in summary
    code, out, _ = run("rollback", "--root", str(root), systemctl=live)
    summary = says(out)
    assert "systemd reloaded them, ollama.service restarted" in summary
    code, out, _ = run("apply", *facts, systemctl=live)
    summary = says(out)
    assert code == 0
    assert summary.startswith("apply: applied generation ")
    assert "restarted and its API answers" in summary


def test_sizes_from_the_config_are_written_as_the_rules_write_them(
    root: Path, tmp_path: Path
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[limits]\nmemory_high = "2G"\nmemory_max = "3000M"\nos_reserve = 1536\n')
    code, out, err = run("plan", "--facts", str(NVIDIA), "--root", str(root), "--config", str(cfg))
    assert code == 0, err
    assert "+MemoryHigh=2G\n" in out and "+MemoryMax=3000M\n" in out
    assert not re.search(r"Memory(High|Max)=\d{7,}", out)
    code, out, _ = run("config", "show", "--config", str(cfg))
    assert re.search(r"limits.memory_high +set +2G", out)
    assert re.search(r"limits.os_reserve +set +1536 bytes \(1.5 KiB\)", out)


def test_one_cpu_and_a_host_without_a_name() -> None:
    base = host("cpu-small")
    lone = dataclasses.replace(base, cpus=1, hostname="", numa_nodes=())
    line = explain.host_summary(lone)
    assert "1 CPU," in line and "CPUs" not in line
    assert line.startswith("unnamed host: ") and "?" not in line
    assert "1 NUMA node," in line
