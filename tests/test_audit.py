"""audit: every rule positive and negative, over effective units built under tmp_path roots."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ollama_ops import audit
from ollama_ops.audit import EnvFile, Finding, Report, RootFiles, Severity
from ollama_ops.errors import CommandError, OpsError
from ollama_ops.host import proc, systemd
from ollama_ops.model import config
from ollama_ops.model.facts import HostFacts, OllamaInstall
from ollama_ops.plan import compose as plan
from ollama_ops.render import systemd as render
from ollama_ops.runtime import Runtime
from ollama_ops.unitfile import effective as effective_mod
from ollama_ops.unitfile import syntax as unit
from tests.helpers import HOSTS, host

FIXTURES = Path(__file__).parent / "fixtures" / "audit"
INSTALLER = (FIXTURES / "installer.service").read_text()
GUIDE = (FIXTURES / "guide-hardened.conf").read_text()
UNIT_PATH = "etc/systemd/system/ollama.service"
DROPIN_DIR = "etc/systemd/system/ollama.service.d"
HAVE_ANALYZE = shutil.which("systemd-analyze") is not None
needs_analyze = pytest.mark.skipif(
    not HAVE_ANALYZE, reason="systemd-analyze is not installed: no exposure score to check"
)


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_root(
    root: Path,
    *dropins: str,
    base: str = INSTALLER,
    unit_path: str = UNIT_PATH,
    binary: str = "/usr/local/bin/ollama",
) -> Path:
    """The installer's unit (or ``base``) with drop-ins 10-*.conf, 20-*.conf, ... and a stub binary."""
    write(root, unit_path, base.replace("/usr/local/bin/ollama", binary))
    for i, text in enumerate(dropins, start=1):
        write(root, f"{DROPIN_DIR}/{i}0-test.conf", text)
    stub = write(root, binary.lstrip("/"), "#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return root


def run(
    root: Path,
    facts: HostFacts | None = None,
    version: int = 252,
    files: RootFiles | None = None,
) -> list[Finding]:
    effective = effective_mod.load_effective(root, "ollama.service")
    if files is None:
        files = audit.read_root_files(root, effective)
    return audit.check(effective, facts, version, files)


def check(
    tmp_path: Path,
    *dropins: str,
    facts: HostFacts | None = None,
    version: int = 252,
    base: str = INSTALLER,
) -> list[Finding]:
    return run(make_root(tmp_path, *dropins, base=base), facts, version)


def ids(findings: list[Finding], at_least: Severity = Severity.INFO) -> set[str]:
    return {f.id for f in findings if f.severity >= at_least}


def only(findings: list[Finding], fid: str) -> Finding:
    found = [f for f in findings if f.id == fid]
    assert len(found) == 1, (fid, found)
    return found[0]


# A drop-in that fixes what the installer lacks, used as the "clean" baseline.
CLEAN = """\
[Unit]
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
Restart=on-failure
RestartSec=5
MemoryHigh=4G
MemoryMax=5G
ProtectSystem=strict
ReadWritePaths=/usr/share/ollama
"""


def test_clean_baseline_has_nothing_above_info(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN, facts=host("cpu-small"))
    assert ids(found, Severity.WARNING) == set(), found


# ------------------------------------------------------------- the seed guide


def test_guide_dropin_is_verbatim_from_the_guide() -> None:
    guide = Path("/work/shared/reference/seed-guide.txt")
    if not guide.exists():
        pytest.skip("the seed guide is not checked out next to this repository")
    text = guide.read_text()
    start = text.index("hardened.conf <<'EOF'\n") + len("hardened.conf <<'EOF'\n")
    assert text[start : text.index("\nEOF\n", start) + 1] == GUIDE


def test_guide_dropin_mistakes_are_all_caught(tmp_path: Path) -> None:
    found = check(tmp_path, GUIDE, facts=host("cpu-small"), version=252)
    by_id: dict[str, list[Finding]] = {}
    for f in found:
        by_id.setdefault(f.id, []).append(f)
    too_new = {f.directive for f in by_id["too-new-for-systemd"]}
    assert too_new == {"RestartSteps", "RestartMaxDelaySec"}
    misplaced = {(f.directive, f.severity) for f in by_id["misplaced-key"]}
    assert ("StartLimitIntervalSec", Severity.WARNING) in misplaced
    assert ("StartLimitBurst", Severity.INFO) in misplaced  # still honoured in [Service]
    exposed = only(found, "api-exposed")
    assert exposed.severity is Severity.CRITICAL
    assert exposed.directive == "OLLAMA_HOST"
    assert "0.0.0.0" in exposed.message
    home = only(found, "home-not-writable")
    assert home.severity is Severity.CRITICAL
    assert home.directive == "ProtectSystem"
    assert "id_ed25519" in home.message
    assert "ReadWritePaths=/usr/share/ollama" in home.fix
    assert only(found, "device-policy-implicit").directive == "DeviceAllow"
    gomax = only(found, "gomaxprocs-fixed")
    assert gomax.severity is Severity.WARNING
    assert "4 CPUs" in gomax.message
    # StartLimitIntervalSec= is ignored in [Service]: the 10 s default makes the limit useless.
    assert "10 s" in only(found, "restart-loop-forever").message
    assert {"memory-above-host", "models-exceed-memory", "gpus-not-on-host"} <= ids(found)


def test_guide_findings_name_the_file_and_line(tmp_path: Path) -> None:
    found = check(tmp_path, GUIDE, facts=host("cpu-small"))
    lines = GUIDE.splitlines()
    for f in found:
        if f.file is None:
            continue
        assert f.file == f"/{DROPIN_DIR}/10-test.conf"
        assert f.line is not None
        line = lines[f.line - 1]
        assert f.directive is not None
        assert f.directive in line, (f, line)
        assert f.message
        assert f.fix


def test_guide_on_a_host_with_16_cpus_keeps_gomaxprocs(tmp_path: Path) -> None:
    found = check(tmp_path, GUIDE, facts=host("nvidia-1x24g"))
    assert "gomaxprocs-fixed" not in ids(found)
    # NoNewPrivileges with an NVIDIA GPU and no modules-load entry for nvidia_uvm.
    assert only(found, "nvidia-uvm-not-loaded").directive == "NoNewPrivileges"


def test_guide_on_two_gpus_hides_the_second(tmp_path: Path) -> None:
    found = check(tmp_path, GUIDE, facts=host("nvidia-2x-h100-2socket"))
    denied = [f for f in found if f.id == "gpu-device-denied"]
    errors = [f for f in denied if f.severity is Severity.ERROR]
    assert len(errors) == 1
    assert "/dev/nvidia1" in errors[0].message
    assert "/dev/nvidia0" not in errors[0].message
    assert any("nvidia-caps" in f.message and f.severity is Severity.WARNING for f in denied)


# ---------------------------------------------------------- ollama-ops' output


@pytest.mark.parametrize("facts_file", HOSTS, ids=lambda p: p.stem)
def test_ollama_ops_own_dropin_is_clean(tmp_path: Path, facts_file: Path) -> None:
    facts = host(facts_file.stem)
    assert facts.ollama.unit_path is not None
    assert facts.ollama.binary is not None
    root = make_root(
        tmp_path, unit_path=facts.ollama.unit_path.lstrip("/"), binary=facts.ollama.binary
    )
    for path, text in render.render(plan.build(facts, config.DeploymentConfig())).items():
        write(root, path.lstrip("/"), text)
    report = audit.audit(Runtime(root=root), facts=facts, with_exposure=HAVE_ANALYZE)
    above = [f for f in report.findings if f.severity > Severity.INFO]
    assert above == [], audit.format_text(report)
    if HAVE_ANALYZE:
        assert report.exposure is not None
        assert report.exposure <= 1.5


@pytest.mark.parametrize(
    "cfg",
    [
        '[service]\nbind = "0.0.0.0:11434"\nallowed_networks = ["10.0.0.0/8"]\n'
        'models_dir = "/srv/models"\n',
        '[service]\nbind = "[::]:11434"\nallowed_networks = ["fd00::/8"]\n'
        '[limits]\nallowed_cpus = "0-1"\n',
    ],
    ids=["ipv4-network", "ipv6-pinned"],
)
@pytest.mark.parametrize("name", ["cpu-small", "nvidia-1x24g", "amd-rocm"])
def test_ollama_ops_variants_are_clean(tmp_path: Path, cfg: str, name: str) -> None:
    facts = host(name)
    assert facts.ollama.unit_path is not None
    root = make_root(tmp_path, unit_path=facts.ollama.unit_path.lstrip("/"))
    for path, text in render.render(plan.build(facts, config.loads(cfg))).items():
        write(root, path.lstrip("/"), text)
    found = run(root, facts, facts.systemd_version)
    assert ids(found, Severity.WARNING) == set(), found


def test_ollama_ops_dynamic_user_is_clean_on_nvidia(tmp_path: Path) -> None:
    facts = dataclasses.replace(host("nvidia-1x24g"), ollama=OllamaInstall())
    for path, text in render.render(plan.build(facts, config.DeploymentConfig())).items():
        write(tmp_path, path.lstrip("/"), text)
    found = run(tmp_path, facts, facts.systemd_version)
    assert ids(found, Severity.WARNING) == set(), found


# ------------------------------------------------------------ installer unit


def test_installer_unit_gets_restart_and_hardening_findings(tmp_path: Path) -> None:
    found = check(tmp_path, facts=host("cpu-small"))
    loop = only(found, "restart-loop-forever")
    assert loop.file == f"/{UNIT_PATH}"
    assert loop.line == 9
    assert "15 s" in loop.message
    assert {"no-memory-limit", "no-filesystem-protection"} <= ids(found, Severity.WARNING)
    assert "home-not-writable" not in ids(found)
    assert "api-exposed" not in ids(found)  # OLLAMA_HOST unset = 127.0.0.1


@needs_analyze
def test_installer_unit_has_a_high_exposure(tmp_path: Path) -> None:
    report = audit.audit(Runtime(root=make_root(tmp_path)), facts=host("cpu-small"))
    assert report.exposure is not None
    assert report.exposure > 7.5
    exposure = only(list(report.findings), "exposure")
    assert exposure.severity is Severity.CRITICAL
    assert f"{report.exposure:.1f}" in exposure.message


@needs_analyze
def test_guide_exposure_is_medium(tmp_path: Path) -> None:
    report = audit.audit(Runtime(root=make_root(tmp_path, GUIDE)), facts=host("nvidia-1x24g"))
    assert report.exposure is not None
    assert 2 < report.exposure <= 5
    assert only(list(report.findings), "exposure").severity is Severity.WARNING
    assert report.worst() is Severity.CRITICAL


# ------------------------------------------------------------------ keys


def test_unknown_section_and_key(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "\n[Servce]\nUser=x\n\n[Service]\nFrobnicate=1\n")
    assert only(found, "unknown-section").severity is Severity.WARNING
    unknown = only(found, "unknown-key")
    assert unknown.severity is Severity.INFO
    assert unknown.directive == "Frobnicate"
    assert "not known to ollama-ops' table" in unknown.message


def test_x_sections_and_known_keys_are_fine(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "\n[X-Ollama-Ops]\nAnything=1\n")
    assert not {"unknown-section", "unknown-key"} & ids(found)


def test_unknown_key_suggests_the_nearest(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "ProtectSytem=strict\n")
    assert "ProtectSystem=" in only(found, "unknown-key").message


def test_misplaced_start_limit(tmp_path: Path) -> None:
    found = check(tmp_path, "[Service]\nStartLimitIntervalSec=600\nStartLimitBurst=5\n")
    misplaced = [f for f in found if f.id == "misplaced-key"]
    assert {(f.directive, f.severity) for f in misplaced} == {
        ("StartLimitIntervalSec", Severity.WARNING),
        ("StartLimitBurst", Severity.INFO),
    }
    assert "[Unit]" in misplaced[0].fix
    assert "misplaced-key" not in ids(check(tmp_path / "ok", CLEAN))


def test_too_new_depends_on_the_version(tmp_path: Path) -> None:
    dropin = CLEAN + "RestartSteps=5\nRestartMaxDelaySec=5min\n"
    for version in (247, 252):
        found = check(tmp_path / str(version), dropin, version=version)
        assert {f.directive for f in found if f.id == "too-new-for-systemd"} == {
            "RestartSteps",
            "RestartMaxDelaySec",
        }
    assert "too-new-for-systemd" not in ids(check(tmp_path / "255", dropin, version=255))


def test_legacy_spelling(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "\n[Unit]\nStartLimitInterval=600\n")
    assert only(found, "legacy-name").severity is Severity.INFO


# ---------------------------------------------------------------- memory


def test_memory_high_above_max(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "MemoryHigh=6G\n")
    assert only(found, "memory-high-above-max").severity is Severity.ERROR
    assert "memory-high-above-max" not in ids(check(tmp_path / "ok", CLEAN))


def test_memory_percentages_resolve_against_the_host(tmp_path: Path) -> None:
    dropin = CLEAN + "MemoryHigh=90%\nMemoryMax=8G\n"
    found = check(tmp_path, dropin, facts=host("nvidia-1x24g"))  # 90 % of 63.5 GiB > 8G
    assert "memory-high-above-max" in ids(found)
    # Without facts a percentage cannot be compared with bytes: no guess.
    assert "memory-high-above-max" not in ids(check(tmp_path / "nofacts", dropin))
    # A percentage never exceeds the host; more than 100 % is invalid.
    found = check(tmp_path / "pct", CLEAN + "MemoryMax=95%\n", facts=host("cpu-small"))
    assert "memory-above-host" not in ids(found)
    bad = check(tmp_path / "bad", CLEAN + "MemoryMax=120%\n")
    assert only(bad, "invalid-value").directive == "MemoryMax"


def test_memory_above_the_host(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "MemoryHigh=48G\nMemoryMax=56G\n", facts=host("cpu-small"))
    assert {f.directive for f in found if f.id == "memory-above-host"} == {
        "MemoryHigh",
        "MemoryMax",
    }
    big = check(
        tmp_path / "big", CLEAN + "MemoryHigh=48G\nMemoryMax=56G\n", facts=host("nvidia-1x24g")
    )
    assert "memory-above-host" not in ids(big)


def test_no_memory_limit_and_infinity(tmp_path: Path) -> None:
    assert "no-memory-limit" in ids(check(tmp_path, CLEAN + "MemoryHigh=\nMemoryMax=infinity\n"))
    found = check(tmp_path / "ok", CLEAN, facts=host("cpu-small"))
    assert "no-memory-limit" not in ids(found)
    found = check(tmp_path / "inf", CLEAN + "MemoryHigh=infinity\n", facts=host("cpu-small"))
    assert not {"memory-above-host", "memory-high-above-max"} & ids(found)


def test_invalid_memory_value(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "MemoryMax=lots\n")
    assert only(found, "invalid-value").severity is Severity.WARNING


# ---------------------------------------------------------------- CPUs and GPUs


def test_allowed_cpus_the_host_lacks(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "AllowedCPUs=0-7\n", facts=host("cpu-small"))
    f = only(found, "cpus-not-on-host")
    assert f.severity is Severity.ERROR
    assert "4-7" in f.message
    ok = check(tmp_path / "ok", CLEAN + "AllowedCPUs=0-3\n", facts=host("cpu-small"))
    assert "cpus-not-on-host" not in ids(ok)
    numa = check(
        tmp_path / "numa", CLEAN + "AllowedCPUs=0-31 64-95\n", facts=host("nvidia-2x-h100-2socket")
    )
    assert not {"cpus-not-on-host", "invalid-value"} & ids(numa)


def test_cuda_visible_devices(tmp_path: Path) -> None:
    one_gpu = host("nvidia-1x24g")
    found = check(tmp_path / "a", CLEAN + "Environment=CUDA_VISIBLE_DEVICES=1\n", facts=one_gpu)
    assert only(found, "gpus-not-on-host").severity is Severity.ERROR
    found = check(tmp_path / "b", CLEAN + "Environment=CUDA_VISIBLE_DEVICES=0,1\n", facts=one_gpu)
    assert only(found, "gpus-not-on-host").severity is Severity.WARNING
    found = check(tmp_path / "c", CLEAN + "Environment=CUDA_VISIBLE_DEVICES=0\n", facts=one_gpu)
    assert "gpus-not-on-host" not in ids(found)
    cpu = check(
        tmp_path / "d", CLEAN + "Environment=CUDA_VISIBLE_DEVICES=0\n", facts=host("cpu-small")
    )
    assert only(cpu, "gpus-not-on-host").severity is Severity.WARNING


def test_models_and_parallel_versus_memory(tmp_path: Path) -> None:
    env = CLEAN + "Environment=OLLAMA_MAX_LOADED_MODELS=2 OLLAMA_NUM_PARALLEL=4\n"
    assert "models-exceed-memory" in ids(check(tmp_path / "a", env, facts=host("cpu-small")))
    assert "models-exceed-memory" not in ids(check(tmp_path / "b", env, facts=host("nvidia-1x24g")))
    huge = CLEAN + "Environment=OLLAMA_MAX_LOADED_MODELS=8 OLLAMA_NUM_PARALLEL=16\n"
    found = check(tmp_path / "c", huge, facts=host("nvidia-1x24g"))
    assert only(found, "models-exceed-memory").severity is Severity.WARNING


def test_gomaxprocs_follows_allowed_cpus(tmp_path: Path) -> None:
    h100 = host("nvidia-2x-h100-2socket")
    pinned = CLEAN + "AllowedCPUs=0-31,64-95\nEnvironment=GOMAXPROCS=64\n"
    assert "gomaxprocs-fixed" not in ids(check(tmp_path / "a", pinned, facts=h100))
    wrong = CLEAN + "AllowedCPUs=0-31,64-95\nEnvironment=GOMAXPROCS=128\n"
    assert (
        "oversubscribe"
        in only(check(tmp_path / "b", wrong, facts=h100), "gomaxprocs-fixed").message
    )
    no_facts = check(tmp_path / "c", CLEAN + "Environment=GOMAXPROCS=16\n")
    assert only(no_facts, "gomaxprocs-fixed").severity is Severity.INFO


# ---------------------------------------------------------------- environment


def test_environment_variable_checks(tmp_path: Path) -> None:
    env = CLEAN + (
        "Environment=OLLAMA_NUM_PARALLEL=four OLLAMA_FLASH_ATTENTION=enabled\n"
        "Environment=OLLAMA_TMPDIR=/var/tmp OLLAMA_MAX_LOADED=2\n"
    )
    found = check(tmp_path, env)
    assert only(found, "env-not-a-number").directive == "OLLAMA_NUM_PARALLEL"
    assert only(found, "env-bool-unparsable").directive == "OLLAMA_FLASH_ATTENTION"
    assert "v0.5.2" in only(found, "env-stale").message
    assert "OLLAMA_MAX_LOADED_MODELS" in only(found, "env-unknown").message
    fine = (
        CLEAN + "Environment=OLLAMA_NUM_PARALLEL=2 OLLAMA_FLASH_ATTENTION=1 OLLAMA_KEEP_ALIVE=5m\n"
    )
    assert not {"env-not-a-number", "env-bool-unparsable", "env-stale", "env-unknown"} & ids(
        check(tmp_path / "ok", fine)
    )


def test_environment_reset_and_order(tmp_path: Path) -> None:
    exposed = "[Service]\nEnvironment=OLLAMA_HOST=0.0.0.0\n"
    assert "api-exposed" in ids(check(tmp_path / "a", CLEAN, exposed))
    reset = "[Service]\nEnvironment=\nEnvironment=OLLAMA_MODELS=/usr/share/ollama/m\n"
    assert "api-exposed" not in ids(check(tmp_path / "b", CLEAN, exposed, reset))
    later = "[Service]\nEnvironment=OLLAMA_HOST=127.0.0.1:11434\n"
    assert "api-exposed" not in ids(check(tmp_path / "c", CLEAN, exposed, later))


def test_environment_file_is_read_and_wins(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        CLEAN + "Environment=OLLAMA_HOST=127.0.0.1\nEnvironmentFile=/etc/ollama/ollama.env\n",
    )
    write(root, "etc/ollama/ollama.env", "# bind everywhere\n\nOLLAMA_HOST='0.0.0.0:11434'\n")
    f = only(run(root), "api-exposed")
    assert f.file == "/etc/ollama/ollama.env"
    assert f.line == 3


def test_environment_file_missing(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "EnvironmentFile=/etc/ollama/missing.env\n")
    missing = only(found, "env-file-missing")
    assert missing.severity is Severity.ERROR
    assert "-/etc/ollama/missing.env" in missing.fix
    optional = check(tmp_path / "ok", CLEAN + "EnvironmentFile=-/etc/ollama/missing.env\n")
    assert "env-file-missing" not in ids(optional)


def test_environment_file_glob(tmp_path: Path) -> None:
    root = make_root(tmp_path, CLEAN + "EnvironmentFile=/etc/ollama/*.env\n")
    write(root, "etc/ollama/a.env", "OLLAMA_HOST=127.0.0.1\n")
    write(root, "etc/ollama/b.env", "OLLAMA_HOST=:11434\n")
    assert only(run(root), "api-exposed").file == "/etc/ollama/b.env"
    assert "env-file-missing" in ids(
        check(tmp_path / "none", CLEAN + "EnvironmentFile=/etc/ollama/*.env\n")
    )


def test_env_file_parser() -> None:
    text = 'A=1\n# c\n; c\nB="x \\"y\\""\nbad line\nexport C=2\n  D = spaced \n'
    assert audit._parse_env_file(text) == [(1, "A", "1"), (4, "B", 'x "y"'), (7, "D", "spaced")]


def test_unreadable_environment_file_is_a_warning() -> None:
    effective = effective_mod.EffectiveUnit(
        "ollama.service",
        "/etc/systemd/system/ollama.service",
        (),
        tuple(
            unit.parse(INSTALLER + CLEAN + "EnvironmentFile=/etc/secret.env\n", "/u").assignments
        ),
        masked=False,
    )
    files = RootFiles(env_files=(EnvFile("/etc/secret.env", "/etc/secret.env", error="denied"),))
    found = audit.check(effective, None, 252, files)
    assert only(found, "env-file-unreadable").severity is Severity.WARNING


# ---------------------------------------------------------------- paths


def test_home_not_writable_is_critical_with_restart(tmp_path: Path) -> None:
    dropin = "[Service]\nProtectSystem=strict\nReadWritePaths=/var/lib/ollama\n"
    f = only(check(tmp_path, dropin), "home-not-writable")
    assert f.severity is Severity.CRITICAL  # Restart=always from the installer: a loop
    assert "/usr/share/ollama/.ollama" in f.message
    no_restart = only(check(tmp_path / "b", dropin + "Restart=no\n"), "home-not-writable")
    assert no_restart.severity is Severity.ERROR


@pytest.mark.parametrize(
    "dropin",
    [
        "[Service]\nProtectSystem=full\n",
        "[Service]\nProtectSystem=yes\n",
        "[Service]\nProtectSystem=strict\nReadWritePaths=/usr/share/ollama\n"
        "ReadOnlyPaths=/usr/share/ollama/.ollama\n",
    ],
    ids=["full", "yes", "read-only-inside"],
)
def test_home_not_writable_variants(tmp_path: Path, dropin: str) -> None:
    assert "home-not-writable" in ids(check(tmp_path, dropin))


@pytest.mark.parametrize(
    "dropin",
    [
        "[Service]\nProtectSystem=strict\nReadWritePaths=/usr/share/ollama\n",
        "[Service]\nProtectSystem=strict\nReadWritePaths=-/usr/share/ollama/.ollama\n",
        "[Service]\nProtectSystem=strict\nEnvironment=HOME=/var/lib/ollama\nStateDirectory=ollama\n",
        "[Service]\nProtectSystem=full\nEnvironment=HOME=/var/lib/ollama\n",
        "[Service]\nProtectSystem=no\n",
    ],
    ids=["rw-home", "rw-key-dir", "state-dir", "full-var", "none"],
)
def test_home_writable_variants(tmp_path: Path, dropin: str) -> None:
    assert "home-not-writable" not in ids(check(tmp_path, dropin))


def test_protect_home_hides_a_home_under_home(tmp_path: Path) -> None:
    dropin = (
        "[Service]\nProtectSystem=strict\nProtectHome=yes\nEnvironment=HOME=/home/ollama\n"
        "ReadWritePaths=/home/ollama\n"
    )
    f = only(check(tmp_path, dropin), "home-not-writable")
    assert f.directive == "ProtectHome"
    assert "inaccessible" in f.message
    read_only = dropin.replace("ProtectHome=yes", "ProtectHome=read-only")
    assert "home-not-writable" not in ids(check(tmp_path / "ro", read_only))
    tmpfs = dropin.replace("ProtectHome=yes", "ProtectHome=tmpfs")
    assert "home-not-writable" in ids(check(tmp_path / "tmpfs", tmpfs))


def test_home_comes_from_passwd_and_facts(tmp_path: Path) -> None:
    root = make_root(
        tmp_path, "[Service]\nUser=llm\nProtectSystem=strict\nReadWritePaths=/srv/llm\n"
    )
    write(root, "etc/passwd", "root:x:0:0::/root:/bin/sh\nllm:x:900:900::/srv/llm:/bin/false\n")
    assert "home-not-writable" not in ids(run(root))
    write(root, "etc/passwd", "llm:x:900:900::/opt/llm:/bin/false\n")
    assert "/opt/llm" in only(run(root), "home-not-writable").message
    facts = dataclasses.replace(
        host("cpu-small"), ollama=OllamaInstall(user="llm", home="/srv/llm")
    )
    assert "home-not-writable" not in ids(run(root, facts))


def test_unknown_user_home_is_info(tmp_path: Path) -> None:
    found = check(tmp_path, "[Service]\nUser=nobody-here\nProtectSystem=strict\n")
    assert only(found, "home-unknown").severity is Severity.INFO


def test_dynamic_user_needs_a_home(tmp_path: Path) -> None:
    dyn = "[Service]\nUser=\nDynamicUser=yes\n"
    f = only(check(tmp_path, dyn), "home-not-writable")
    assert "DynamicUser" in f.message
    fixed = dyn + "StateDirectory=ollama\nEnvironment=HOME=/var/lib/ollama\n"
    assert "home-not-writable" not in ids(check(tmp_path / "ok", fixed))


def test_models_not_writable(tmp_path: Path) -> None:
    dropin = CLEAN + "Environment=OLLAMA_MODELS=/srv/models\n"
    f = only(check(tmp_path, dropin), "models-not-writable")
    assert f.severity is Severity.ERROR
    assert f.directive == "OLLAMA_MODELS"
    ok = dropin + "ReadWritePaths=/srv/models\n"
    assert "models-not-writable" not in ids(check(tmp_path / "ok", ok))


def test_proc_subset(tmp_path: Path) -> None:
    assert only(check(tmp_path, CLEAN + "ProcSubset=pid\n"), "proc-subset-pid").severity is (
        Severity.ERROR
    )
    assert "proc-subset-pid" not in ids(check(tmp_path / "ok", CLEAN + "ProcSubset=all\n"))


# ---------------------------------------------------------------- devices

NVIDIA_CLOSED = CLEAN + (
    "DevicePolicy=closed\nDeviceAllow=/dev/nvidiactl rw\nDeviceAllow=/dev/nvidia-uvm rw\n"
    "DeviceAllow=char-nvidia-frontend rw\n"
)


def test_device_allow_without_policy(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "DeviceAllow=/dev/nvidia0 rw\n")
    assert only(found, "device-policy-implicit").severity is Severity.WARNING
    ok = check(tmp_path / "ok", CLEAN + "DevicePolicy=closed\nDeviceAllow=/dev/nvidia0 rw\n")
    assert "device-policy-implicit" not in ids(ok)


def test_gpu_device_nodes_under_a_closed_policy(tmp_path: Path) -> None:
    gpu = host("nvidia-1x24g")
    assert "gpu-device-denied" not in ids(check(tmp_path / "ok", NVIDIA_CLOSED, facts=gpu))
    read_only = NVIDIA_CLOSED.replace("char-nvidia-frontend rw", "char-nvidia-frontend r")
    f = only(check(tmp_path / "ro", read_only, facts=gpu), "gpu-device-denied")
    assert "/dev/nvidia0" in f.message
    assert f.severity is Severity.ERROR
    strict = CLEAN + "DevicePolicy=strict\n"
    f = only(check(tmp_path / "strict", strict, facts=gpu), "gpu-device-denied")
    assert "/dev/nvidiactl" in f.message
    assert "gpu-device-denied" not in ids(check(tmp_path / "cpu", strict, facts=host("cpu-small")))
    amd = CLEAN + "DevicePolicy=closed\nDeviceAllow=/dev/kfd rw\nDeviceAllow=char-drm rw\n"
    assert "gpu-device-denied" not in ids(check(tmp_path / "amd", amd, facts=host("amd-rocm")))


def test_device_allow_matching() -> None:
    assert audit._allows("/dev/nvidia0 rw", "/dev/nvidia0")
    assert audit._allows("/dev/nvidia0", "/dev/nvidia0")  # default rwm
    assert not audit._allows("/dev/nvidia0 r", "/dev/nvidia0")
    assert audit._allows("char-nvidia-* rw", "/dev/nvidia-uvm")
    assert audit._allows("char-nvidia-frontend rw", "/dev/nvidia7")
    assert not audit._allows("char-nvidia-frontend rw", "/dev/nvidia-uvm")
    assert audit._allows("char-drm rw", "/dev/dri/renderD128")


def test_private_devices_with_gpus(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "PrivateDevices=yes\n", facts=host("nvidia-1x24g"))
    assert only(found, "private-devices-gpu").severity is Severity.ERROR
    cpu = check(tmp_path / "cpu", CLEAN + "PrivateDevices=yes\n", facts=host("cpu-small"))
    assert "private-devices-gpu" not in ids(cpu)


def test_nvidia_uvm_needs_modules_load(tmp_path: Path) -> None:
    gpu = host("nvidia-1x24g")
    dropin = NVIDIA_CLOSED + "NoNewPrivileges=yes\n"
    root = make_root(tmp_path, dropin)
    assert only(run(root, gpu), "nvidia-uvm-not-loaded").directive == "NoNewPrivileges"
    write(root, "etc/modules-load.d/nvidia.conf", "# GPU\nnvidia\nnvidia-uvm\n")
    assert "nvidia-uvm-not-loaded" not in ids(run(root, gpu))
    (root / "etc/modules-load.d/nvidia.conf").unlink()
    write(root, "lib/modprobe.d/nvidia.conf", "softdep nvidia post: nvidia-uvm\n")
    assert "nvidia-uvm-not-loaded" not in ids(run(root, gpu))


def test_nvidia_uvm_implied_no_new_privileges(tmp_path: Path) -> None:
    gpu = host("nvidia-1x24g")
    implied = check(tmp_path / "a", NVIDIA_CLOSED + "RestrictSUIDSGID=yes\n", facts=gpu)
    assert only(implied, "nvidia-uvm-not-loaded").directive == "RestrictSUIDSGID"
    assert "nvidia-uvm-not-loaded" not in ids(check(tmp_path / "b", NVIDIA_CLOSED, facts=gpu))
    # Not looked at (pure call without root files): no guess.
    effective = effective_mod.load_effective(
        make_root(tmp_path / "c", NVIDIA_CLOSED + "NoNewPrivileges=yes\n"), "ollama.service"
    )
    assert "nvidia-uvm-not-loaded" not in ids(audit.check(effective, gpu, 252))


def test_mdwe_with_gpus(tmp_path: Path) -> None:
    found = check(
        tmp_path, NVIDIA_CLOSED + "MemoryDenyWriteExecute=yes\n", facts=host("nvidia-1x24g")
    )
    assert only(found, "mdwe-gpu").severity is Severity.WARNING
    cpu = check(tmp_path / "cpu", CLEAN + "MemoryDenyWriteExecute=yes\n", facts=host("cpu-small"))
    assert "mdwe-gpu" not in ids(cpu)


def test_private_users_and_groups_on_amd(tmp_path: Path) -> None:
    amd = host("amd-rocm")
    found = check(tmp_path / "a", CLEAN + "PrivateUsers=yes\n", facts=amd)
    assert only(found, "private-users-amd").severity is Severity.ERROR
    nvidia = check(tmp_path / "b", NVIDIA_CLOSED + "PrivateUsers=yes\n", facts=host("nvidia-1x24g"))
    assert "private-users-amd" not in ids(nvidia)
    dyn = "[Service]\nUser=\nDynamicUser=yes\nEnvironment=HOME=/var/lib/ollama\nStateDirectory=ollama\n"
    assert "amd-no-render-group" in ids(check(tmp_path / "c", CLEAN, dyn, facts=amd))
    grouped = dyn + "SupplementaryGroups=render video\n"
    assert "amd-no-render-group" not in ids(check(tmp_path / "d", CLEAN, grouped, facts=amd))
    root = make_root(tmp_path / "e", CLEAN)
    write(root, "etc/group", "render:x:110:\nvideo:x:44:\nollama:x:999:\n")
    assert "amd-no-render-group" in ids(run(root, amd))
    write(root, "etc/group", "render:x:110:ollama\nvideo:x:44:ollama\n")
    assert "amd-no-render-group" not in ids(run(root, amd))


# ---------------------------------------------------------------- network


@pytest.mark.parametrize(
    ("value", "host_part"),
    [
        ("0.0.0.0:11434", "0.0.0.0"),
        ("0.0.0.0", "0.0.0.0"),
        (":11434", ""),
        ("::", "::"),
        ("[::]:11434", "::"),
        ("http://10.1.2.3:8080", "10.1.2.3"),
        ("", "127.0.0.1"),
        ("127.0.0.1:11434", "127.0.0.1"),
        ("localhost:11434", "localhost"),
        ("[::1]:11434", "::1"),
        ("ollama.lan", "ollama.lan"),
    ],
)
def test_bind_host_like_ollama(value: str, host_part: str) -> None:
    assert audit._bind_host(value) == host_part


@pytest.mark.parametrize(
    "value", ["127.0.0.1:11434", "localhost", "[::1]:11434", "127.0.0.2", '""']
)
def test_loopback_bind_is_fine(tmp_path: Path, value: str) -> None:
    found = check(tmp_path, CLEAN + f"Environment=OLLAMA_HOST={value}\n")
    assert "api-exposed" not in ids(found)


def test_api_exposed_severity(tmp_path: Path) -> None:
    bare = check(tmp_path / "a", CLEAN + "Environment=OLLAMA_HOST=:11434\n")
    assert only(bare, "api-exposed").severity is Severity.CRITICAL
    weak = CLEAN + "Environment=OLLAMA_HOST=0.0.0.0\nIPAddressDeny=192.168.0.0/16\n"
    assert only(check(tmp_path / "b", weak), "api-exposed").severity is Severity.ERROR
    any_allowed = CLEAN + "Environment=OLLAMA_HOST=0.0.0.0\nIPAddressDeny=any\nIPAddressAllow=any\n"
    assert only(check(tmp_path / "c", any_allowed), "api-exposed").severity is Severity.ERROR
    listed = (
        CLEAN + "Environment=OLLAMA_HOST=0.0.0.0\nIPAddressDeny=any\n"
        "IPAddressAllow=localhost 10.0.0.0/8\n"
    )
    assert "api-exposed" not in ids(check(tmp_path / "d", listed))
    loopback_only = (
        CLEAN + "Environment=OLLAMA_HOST=0.0.0.0\nIPAddressDeny=any\nIPAddressAllow=localhost\n"
    )
    found = check(tmp_path / "e", loopback_only)
    assert "api-exposed" not in ids(found)
    assert only(found, "bind-unreachable").severity is Severity.INFO


def test_ip_deny_without_loopback(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "IPAddressDeny=any\nIPAddressAllow=10.0.0.0/8\n")
    assert only(found, "ip-deny-loopback").severity is Severity.ERROR
    assert only(found, "ip-deny-blocks-pull").severity is Severity.INFO
    ok = check(tmp_path / "ok", CLEAN + "IPAddressDeny=any\nIPAddressAllow=localhost\n")
    assert "ip-deny-loopback" not in ids(ok)


def test_private_network(tmp_path: Path) -> None:
    assert "private-network" in ids(check(tmp_path, CLEAN + "PrivateNetwork=yes\n"))
    assert "private-network" not in ids(check(tmp_path / "ok", CLEAN + "PrivateNetwork=no\n"))


def test_address_families(tmp_path: Path) -> None:
    unix = check(tmp_path / "a", CLEAN + "RestrictAddressFamilies=AF_UNIX\n")
    assert any(f.id == "address-families" and f.severity is Severity.ERROR for f in unix)
    no_v6 = check(tmp_path / "b", CLEAN + "RestrictAddressFamilies=~AF_INET6\n")
    assert only(no_v6, "address-families").severity is Severity.INFO
    v6_bind = (
        CLEAN + "RestrictAddressFamilies=AF_INET AF_UNIX\nEnvironment=OLLAMA_HOST=[::1]:11434\n"
    )
    assert only(check(tmp_path / "c", v6_bind), "address-families").severity is Severity.ERROR
    reset = CLEAN + "RestrictAddressFamilies=AF_UNIX\nRestrictAddressFamilies=\n"
    assert "address-families" not in ids(check(tmp_path / "d", reset))
    guide_like = CLEAN + "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK\n"
    assert "address-families" not in ids(check(tmp_path / "e", guide_like))


# ---------------------------------------------------------------- restart


def test_restart_never(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "Restart=no\n")
    assert only(found, "restart-never").severity is Severity.WARNING
    base = INSTALLER.replace("Restart=always\n", "")
    assert "restart-never" in ids(check(tmp_path / "unset", base=base))


def test_restart_limit_disabled(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "\n[Unit]\nStartLimitIntervalSec=0\n")
    f = only(found, "restart-loop-forever")
    assert "disabled" in f.message
    assert f.directive == "StartLimitIntervalSec"


def test_restart_gives_up_too_soon(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "\n[Unit]\nStartLimitBurst=1\n")
    assert only(found, "restart-gives-up").severity is Severity.WARNING


def test_restart_limit_arithmetic(tmp_path: Path) -> None:
    assert "restart-loop-forever" not in ids(check(tmp_path / "ok", CLEAN))
    slow = CLEAN + "RestartSec=2min\n"  # 5 x 120 s >= 600 s
    assert "restart-loop-forever" in ids(check(tmp_path / "slow", slow))
    legacy = "[Service]\nRestart=on-failure\nRestartSec=5\nStartLimitInterval=600\n"
    assert "restart-loop-forever" not in ids(check(tmp_path / "legacy", legacy))


def test_restart_back_off_counts_where_supported(tmp_path: Path) -> None:
    dropin = (
        "[Unit]\nStartLimitIntervalSec=100\nStartLimitBurst=5\n[Service]\nRestart=on-failure\n"
        "RestartSec=10\nRestartSteps=5\nRestartMaxDelaySec=300\n"
    )
    assert "restart-loop-forever" in ids(check(tmp_path / "255", dropin, version=255))
    assert "restart-loop-forever" not in ids(check(tmp_path / "252", dropin, version=252))


def test_timespans() -> None:
    assert audit.parse_timespan("10") == 10
    assert audit.parse_timespan("5min") == 300
    assert audit.parse_timespan("1h 30s") == 3630
    assert audit.parse_timespan("1min30s") == 90
    assert audit.parse_timespan("500ms") == 0.5
    assert audit.parse_timespan("infinity") == float("inf")
    assert audit.parse_timespan("soon") is None
    assert audit.parse_timespan("") is None


# ---------------------------------------------------------------- service


def test_service_basics(tmp_path: Path) -> None:
    found = check(tmp_path, CLEAN + "Type=notify\nWatchdogSec=30\n")
    assert {"type-never-ready", "watchdog"} <= ids(found, Severity.ERROR)
    ok = check(tmp_path / "ok", CLEAN + "Type=exec\nWatchdogSec=0\n")
    assert not {"type-never-ready", "watchdog"} & ids(ok)
    root_user = check(tmp_path / "root", CLEAN + "User=\n")
    assert only(root_user, "runs-as-root").severity is Severity.ERROR
    assert "runs-as-root" not in ids(check(tmp_path / "user", CLEAN))
    no_exec = check(tmp_path / "exec", CLEAN + "ExecStart=\n")
    assert "no-execstart" in ids(no_exec, Severity.ERROR)


def test_masked_unit(tmp_path: Path) -> None:
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    (tmp_path / UNIT_PATH).symlink_to("/dev/null")
    report = audit.audit(Runtime(root=tmp_path), systemd_version=252)
    assert [f.id for f in report.findings] == ["unit-masked"]
    assert report.worst() is Severity.CRITICAL


# ---------------------------------------------------------------- edge


def test_unit_not_found(tmp_path: Path) -> None:
    with pytest.raises(OpsError) as err:
        audit.audit(Runtime(root=tmp_path))
    assert str(err.value) == (
        f"ollama.service not found under {tmp_path}; install ollama or pass --root"
    )


class AnalyzeRunner:
    """A Runtime.run standing in for systemd-analyze: its JSON rows and its overall line."""

    def __init__(self, score: float | None, rows: tuple[dict[str, object], ...] = ()) -> None:
        self.score = score
        self.rows = rows
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], **kw: Any) -> proc.Completed:
        self.calls.append(tuple(argv))
        if self.score is None:  # what proc.run raises for a program that is not installed
            raise CommandError(f"{argv[0]}: command not found; install it or put it on PATH")
        if "--json=short" in argv:
            return proc.Completed(tuple(argv), 0, json.dumps(list(self.rows)), "")
        overall = f"-> Overall exposure level for {argv[-1]}: {self.score} MEDIUM\n"
        return proc.Completed(tuple(argv), 0, overall, "")


