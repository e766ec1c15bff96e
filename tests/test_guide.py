"""Every setting of the seed guide is accounted for by plan (issue 7, item 17).

The guide's files are kept verbatim under tests/fixtures (checked against the
reference copy when it is checked out next to the repository). The test walks
them, drop-in, template, instance files, units, journald.conf and scripts,
and fails on any directive or variable the plan neither writes (with its
value and reason) nor leaves out with a reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ollama_ops.model import config
from ollama_ops.plan import compose, explain, guide
from ollama_ops.unitfile import envfile
from ollama_ops.unitfile import syntax as unit
from tests.helpers import FIXTURES, HOSTS, host

REFERENCE = Path("/work/shared/reference/seed-guide.txt")
FILES = {"hardened.conf": FIXTURES / "audit" / "guide-hardened.conf"} | {
    p.name: p for p in sorted((FIXTURES / "guide").iterdir())
}


def walk(name: str, text: str) -> list[guide.GuideSetting]:
    """The settings a guide file makes, read with the parser of its kind."""
    if name.endswith(".sh"):
        # a script's settings: its top-level constants (NAME=literal), not computed values
        return [
            guide.GuideSetting(name, "script", m.group(1), m.group(2))
            for m in re.finditer(r"^([A-Z_]+)=([^$\n].*)$", text, re.M)
        ]
    if name.startswith("gpu"):
        return [guide.GuideSetting(name, "Environment", k, v) for _l, k, v in envfile.parse(text)]
    out = []
    for a in unit.parse(text, name).assignments:
        if a.key == "Environment":
            for k, v in unit.parse_environment([a.value]).items():
                out.append(guide.GuideSetting(name, "Environment", k, v))
        else:
            out.append(guide.GuideSetting(name, a.section, a.key, a.value))
    return out


WALKED = [s for name, path in FILES.items() for s in walk(name, path.read_text())]


def test_the_fixtures_are_the_guides_files_verbatim_and_all_of_them() -> None:
    if not REFERENCE.exists():
        pytest.skip("the seed guide is not checked out next to this repository")
    text = REFERENCE.read_text()
    heredocs = re.findall(r"sudo tee (\S+) <<'EOF'\n(.*?\n)EOF\n", text, re.S)
    seen = set()
    for path, body in heredocs:
        name = path.rsplit("/", 1)[1]
        name = "journald-ollama.conf" if "journald" in path else name
        assert FILES[name].read_text() == body, name
        seen.add(name)
    scripts = {"healthcheck.sh", "benchmark_ollama.sh"}
    for script in scripts:
        assert FILES[script].read_text() in text, script
    assert text.count("#!/bin/bash") == len(scripts)
    assert seen | scripts == set(FILES)


def test_the_table_holds_exactly_what_the_guide_sets() -> None:
    def key(s: guide.GuideSetting) -> tuple[str, str, str, str]:
        return (s.file, s.section, s.key, s.value)

    assert sorted(map(key, guide.GUIDE)) == sorted(map(key, WALKED))


@pytest.mark.parametrize("path", HOSTS, ids=lambda p: p.stem)
def test_every_setting_of_the_guide_is_accounted_for(path: Path) -> None:
    d = compose.build(host(path.stem), config.DeploymentConfig())
    for setting in WALKED:
        found = guide.account_one(d, setting)
        assert found is not None, f"{setting.file}: {setting.key}={setting.value} not accounted for"
        assert found.reason, setting
        if found.verdict is guide.Verdict.DIFFERS:
            assert found.ours, setting


@pytest.mark.parametrize(
    "key",
    ["IOSchedulingClass", "IOSchedulingPriority", "TimeoutStartSec", "LimitNPROC",
     "SyslogIdentifier", "SyslogFacility", "StandardOutput", "StandardError", "ReadOnlyPaths"],
)  # fmt: skip
def test_the_directives_the_plan_did_not_explain_are_now_in_its_worksheet(key: str) -> None:
    d = compose.build(host("nvidia-1x24g"), config.DeploymentConfig())
    (setting,) = [s for s in d.settings if s.key == key]
    assert setting.value is None and setting.reason.startswith("seed guide: ")
    assert f"{key} (not written)" in explain.worksheet(d)


def test_plan_prints_every_setting_of_the_guide() -> None:
    d = compose.build(host("cpu-small"), config.DeploymentConfig())
    text = "\n".join(explain.guide_section(d))
    for setting in WALKED:
        assert setting.key in text, setting
    assert all(len(line) <= 100 for line in text.splitlines())
