"""`ollama-ops export ansible` without containers: the module's TOML, the wheel, the
wheelhouse closure, the export directory, ansible-lint, and the module run by a real
ansible-playbook against a --root tree (check mode, diff mode, changed, bad input).

The real rollout against booted systemd containers is tests/systemd/test_ansible_real.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with ansible-core
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_ops.cli import export as cli_export
from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.errors import CommandError, ExitStatus, OpsError
from ollama_ops.model import config as config_mod
from ollama_ops.render.ansible import export, role, targets, wheel, wheelhouse

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATA = Path(__file__).resolve().parents[1] / "src" / "ollama_ops" / "data" / "ansible"
MODULE_PATH = DATA / "role" / "library" / "ollama_ops_apply.py"
SRC = Path(__file__).resolve().parents[1] / "src"
VENV_BIN = Path(sys.executable).parent


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ollama_ops_apply", MODULE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apply_module = load_module()


# ---------------------------------------------------------------- the module's TOML

toml_scalars = (
    st.text(max_size=20)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
)
toml_values = toml_scalars | st.lists(toml_scalars, max_size=4)
keys = st.text(min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, st.dictionaries(keys, toml_values, max_size=5), max_size=4))
def test_rendered_toml_reads_back_as_the_inventory_values(config: dict[str, Any]) -> None:
    text = apply_module.render_toml(config)
    assert text.startswith(apply_module.HEADER)
    expected = {section: table for section, table in config.items() if table}
    assert tomllib.loads(text) == expected


def test_toml_leaves_out_nulls_and_refuses_what_toml_cannot_hold() -> None:
    text = apply_module.render_toml({"limits": {"memory_max": None, "cpu_weight": 100}})
    assert tomllib.loads(text) == {"limits": {"cpu_weight": 100}}
    assert tomllib.loads(apply_module.render_toml({"x": {"inf": math.inf}}))["x"]["inf"] == math.inf
    with pytest.raises(apply_module.RenderError, match=r"ollama_ops_limits\.when = "):
        apply_module.render_toml({"limits": {"when": object()}})
    with pytest.raises(apply_module.RenderError, match="must be a dict"):
        apply_module.render_toml({"limits": "memory_max = 4G"})


def test_one_line_is_the_commands_last_line_with_the_real_path() -> None:
    stderr = "warning: x\nollama-ops: error: /tmp/m/config.toml: limits.nofile = 0 must be...\n"
    line = apply_module.one_line(stderr, "", 2, {"/tmp/m/config.toml": "/etc/o.toml"})
    assert line == "ollama-ops: error: /etc/o.toml: limits.nofile = 0 must be..."
    assert apply_module.one_line("", "", 70, {}) == "exited 70 without a message"
    assert apply_module.generation_of("new      /a\napplied generation 12; up") == 12
    assert apply_module.generation_of("nothing to change") is None
    assert apply_module.written_files("new      /etc/a\nchanged  /etc/b\napplied generation 1") == [
        "/etc/a",
        "/etc/b",
    ]


# ---------------------------------------------------------------- the generated role files


def test_every_config_section_is_a_role_variable_with_an_argument_spec() -> None:
    defaults = yaml.safe_load(role.defaults("1.0", health_command=False))
    specs = yaml.safe_load(role.argument_specs(health_command=False))
    options = specs["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults)
    for section in config_mod.SECTIONS:
        assert defaults[f"ollama_ops_{section}"] == {}
        assert options[f"ollama_ops_{section}"]["type"] == "dict"
    described = " ".join(options["ollama_ops_limits"]["description"])
    for setting in config_mod.SETTINGS:
        if setting.section == "limits":
            assert setting.key in described
    for name, spec in options.items():
        assert spec["default"] == defaults[name], name
    assert defaults["ollama_ops_health_gate"] == "api"
    deep = yaml.safe_load(role.defaults("1.0", health_command=True))
    assert deep["ollama_ops_health_gate"] == "command"


def test_vars_keep_python_versions_as_strings() -> None:
    carried = role.Carried("1.0", "1.0-abc", {"3.10": ("pip-1-py3-none-any.whl", "x.whl")})
    data = yaml.safe_load(role.variables(carried))
    assert data["ollama_ops_wheels"] == {
        "3.10": {
            "archive": "wheelhouse-py3.10.tar",
            "pip": "pip-1-py3-none-any.whl",
            "wheels": ["pip-1-py3-none-any.whl", "x.whl"],
        }
    }
    assert set(data["ollama_ops_config"]) == set(config_mod.SECTIONS)


def test_parse_python() -> None:
    assert targets.parse_python("3.12") == "3.12"
    for bad in ("3.9", "3", "three", "3.11.2"):
        with pytest.raises(OpsError, match="--python"):
            targets.parse_python(bad)


# ---------------------------------------------------------------- the wheel


def test_the_running_package_packs_into_an_installable_deterministic_wheel(
    tmp_path: Path,
) -> None:
    first, second = wheel.installed_wheel(), wheel.installed_wheel()
    assert first == second  # same bytes: a re-export does not change the role
    assert first.filename == f"ollama_ops-{wheel.wheel_version(first)}-py3-none-any.whl"
    with zipfile.ZipFile(io.BytesIO(first.data)) as zf:
        names = zf.namelist()
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        assert "ollama_ops/data/ansible/role/tasks/main.yml" in names
    path = tmp_path / first.filename
    path.write_bytes(first.data)
    target = tmp_path / "lib"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    subprocess.run([*pip, "--target", str(target), str(path)], check=True, capture_output=True)
    probe = "import ollama_ops.cli.main as m; print(m.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith(str(target))


# ---------------------------------------------------------------- the wheelhouse


def fake_wheel(pool: Path, name: str, version: str, requires: Sequence[str] = ()) -> Path:
    dist = name.replace("-", "_")
    path = pool / f"{dist}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{dist}-{version}.dist-info/METADATA", meta)
    return path


class PoolDownloader:
    """Stands in for `pip download`: copies wheels by name from a pool and, like pip,
    evaluates the dependencies' markers against the running Python (3.11+ here)."""

    def __init__(self, pool: Path) -> None:
        self.pool = pool
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str], dest: Path) -> None:
        self.calls.append(list(args))
        names = [a for a in args if not a.startswith("-") and a not in self._option_values(args)]
        todo = [n.split(">")[0].split("=")[0].split(";")[0].strip() for n in names]
        no_deps = "--no-deps" in args
        while todo:
            name = todo.pop()
            found = sorted(self.pool.glob(f"{name.replace('-', '_')}-*.whl"))
            if not found:
                raise CommandError(f"pip download: no {name}")
            shutil.copy(found[-1], dest / found[-1].name)
            if no_deps:
                continue
            for req in wheelhouse._wheel_requires(found[-1]):
                if req.marker is None or req.marker.evaluate():
                    todo.append(req.name)

    @staticmethod
    def _option_values(args: Sequence[str]) -> set[str]:
        return {
            args[i + 1]
            for i, a in enumerate(args[:-1])
            if a in ("--python-version", "--platform", "--implementation")
        }


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    pool = tmp_path / "pool"
    pool.mkdir()
    fake_wheel(pool, "httpx", "1.0", ["anyio"])
    fake_wheel(pool, "anyio", "4.0", ['exceptiongroup; python_version < "3.11"'])
    fake_wheel(pool, "exceptiongroup", "1.2")
    fake_wheel(pool, "tomli", "2.0")
    fake_wheel(pool, "pip", "99.0")
    return pool