def test_missing_systemd_analyze_skips_exposure(tmp_path: Path) -> None:
    rt = Runtime(root=make_root(tmp_path, CLEAN), run=AnalyzeRunner(None))
    report = audit.audit(rt, systemd_version=252)
    assert report.exposure is None
    f = only(list(report.findings), "exposure-unavailable")
    assert f.severity is Severity.INFO
    assert "not found" in f.message


@pytest.mark.parametrize(
    ("score", "severity"),
    [
        (1.2, Severity.INFO),
        (2.0, Severity.INFO),
        (4.3, Severity.WARNING),
        (7.5, Severity.ERROR),
        (9.2, Severity.CRITICAL),
    ],
)
def test_exposure_severity(tmp_path: Path, score: float, severity: Severity) -> None:
    rows: tuple[dict[str, object], ...] = (
        {"name": "PrivateNetwork=", "exposure": 0.5},
        {"name": "UMask=", "exposure": None},
    )
    root = make_root(tmp_path, CLEAN)
    runner = AnalyzeRunner(score, rows)
    report = audit.audit(Runtime(root=root, run=runner), systemd_version=252)
    assert report.exposure == score
    f = only(list(report.findings), "exposure")
    assert f.severity is severity
    assert "PrivateNetwork=" in f.message
    # The runtime's runner ran systemd-analyze on the files under the root, offline.
    assert all(f"--root={root}" in call and "--offline=true" in call for call in runner.calls)
    assert len(runner.calls) == 2


