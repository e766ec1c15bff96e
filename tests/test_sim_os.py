"""The OS side of ``ollama serve`` and the environment, as Ollama does them."""

from __future__ import annotations

import ast
import base64
import io
import math
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ollama_ops.sim import cli
from ollama_ops.sim.envconfig import (
    DurationError,
    OllamaHost,
    env_bool,
    env_keep_alive,
    env_uint,
    parse_go_duration,
    parse_host,
    read_server_env,
    request_keep_alive,
)
from ollama_ops.sim.keys import authorized_key, new_keypair, public_from_seed
from ollama_ops.sim.logs import Logger
from ollama_ops.sim.profile import ProfileError, load_profile, profile_from_dict
from ollama_ops.sim.server import SimConfig
from ollama_ops.sim.system import ensure_keypair, read_meminfo
from tests.sim_helpers import SIM_PYTHON, SRC, free_port, sim_env, sim_process, wait_listening

SIM_DIR = Path(SRC) / "ollama_ops" / "sim"


def run_serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SIM_PYTHON, "-m", "ollama_ops.sim", "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ----------------------------------------------------------------- identity key


def test_ed25519_rfc8032_vector() -> None:
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    assert public_from_seed(seed).hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )


def _openssh_public(priv_pem: bytes) -> bytes:
    lines = priv_pem.decode().strip().splitlines()
    assert lines[0] == "-----BEGIN OPENSSH PRIVATE KEY-----"
    assert lines[-1] == "-----END OPENSSH PRIVATE KEY-----"
    blob = base64.b64decode("".join(lines[1:-1]))
    assert blob.startswith(b"openssh-key-v1\x00")
    pos = len(b"openssh-key-v1\x00")

    def string() -> bytes:
        nonlocal pos
        (n,) = struct.unpack(">I", blob[pos : pos + 4])
        pos += 4
        out = blob[pos : pos + n]
        pos += n
        return out

    assert string() == b"none"
    assert string() == b"none"
    assert string() == b""
    pos += 4  # key count
    return string()


def test_keypair_created_with_modes(tmp_path: Path) -> None:
    out = io.StringIO()
    assert ensure_keypair(str(tmp_path), out) is True
    d = tmp_path / ".ollama"
    priv, pub = d / "id_ed25519", d / "id_ed25519.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) & 0o755 == stat.S_IMODE(d.stat().st_mode)
    assert pub.read_bytes().startswith(b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5")
    blob = _openssh_public(priv.read_bytes())
    assert authorized_key(blob[-32:]) == pub.read_bytes()
    assert f"Couldn't find '{priv}'. Generating new private key." in out.getvalue()
    assert "Your new public key is: \n\nssh-ed25519 " in out.getvalue()
    if shutil.which("ssh-keygen"):
        derived = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(priv)], capture_output=True, text=True, check=True
        ).stdout
        assert derived.split()[:2] == pub.read_text().split()[:2]
    # An existing key is kept.
    before = priv.read_bytes()
    assert ensure_keypair(str(tmp_path), io.StringIO()) is False
    assert priv.read_bytes() == before


def test_new_keypairs_differ() -> None:
    assert new_keypair()[1] != new_keypair()[1]


def _blocked_home(tmp_path: Path) -> tuple[str, str]:
    """A HOME in which ~/.ollama cannot be created, and the reason Go prints."""
    if os.geteuid() == 0:  # root ignores modes; sysfs refuses mkdir to anyone
        return "/sys", "operation not permitted"
    d = tmp_path / "ro"
    d.mkdir(mode=0o555)
    return str(d), "permission denied"


def test_unwritable_home_exits_1(tmp_path: Path) -> None:
    home, reason = _blocked_home(tmp_path)
    r = run_serve(sim_env(home, free_port()))
    assert r.returncode == 1
    assert r.stderr == f"Error: could not create directory mkdir {home}/.ollama: {reason}\n"
    assert "Couldn't find" in r.stdout


def test_home_under_a_file_exits_1(tmp_path: Path) -> None:
    """stat gives ENOTDIR, not "not exist": like Ollama, the key step is skipped
    and creating the model store fails."""
    f = tmp_path / "file"
    f.write_text("")
    r = run_serve(sim_env(str(f / "home"), free_port()))
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == f"Error: mkdir {f}/home: not a directory"


def test_no_home_exits_1(tmp_path: Path) -> None:
    env = sim_env(str(tmp_path), free_port())
    del env["HOME"]
    r = run_serve(env)
    assert r.returncode == 1
    assert r.stderr == "Error: $HOME is not defined\n"


def test_unwritable_models_dir_exits_1(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    home = tmp_path / "home"
    home.mkdir()
    r = run_serve(sim_env(str(home), free_port(), OLLAMA_MODELS=str(f / "models")))
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1].startswith("Error: mkdir ")
    assert r.stderr.rstrip().endswith("not a directory")
    assert (home / ".ollama" / "id_ed25519").exists()  # the key comes first


def test_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_serve(sim_env(str(tmp_path), port))
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == (
        f"Error: listen tcp 127.0.0.1:{port}: bind: address already in use"
    )