def test_the_closure_uses_the_targets_markers_not_the_controllers(
    pool: Path, tmp_path: Path
) -> None:
    downloader = PoolDownloader(pool)
    lines = ["httpx>=1", 'tomli>=2; python_version < "3.11"']
    for python, expected in (
        ("3.10", {"httpx", "anyio", "exceptiongroup", "tomli", "pip"}),
        ("3.12", {"httpx", "anyio", "pip"}),
    ):
        target = targets.Target(python, "x86_64")
        got = wheelhouse.resolve(
            wheelhouse.requirements_for(lines, target), target, tmp_path / python, downloader
        )
        assert {p.name.split("-")[0] for p in got} == expected
        assert sorted(p.name for p in (tmp_path / python).iterdir()) == sorted(p.name for p in got)
    # 3.10 needed a second round: the first `pip download` missed exceptiongroup.
    assert any("exceptiongroup" in call for call in downloader.calls)


def test_a_failing_download_is_one_line(tmp_path: Path) -> None:
    def broken(args: Sequence[str], dest: Path) -> None:
        raise CommandError("pip download exited 1: no network")

    target = targets.Target("3.11", "x86_64")
    with pytest.raises(OpsError) as caught:
        wheelhouse.resolve(wheelhouse.requirements_for(["httpx"], target), target, tmp_path, broken)
    assert "\n" not in str(caught.value) and "--find-links" in str(caught.value)