@pytest.mark.parametrize(("version", "too_new"), [("255", False), ("252", True)])
def test_the_systemd_version_is_asked_through_the_runtime(
    tmp_path: Path, version: str, too_new: bool
) -> None:
    def runner(argv: Sequence[str], **kw: Any) -> proc.Completed:
        assert list(argv) == ["systemctl", "--version"]
        return proc.Completed(tuple(argv), 0, f"systemd {version} ({version}.4-1)\n+PAM\n", "")

    root = make_root(tmp_path, CLEAN + "RestartSteps=3\nRestartMaxDelaySec=1min\n")
    report = audit.audit(Runtime(root=root, run=runner), with_exposure=False)
    assert ("too-new-for-systemd" in {f.id for f in report.findings}) is too_new


def test_version_defaults_to_the_facts(tmp_path: Path) -> None:
    root = make_root(tmp_path, CLEAN + "RestartSteps=3\nRestartMaxDelaySec=1min\n")
    new = dataclasses.replace(host("cpu-small"), systemd_version=255)
    report = audit.audit(Runtime(root=root), facts=new, with_exposure=False)
    assert "too-new-for-systemd" not in {f.id for f in report.findings}
    report = audit.audit(Runtime(root=root), facts=host("cpu-small"), with_exposure=False)
    assert "too-new-for-systemd" in {f.id for f in report.findings}