def test_bad_profile_exits_1(tmp_path: Path) -> None:
    p = tmp_path / "p.json"
    p.write_text('{"models": []}')
    r = run_serve(sim_env(str(tmp_path), free_port()), "--profile", str(p))
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == f'Error: {p}: "models" must be a non-empty list'


def test_serve_start_up_and_sigterm(tmp_path: Path) -> None:
    port = free_port()
    with sim_process(str(tmp_path), port, OLLAMA_MODELS=str(tmp_path / "store")) as proc:
        wait_listening(port, proc)
        assert (tmp_path / "store" / "blobs").is_dir()
        assert (tmp_path / "store" / "manifests").is_dir()
        key = tmp_path / ".ollama" / "id_ed25519"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        out = subprocess.run(
            [SIM_PYTHON, "-m", "ollama_ops.sim", "--version"],
            env=sim_env(str(tmp_path), port),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert out == "ollama version is 0.33.0-sim\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert "level=INFO source=routes.go:1369 " in err
    assert f'msg="Listening on 127.0.0.1:{port} (version 0.33.0-sim)"' in err
    assert 'msg="inference compute"' in err
    assert 'msg="system memory" total=' in err
    assert "OLLAMA_MODELS:" + str(tmp_path / "store") in err


def test_version_without_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"OLLAMA_HOST": f"127.0.0.1:{free_port()}"}
    assert cli.version(env) == 0
    assert capsys.readouterr().out == (
        "Warning: could not connect to a running Ollama instance\n"
        "Warning: client version is 0.33.0-sim\n"
    )


def test_cli_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out
    assert cli.main(["run", "llama3"]) == 1
    assert 'unknown command "run"' in capsys.readouterr().err
    assert cli.serve(["--queue-mode", "weird"]) == 2


def test_meminfo(tmp_path: Path) -> None:
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\nHugePages_Total: 0\n")
    assert read_meminfo(str(f)) == {
        "MemTotal": 16_000_000 * 1024,
        "MemAvailable": 8_000_000 * 1024,
        "HugePages_Total": 0,
    }
    with pytest.raises(FileNotFoundError):
        read_meminfo(str(tmp_path / "missing"))


def test_unreadable_meminfo_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: str = "/proc/meminfo") -> dict[str, int]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli, "read_meminfo", fail)
    buf = io.StringIO()
    config = SimConfig(env=read_server_env({}, "/h"), profile=load_profile(None))
    cli._log_hardware(Logger(buf, io.StringIO()), config)
    assert (
        'level=WARN source=cpu_linux.go:20 msg="failed to read system memory" '
        'error="open /proc/meminfo: Permission denied"' in buf.getvalue()
    )
    assert 'msg="inference compute"' in buf.getvalue()


# ----------------------------------------------------------------- environment


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", OllamaHost("http", "127.0.0.1", 11434)),
        ("0.0.0.0", OllamaHost("http", "0.0.0.0", 11434)),
        ("0.0.0.0:8080", OllamaHost("http", "0.0.0.0", 8080)),
        (":11435", OllamaHost("http", "", 11435)),
        ("example.com", OllamaHost("http", "example.com", 11434)),
        ("example.com:1234", OllamaHost("http", "example.com", 1234)),
        ("http://0.0.0.0", OllamaHost("http", "0.0.0.0", 80)),
        ("https://example.com", OllamaHost("https", "example.com", 443)),
        ("https://example.com:1234/ollama", OllamaHost("https", "example.com", 1234, "ollama")),
        ("http://1.2.3.4:5678/", OllamaHost("http", "1.2.3.4", 5678)),
        ("[::1]:11434", OllamaHost("http", "::1", 11434)),
        ("::1", OllamaHost("http", "::1", 11434)),
        ("[::]", OllamaHost("http", "::", 11434)),
        ("'0.0.0.0:9000'", OllamaHost("http", "0.0.0.0", 9000)),
        ('  "127.0.0.1:1"  ', OllamaHost("http", "127.0.0.1", 1)),
        ("localhost:99999", OllamaHost("http", "localhost", 11434)),
        ("localhost:abc", OllamaHost("http", "localhost", 11434)),
    ],
)
def test_ollama_host(value: str, expected: OllamaHost) -> None:
    assert parse_host(value) == expected


def test_ollama_host_invalid_port_warns() -> None:
    seen: list[tuple[str, dict[str, object]]] = []
    parse_host("host:70000", lambda msg, attrs: seen.append((msg, attrs)))
    assert seen == [("invalid port, using default", {"port": "70000", "default": "11434"})]
    assert OllamaHost("http", "::1", 1).hostport == "[::1]:1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", False),
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("t", True),
        ("0", False),
        ("false", False),
        ("F", False),
        ("yes", True),  # unparsable counts as true
        ("'false'", False),
    ],
)
def test_env_bool(value: str, expected: bool) -> None:
    assert env_bool({"OLLAMA_DEBUG": value}, "OLLAMA_DEBUG") is expected