# ---------------------------------------------------------------- the export directory


def own_wheel(tmp_path: Path) -> Path:
    built = wheel.wheel_bytes(
        "9.9",
        {"ollama_ops/__init__.py": b""},
        "Metadata-Version: 2.1\nName: ollama-ops\nVersion: 9.9\nRequires-Dist: httpx\n"
        'Requires-Dist: tomli; python_version < "3.11"\n\nreadme\n',
        None,
    )
    path = tmp_path / built.filename
    path.write_bytes(built.data)
    return path


def run_export(tmp_path: Path, pool: Path, *args: str) -> export.Result:
    request = export.Request(
        directory=tmp_path / "deploy",
        pythons=("3.10", "3.13"),
        wheel_file=own_wheel(tmp_path),
        force="--force" in args,
    )
    return export.export(request, PoolDownloader(pool))


def archive_names(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return sorted(tar.getnames())


def test_export_writes_the_role_playbook_inventory_and_per_python_wheels(
    tmp_path: Path, pool: Path
) -> None:
    result = run_export(tmp_path, pool)
    deploy = tmp_path / "deploy"
    assert result.pythons == ("3.10", "3.13")
    for name in ("tasks/main.yml", "handlers/main.yml", "defaults/main.yml", "vars/main.yml"):
        assert (deploy / "roles/ollama_ops" / name).is_file()
    assert (deploy / "roles/ollama_ops/meta/argument_specs.yml").is_file()
    assert (deploy / "roles/ollama_ops/library/ollama_ops_apply.py").is_file()
    assert {"playbook.yml", "inventory.yml"} <= {p.name for p in deploy.iterdir()}
    files = deploy / "roles/ollama_ops/files"
    assert archive_names(files / "wheelhouse-py3.10.tar") == [
        "anyio-4.0-py3-none-any.whl",
        "exceptiongroup-1.2-py3-none-any.whl",
        "httpx-1.0-py3-none-any.whl",
        "ollama_ops-9.9-py3-none-any.whl",
        "pip-99.0-py3-none-any.whl",
        "tomli-2.0-py3-none-any.whl",
    ]
    assert "tomli-2.0-py3-none-any.whl" not in archive_names(files / "wheelhouse-py3.13.tar")
    variables = yaml.safe_load((deploy / "roles/ollama_ops/vars/main.yml").read_text())
    assert variables["ollama_ops_release"] == result.release
    assert result.release.startswith("9.9-")
    assert not [p for p in tmp_path.iterdir() if ".export-" in p.name]  # no stage left


def test_export_again_is_byte_identical_and_keeps_the_operators_files(
    tmp_path: Path, pool: Path
) -> None:
    first = run_export(tmp_path, pool)
    deploy = tmp_path / "deploy"
    archive = deploy / "roles/ollama_ops/files/wheelhouse-py3.13.tar"
    before = archive.read_bytes()
    (deploy / "inventory.yml").write_text("mine: {}\n")
    with pytest.raises(OpsError, match="not empty; pass --force"):
        run_export(tmp_path, pool)
    again = run_export(tmp_path, pool, "--force")
    assert again.release == first.release and archive.read_bytes() == before
    assert (deploy / "inventory.yml").read_text() == "mine: {}\n"
    assert set(again.kept) == {"playbook.yml", "inventory.yml"}


def test_cli_export_refuses_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for argv in (
        ["export", "ansible", str(tmp_path / "full")],
        ["export", "ansible", str(tmp_path / "new"), "--python", "3.9"],
        ["export", "ansible", str(tmp_path / "new"), "--wheel", str(tmp_path / "nope.whl")],
    ):
        out, err = io.StringIO(), io.StringIO()
        assert cli.main(argv, Env(out, err)) == ExitStatus.BAD_INPUT
        assert err.getvalue().count("\n") == 1 and err.getvalue().startswith("ollama-ops: error:")
    assert not (tmp_path / "new").exists()


def test_the_exported_role_passes_ansible_lint_production(tmp_path: Path, pool: Path) -> None:
    run_export(tmp_path, pool)
    lint = shutil.which("ansible-lint", path=str(VENV_BIN)) or shutil.which("ansible-lint")
    assert lint, "ansible-lint is in the dev extra: pip install -e '.[dev]'"
    done = subprocess.run(
        [lint, "--offline", "--profile", "production", "--nocolor"],
        cwd=tmp_path / "deploy",
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed" in done.stdout + done.stderr


# ---------------------------------------------------------------- the module under ansible-playbook

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: apply
      ollama_ops_apply:
        config: "{{ cfg }}"
        executable: "{{ exe }}"
        root: "{{ root }}"
      register: out
    - name: keep the result
      ansible.builtin.copy:
        content: "{{ out | to_json }}"
        dest: "{{ result_file }}"
        mode: "0644"
      check_mode: false
"""


@pytest.fixture
def host_tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/meminfo").write_text("MemTotal:       16384000 kB\n")
    (root / "sys/devices/system/cpu").mkdir(parents=True)
    (root / "sys/devices/system/cpu/online").write_text("0-7\n")
    return root


def play(tmp_path: Path, root: Path, cfg: dict[str, Any], *flags: str) -> tuple[int, str, Any]:
    launcher = tmp_path / "ollama-ops"
    launcher.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(SRC)!r})\n"
        "from ollama_ops.cli.main import main\nsys.exit(main())\n"
    )
    launcher.chmod(0o755)
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    result_file = tmp_path / "result.json"
    result_file.unlink(missing_ok=True)
    extra = {
        "cfg": cfg,
        "exe": str(launcher),
        "root": str(root),
        "result_file": str(result_file),
        "ansible_python_interpreter": sys.executable,
    }
    env = {
        **os.environ,
        "ANSIBLE_LIBRARY": str(MODULE_PATH.parent),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
    }
    done = subprocess.run(
        [
            *(str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local"),
            *("-e", json.dumps(extra), *flags, str(tmp_path / "play.yml")),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    data = json.loads(result_file.read_text()) if result_file.exists() else None
    return done.returncode, done.stdout + done.stderr, data


def apply_status(out: str) -> str:
    """ok, changed or fatal: how the default callback reported the apply task."""
    section = out.split("TASK [apply]", 1)[1]
    return next(line for line in section.splitlines() if ": [localhost]" in line).split(":")[0]


def test_module_check_mode_diff_mode_then_changed_then_ok(host_tree: Path, tmp_path: Path) -> None:
    cfg = {"limits": {"memory_max_percent": 90}, "environment": {"OLLAMA_KEEP_ALIVE": "30m"}}
    dropin = host_tree / "etc/systemd/system/ollama.service.d/50-ollama-ops.conf"
    config_file = host_tree / "etc/ollama-ops/ollama-ops.toml"

    rc, out, data = play(tmp_path, host_tree, cfg, "--check", "--diff")
    assert rc == 0, out
    assert data["changed"] is True and data["generation"] is None
    assert "+MemoryMax=" in out and "+memory_max_percent = 90" in out  # diff mode
    assert not dropin.exists() and not config_file.exists()  # check mode wrote nothing
    assert data["ansible_facts"]["ollama_ops_facts"]["cpus"] == 8

    rc, out, data = play(tmp_path, host_tree, cfg)
    assert rc == 0 and apply_status(out) == "changed", out
    assert data["changed"] is True and data["generation"] == 1
    assert "/etc/systemd/system/ollama.service.d/50-ollama-ops.conf" in data["changes"]
    assert tomllib.loads(config_file.read_text()) == cfg
    assert "OLLAMA_KEEP_ALIVE=30m" in dropin.read_text()

    # Again (an empty table renders nothing, so the same file): ok, nothing changed.
    rc, out, data = play(tmp_path, host_tree, {**cfg, "hardening": {}}, "--diff")
    assert rc == 0 and data["changed"] is False and apply_status(out) == "ok", out
    assert data["generation"] is None


def test_module_refused_config_fails_with_ollama_ops_own_line(
    host_tree: Path, tmp_path: Path
) -> None:
    for cfg, expected in (
        (
            {"limits": {"memory_max_percent": 120}},
            f"ollama-ops: error: {host_tree}/etc/ollama-ops/ollama-ops.toml: "
            "limits.memory_max_percent = 120 must be a percentage between 0 and 100",
        ),
        ({"limits": {"memroy_max": "4G"}}, "did you mean 'memory_max'?"),
    ):
        rc, out, data = play(tmp_path, host_tree, cfg)
        assert rc != 0 and data is None
        fatal = [line for line in out.splitlines() if line.startswith("fatal: [localhost]")]
        assert len(fatal) == 1, out
        msg = json.loads(fatal[0].split(" => ", 1)[1])["msg"]
        assert expected in msg and "\n" not in msg, msg
        assert "Traceback" not in out
        assert not (host_tree / "etc/ollama-ops/ollama-ops.toml").exists()


def test_the_health_gate_follows_health_deep_when_ollama_ops_has_it() -> None:
    def parser(*health_options: str) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser()
        sub = p.add_subparsers()
        sub.add_parser("plan")
        if health_options:
            health = sub.add_parser("health")
            for option in health_options:
                health.add_argument(option, action="store_true")
        return p

    assert cli_export.has_deep_health(parser("--deep", "--json")) is True
    assert cli_export.has_deep_health(parser("--json")) is False
    assert cli_export.has_deep_health(parser()) is False


def test_the_summary_says_what_was_written_and_what_to_run_next() -> None:
    result = export.Result(
        directory=Path("deploy"),
        version="1.0",
        release="1.0-abc",
        pythons=("3.11", "3.13"),
        wheels=38,
        size=12 * 2**20,
        written=("roles/ollama_ops/tasks/main.yml", "playbook.yml"),
        kept=("inventory.yml",),
        health_gate="api",
    )
    text = cli_export._text(result)
    assert text.splitlines()[0] == "exported ollama-ops 1.0 (release 1.0-abc) to deploy"
    assert "38 wheels for Python 3.11, 3.13 (12.0 MiB)" in text
    assert "deploy/inventory.yml: kept (yours)" in text and "deploy/playbook.yml: written" in text
    assert all(len(line) <= 100 for line in text.splitlines())
    assert text.splitlines()[-1].startswith("next: ansible-playbook -i deploy/inventory.yml")
    data = json.loads(cli_export._json(result))
    assert data["kept"] == ["inventory.yml"] and data["bytes"] == 12 * 2**20