# ---------------------------------------------------------------- report


def test_worst_and_json_shape(tmp_path: Path) -> None:
    empty = Report("ollama.service", "/u", (), (), None)
    assert empty.worst() is Severity.INFO
    report = audit.audit(
        Runtime(root=make_root(tmp_path, GUIDE)), with_exposure=False, systemd_version=252
    )
    assert report.worst() is Severity.CRITICAL
    data = json.loads(json.dumps(report.to_json()))
    assert set(data) == {"unit", "fragment", "dropins", "exposure", "worst", "findings"}
    assert data["unit"] == "ollama.service"
    assert data["fragment"] == f"/{UNIT_PATH}"
    assert data["dropins"] == [f"/{DROPIN_DIR}/10-test.conf"]
    assert data["worst"] == "critical"
    assert data["exposure"] is None
    for item in data["findings"]:
        assert set(item) == {"id", "severity", "file", "line", "directive", "message", "fix"}
        assert item["severity"] in {"info", "warning", "error", "critical"}
    severities = [Severity[f["severity"].upper()] for f in data["findings"]]
    assert severities == sorted(severities, reverse=True)


def test_format_text(tmp_path: Path) -> None:
    report = audit.audit(
        Runtime(root=make_root(tmp_path, GUIDE)), with_exposure=False, systemd_version=252
    )
    text = audit.format_text(report)
    lines = text.splitlines()
    # The summary first: the unit, how bad, what to do; then the unit's files.
    assert lines[0].startswith("audit: ollama.service: 2 critical, ")
    assert "(worst: critical)" in text.split("\n\n")[0]
    assert f"  unit: /{UNIT_PATH}" in lines
    # One block per finding: severity, id, file:line (directive), the message, the fix.
    block = next(b for b in text.split("\n\n") if "home-not-writable" in b)
    assert block.startswith("CRITICAL home-not-writable")
    assert f"/{DROPIN_DIR}/10-test.conf:69" in block.splitlines()[0]
    assert "(ProtectSystem)" in block
    assert "\n    fix: add ReadWritePaths=/usr/share/ollama" in block
    assert len(
        [x for x in lines if x.split(" ")[0] in {"INFO", "WARNING", "ERROR", "CRITICAL"}]
    ) == len(report.findings)
    assert all(len(line) <= 100 for line in lines)
    clean = Report("ollama.service", "/u", (), (), 1.0)
    assert audit.format_text(clean).startswith("audit: ollama.service: no findings")