def test_env_uint() -> None:
    seen: list[dict[str, object]] = []
    assert env_uint({"X": "4"}, "X", 1) == 4
    assert env_uint({}, "X", 1) == 1
    assert env_uint({"X": "-1"}, "X", 1, lambda m, a: seen.append(a)) == 1
    assert env_uint({"X": "four"}, "X", 1, lambda m, a: seen.append(a)) == 1
    assert seen == [
        {"key": "X", "value": "-1", "default": 1},
        {"key": "X", "value": "four", "default": 1},
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", 300.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("90s", 90.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("0", 0.0),
        ("30", 30.0),
        ("-1", math.inf),
        ("-5m", math.inf),
        ("garbage", 300.0),
    ],
)
def test_env_keep_alive(value: str, expected: float) -> None:
    assert env_keep_alive({"OLLAMA_KEEP_ALIVE": value}) == pytest.approx(expected)


def test_request_keep_alive() -> None:
    assert request_keep_alive(0) == 0
    assert request_keep_alive(2.5) == 2.5
    assert request_keep_alive(-1) == math.inf
    assert request_keep_alive("10m") == 600
    assert request_keep_alive("-1s") == math.inf
    with pytest.raises(DurationError, match='missing unit in duration "10"'):
        request_keep_alive("10")
    with pytest.raises(DurationError, match="Unsupported type: 'bool'"):
        request_keep_alive(True)


@pytest.mark.parametrize("bad", ["", "m", "1x", "1.2.3s", "--1s", "h1"])
def test_go_duration_errors(bad: str) -> None:
    with pytest.raises(DurationError):
        parse_go_duration(bad)


def test_server_env_defaults() -> None:
    e = read_server_env({}, "/home/u")
    assert e.host == OllamaHost("http", "127.0.0.1", 11434)
    assert e.models == "/home/u/.ollama/models"
    assert e.num_parallel == 1
    assert e.max_queue == 512
    assert e.max_loaded_models == 0
    assert e.keep_alive == 300
    e = read_server_env(
        {"OLLAMA_MODELS": "/srv/m", "OLLAMA_NUM_PARALLEL": "4", "OLLAMA_MAX_QUEUE": "x"}, None
    )
    assert e.models == "/srv/m"
    assert e.num_parallel == 4
    assert e.max_queue == 512


def test_profile_validation(tmp_path: Path) -> None:
    good: dict[str, Any] = {
        "models": [
            {
                "name": "a",
                "size": 1,
                "family": "f",
                "parameter_size": "1B",
                "quantization_level": "Q4_0",
            }
        ]
    }
    p = profile_from_dict(good)
    assert p.lookup("a") is not None
    assert p.gpus == ()
    bad = {"models": [{**good["models"][0], "decode_tps": "fast"}]}
    with pytest.raises(ProfileError, match='"decode_tps" has the wrong type'):
        profile_from_dict(bad)
    with pytest.raises(ProfileError, match='unknown key "speed"'):
        profile_from_dict({"models": [{**good["models"][0], "speed": 1}]})
    f = tmp_path / "p.json"
    f.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(str(f))
    builtin = load_profile(None)
    assert {"llama3.2:1b", "qwen2.5:7b"} <= set(builtin.models)
    assert builtin.lookup("qwen2.5:7b") is not None
    assert builtin.lookup("llama3.2") is None


# ----------------------------------------------------------------- portability


def _runtime_union(tree: ast.AST) -> list[int]:
    """Line numbers of ``X | Y`` on type-like names outside annotations."""
    annotations: set[int] = set()
    for node in ast.walk(tree):
        ann: ast.expr | None = None
        if isinstance(node, (ast.AnnAssign, ast.arg)):
            ann = node.annotation
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            ann = node.returns
        if ann is not None:
            annotations.update(id(n) for n in ast.walk(ann))
    types = {"None", "str", "int", "float", "bool", "bytes", "list", "dict", "tuple", "set"}
    bad = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.BitOr)
            and id(node) not in annotations
        ):
            sides = (node.left, node.right)
            if any(
                isinstance(s, (ast.Name, ast.Constant))
                and str(getattr(s, "id", getattr(s, "value", ""))) in types
                for s in sides
            ):
                bad.append(node.lineno)
    return bad


@pytest.mark.parametrize("path", sorted(SIM_DIR.glob("*.py")), ids=lambda p: p.name)
def test_sim_modules_stay_python39_and_self_contained(path: Path) -> None:
    src = path.read_text()
    tree = ast.parse(src, feature_version=(3, 9))  # no match, no 3.10+ syntax
    body = [
        n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
    ]
    first = body[0] if body else None
    assert isinstance(first, ast.ImportFrom)
    assert first.module == "__future__"
    assert [a.name for a in first.names] == ["annotations"]
    assert _runtime_union(tree) == []
    allowed = set(sys.stdlib_module_names) | {"aiohttp"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                assert a.name.split(".")[0] in allowed, a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            assert node.module is not None
            assert node.module.split(".")[0] in allowed, node.module
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "dataclass":
            assert all(k.arg not in ("slots", "kw_only") for k in node.keywords)
