"""`ollama-ops tune` inside a booted Debian 12 (systemd 252), the simulator as ollama.service.

One container, three tunes over OLLAMA_NUM_PARALLEL 1 and 2 (2 s each):

- not confirmed (no terminal, no --yes): the drop-in, the owned list and the
  generations are back byte for byte, and the service runs the original;
- killed with SIGKILL half-way: the next `ollama-ops apply` restores the original;
- --yes: the winner is in the config file, the drop-in and the running service.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import BootFactory
from .nspawn import (
    LIB_DIR,
    Container,
    create_ollama_user,
    install_ollama_ops,
    install_simulator_as_ollama,
    write_installer_unit,
)

UNIT = "ollama.service"
DROPIN = "/etc/systemd/system/ollama.service.d/50-ollama-ops.conf"
CONFIG = "/etc/ollama-ops/ollama-ops.toml"
STATE = "/var/lib/ollama-ops"
API = "http://127.0.0.1:11434"
MODEL = "llama3.2:1b"  # the simulator's built-in profile: 2 slots make ~1.8x the tokens/s of 1
TUNE = ["ollama-ops", "tune", "--model", MODEL, "--param", "num_parallel=1,2"]
TUNE += ["--concurrency", "2", "--duration", "2", "--timeout", "60"]


def ensure_tomlkit(c: Container) -> None:
    """tomlkit (a dependency since tune) in the container's library tree.

    The tree is built from the dependencies of the installed ollama-ops; where that
    install predates tomlkit, the host's copy (pure Python, 3.8+) goes in instead.
    """
    import tomlkit

    if c.exec(["python3", "-c", f"import sys; sys.path.insert(0, {LIB_DIR!r}); import tomlkit"],
              check=False).returncode == 0:  # fmt: skip
        return
    source = Path(tomlkit.__file__).parent
    shutil.copytree(source, c.path(f"{LIB_DIR}/tomlkit"), ignore=shutil.ignore_patterns("*.pyc"))


def state(c: Container) -> str:
    """The bytes that must come back: drop-in, owned list, generations' manifests, config."""
    return c.sh(
        f"sha256sum {DROPIN} {STATE}/owned.json; ls {STATE}/generations; "
        f"cat {CONFIG} 2>/dev/null || true"
    )


def running_parallel(c: Container) -> str:
    env = c.show(UNIT, "Environment")["Environment"]
    return next(w.split("=")[1] for w in env.split() if w.startswith("OLLAMA_NUM_PARALLEL="))


@pytest.mark.parametrize("suite", ["bookworm"])
def test_tune_restores_the_original_unless_kept(container_factory: BootFactory, suite: str) -> None:
    c = container_factory(suite)
    create_ollama_user(c)
    install_simulator_as_ollama(c)
    write_installer_unit(c, start=True)
    install_ollama_ops(c)
    ensure_tomlkit(c)
    c.wait_active(UNIT)
    applied = c.exec(["ollama-ops", "apply", "--timeout", "60"], check=False, timeout=120)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    original = c.read_file(DROPIN)
    before = state(c)
    assert running_parallel(c) == "1"  # the plan's rule on a CPU-only host

    # 1. Not confirmed: measured both, restored byte for byte.
    done = c.exec([*TUNE, "--json", "/root/tune.json"], check=False, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(c.read_file("/root/tune.json"))
    assert [r["setting"]["OLLAMA_NUM_PARALLEL"] for r in doc["settings"]] == ["1", "2"]
    assert all(r["figures"]["ok"] > 0 for r in doc["settings"]), doc["settings"]
    assert doc["winner"] == {"OLLAMA_NUM_PARALLEL": "2"} and not doc["kept"], done.stdout
    assert "not written" in done.stdout
    assert c.read_file(DROPIN) == original and state(c) == before
    c.wait_active(UNIT)
    assert running_parallel(c) == "1" and c.wait_http(API + "/").status == 200

    # 2. Killed half-way (SIGKILL: no handler runs): the next apply restores the original.
    c.sh(f"{' '.join(TUNE[:-4])} --duration 8 --yes >/root/killed.log 2>&1 & echo $! >/root/pid")
    c.wait_for(lambda: "num_parallel=2: applied" in c.read_file("/root/killed.log"),
               "the tune to apply its second setting", timeout=90)  # fmt: skip
    assert running_parallel(c) == "2"
    c.sh("kill -9 $(cat /root/pid)")
    assert c.exists(f"{STATE}/tune.json")
    recovered = c.exec(["ollama-ops", "apply", "--timeout", "60"], check=False, timeout=120)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "cut short: restored the original configuration" in recovered.stderr
    assert c.read_file(DROPIN) == original and state(c) == before
    c.wait_active(UNIT)
    assert running_parallel(c) == "1"

    # 3. --yes: the winner written to the config and applied, the rest of the config intact.
    kept = c.exec([*TUNE, "--yes"], check=False, timeout=180)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "kept: wrote OLLAMA_NUM_PARALLEL = 2" in kept.stdout, kept.stdout
    assert "OLLAMA_NUM_PARALLEL = 2" in c.read_file(CONFIG)
    assert "OLLAMA_NUM_PARALLEL=2" in c.read_file(DROPIN)
    c.wait_active(UNIT)
    assert running_parallel(c) == "2" and c.wait_http(API + "/").status == 200
    assert not c.exists(f"{STATE}/tune.json")
    again = c.exec(["ollama-ops", "apply"], check=False, timeout=120)
    assert again.returncode == 0 and "nothing to change" in again.stdout, again