def test_protect_home_tmpfs_needs_a_bind_mount(tmp_path: Path) -> None:
    dropin = (
        "[Service]\nProtectSystem=strict\nProtectHome=tmpfs\nEnvironment=HOME=/home/ollama\n"
        "BindPaths=/home/ollama\n"
    )
    assert "home-not-writable" not in ids(check(tmp_path, dropin))


@needs_analyze
def test_ignored_keys_match_systemd_analyze_verify(tmp_path: Path) -> None:
    """What the audit calls ignored is exactly what the installed systemd ignores."""
    version = systemd.installed_version()
    if version is None:
        pytest.skip("systemctl is missing: the installed systemd version is unknown")
    root = make_root(tmp_path, GUIDE)
    warned = {
        line.split("Unknown key '")[1].split("'")[0]
        for line in systemd.verify(root, "ollama.service")
        if "Unknown key '" in line
    }
    found = run(root, None, version)
    ignored = {
        f.directive
        for f in found
        if f.id in {"misplaced-key", "too-new-for-systemd"} and f.severity >= Severity.WARNING
    }
    assert ignored == warned
    assert "StartLimitBurst" not in warned  # still accepted in [Service]


# ------------------------------------- env files read as systemd reads them (issue 7, item 5)

ENV_UNIT = CLEAN + "EnvironmentFile=-/etc/ollama/ollama.env\n"


@pytest.mark.parametrize(
    ("text", "exposed"),
    [
        # a quoted multi-line value holds the line that seemed to restore loopback
        ("OLLAMA_HOST=0.0.0.0\nNOTE='\nOLLAMA_HOST=127.0.0.1\n'\n", True),
        ('OLLAMA_HOST=0.0.0.0\nNOTE="a\\"\nOLLAMA_HOST=127.0.0.1"\n', True),
        # a backslash-newline joins the lines
        ("OLLAMA_HOST=0.0.0.0\\\n:11434\n", True),
        ("X=1 \\\nOLLAMA_HOST=127.0.0.1\nOLLAMA_HOST=0.0.0.0\n", True),
        # ... and what only looks like an assignment sits inside a quoted value
        ('X="a\nOLLAMA_HOST=0.0.0.0"\n', False),
        ("X='\nOLLAMA_HOST=0.0.0.0\n'\n", False),
        ("X=a\\\nOLLAMA_HOST=0.0.0.0\n", False),
        ("# comment \\\nOLLAMA_HOST=0.0.0.0\n", True),  # since systemd 254 a comment ends here
        ("OLLAMA_HOST=0.0.0.0\0\nOLLAMA_HOST=127.0.0.1\n", True),  # systemd stops at NUL
    ],
)
def test_env_files_are_read_with_systemds_grammar(tmp_path: Path, text: str, exposed: bool) -> None:
    root = make_root(tmp_path, ENV_UNIT)
    write(root, "etc/ollama/ollama.env", text)
    assert ("api-exposed" in ids(run(root))) is exposed


SECRET = "OLLAMA_HOST=0.0.0.0\nOLLAMA_ORIGINS=host-secret-value\n"


@pytest.mark.parametrize(
    "spec",
    ["/../../outside.env", "/etc/../../../outside.env", "/../../out*.env", "/etc/ollama/link.env"],
)
def test_env_files_are_read_inside_the_root_only(tmp_path: Path, spec: str) -> None:
    write(tmp_path, "outside.env", SECRET)
    root = make_root(tmp_path / "a" / "root", CLEAN + f"EnvironmentFile={spec}\n")
    (root / "etc/ollama").mkdir(parents=True, exist_ok=True)
    (root / "etc/ollama/link.env").symlink_to(tmp_path / "outside.env")  # absolute, on the host
    found = run(root)
    assert "api-exposed" not in ids(found)
    assert "env-file-missing" in ids(found)
    assert not any("host-secret-value" in f.message + f.fix for f in found)


def test_a_relative_symlink_cannot_climb_out_of_the_root(tmp_path: Path) -> None:
    write(tmp_path, "outside.env", SECRET)
    root = make_root(tmp_path / "a" / "root", ENV_UNIT)
    (root / "etc/ollama").mkdir(parents=True, exist_ok=True)
    (root / "etc/ollama/ollama.env").symlink_to("../../../../../outside.env")
    assert "api-exposed" not in ids(run(root))


class Blocked(Exception):
    """The code under test blocked (in open() of a FIFO, say) past its time."""


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts a blocked open() or read()."""

    def fail(_signum: int, _frame: object) -> None:
        raise Blocked(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    "fifo",
    ["etc/ollama/ollama.env", "etc/passwd", "etc/group", "etc/modules-load.d/nvidia.conf"],
)
def test_a_fifo_under_the_root_does_not_hang_audit(tmp_path: Path, fifo: str) -> None:
    root = make_root(tmp_path, ENV_UNIT)
    (root / fifo).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(root / fifo)
    with within(10):
        found = run(root)
    if fifo.endswith(".env"):
        assert "not a regular file" in only(found, "env-file-unreadable").message


def test_an_env_file_over_the_size_cap_is_not_read(tmp_path: Path) -> None:
    root = make_root(tmp_path, ENV_UNIT)
    write(root, "etc/ollama/ollama.env", "OLLAMA_HOST=0.0.0.0\n" + "#" * (2 << 20) + "\n")
    assert "over" in only(run(root), "env-file-unreadable").message


def test_an_env_file_that_systemd_refuses_is_reported(tmp_path: Path) -> None:
    root = make_root(tmp_path, ENV_UNIT)
    (root / "etc/ollama").mkdir(parents=True, exist_ok=True)
    (root / "etc/ollama/ollama.env").write_bytes(b"OLLAMA_HOST=0.0.0.0\nX=\xff\n")
    assert "invalid UTF-8" in only(run(root), "env-file-unreadable").message


# ------------------------------------- numbers that allocated without bound (issue 7, item 9)


@pytest.mark.parametrize(
    ("dropin", "fid"),
    [
        ("[Service]\nAllowedCPUs=0-99999999999\n", "invalid-value"),
        ("[Service]\nAllowedCPUs=0-8192\n", "invalid-value"),
        ("[Unit]\nStartLimitBurst=99999999999\n", "invalid-value"),
        ("[Unit]\nStartLimitBurst=\u0663\n", "invalid-value"),
        ("[Unit]\nStartLimitBurst=4294967295\n", "restart-loop-forever"),
        (
            "[Unit]\nStartLimitBurst=4294967295\n[Service]\nRestartSteps=4294967295\n"
            "RestartMaxDelaySec=1h\n",
            "restart-loop-forever",
        ),
    ],
    ids=["cpus-huge", "cpus-8192", "burst-huge", "burst-unicode", "burst-uint-max", "steps"],
)
def test_huge_numbers_in_a_unit_cost_nothing(tmp_path: Path, dropin: str, fid: str) -> None:
    with within(20):
        found = check(tmp_path, CLEAN, dropin, facts=host("cpu-small"), version=257)
    assert fid in ids(found)


@pytest.mark.parametrize(
    ("line", "fid"),
    [
        ("CUDA_VISIBLE_DEVICES=\u00b2", None),  # isdigit() but not a number for int()
        ("CUDA_VISIBLE_DEVICES=" + "9" * 5000, "gpus-not-on-host"),
        ("GOMAXPROCS=1_000", "env-not-a-number"),  # int() reads 1000, Go does not
        ("GOMAXPROCS=\u0661\u0666", "env-not-a-number"),
        ("OLLAMA_NUM_PARALLEL=\u0663", "env-not-a-number"),
        ("OLLAMA_NUM_PARALLEL=" + "9" * 5000, "env-not-a-number"),
    ],
    ids=["superscript", "5000-digits", "underscore", "arabic", "arabic-parallel", "huge"],
)
def test_numbers_in_the_environment_are_read_as_go_reads_them(
    tmp_path: Path, line: str, fid: str | None
) -> None:
    dropin = (
        "[Service]\n"
        + unit.render(
            [("Service", [("Environment", unit.quote_environment(*line.split("=", 1)))])]
        ).split("\n", 1)[1]
    )
    found = check(tmp_path, CLEAN, dropin, facts=host("nvidia-1x24g"))
    if fid is not None:
        assert fid in ids(found)
