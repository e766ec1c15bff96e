"""`ollama-ops logs` and the log settings of the plan, in-process with fakes at the seams."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from ollama_ops.apply import activate
from ollama_ops.cli.common import Env
from ollama_ops.cli.main import main
from ollama_ops.errors import ExitStatus
from ollama_ops.host import proc
from ollama_ops.logs import plan as logs_plan
from ollama_ops.model import config
from ollama_ops.model.deployment import Section
from ollama_ops.plan.compose import build
from ollama_ops.render.systemd import render
from ollama_ops.runtime import Runtime
from tests.helpers import FIXTURES, FakeSystemctl, fake_runtime, host

JOURNAL = FIXTURES / "journal" / "ollama"


class FakeJournalctl:
    """A Runner answering journalctl with JSON lines (or an error), recording the argv."""

    def __init__(self, lines: list[dict[str, str]], *, rc: int = 0, stderr: str = "") -> None:
        self.lines, self.rc, self.stderr = lines, rc, stderr
        self.argv: list[tuple[str, ...]] = []

    def __call__(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = 60.0,
        env: Mapping[str, str] | None = None,
        input_text: str | None = None,
    ) -> proc.Completed:
        self.argv.append(tuple(argv))
        out = "".join(json.dumps(line) + "\n" for line in self.lines)
        return proc.Completed(tuple(argv), self.rc, out if self.rc == 0 else "", self.stderr)


def record(message: str, t: int, ident: str = "ollama", pid: str = "400") -> dict[str, str]:
    return {
        "__REALTIME_TIMESTAMP": str(t * 1_000_000),
        "MESSAGE": message,
        "SYSLOG_IDENTIFIER": ident,
        "_PID": pid,
    }


def cli(rt: Runtime, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Env(stdout=out, stderr=err, make_runtime=lambda root: rt))
    return code, out.getvalue(), err.getvalue()


def live(root: Path, journal: FakeJournalctl, props: dict[str, str] | None = None) -> Runtime:
    return dataclasses.replace(fake_runtime(root, FakeSystemctl(props or {})), run=journal)


# ---------------------------------------------------------------- the reader


def test_logs_reads_the_namespace_it_finds(root: Path) -> None:
    journal = FakeJournalctl(
        [
            record("Started ollama.service - Ollama Service.", 100, "systemd", "1"),
            record('time=t level=INFO source=s msg="llama runner started in 61.50 seconds"', 160),
            record("ollama.service: A process of this unit has been killed by the OOM killer.", 200,
                   "systemd", "1"),
            record("ollama.service: Failed with result 'oom-kill'.", 200, "systemd", "1"),
            record("ollama.service: Scheduled restart job, restart counter is at 1.", 205,
                   "systemd", "1"),
        ]
    )  # fmt: skip
    rt = live(root, journal, {"LogNamespace": "ollama"})
    code, out, err = cli(rt, "logs", "--since", "1 hour ago")
    assert code == 0, err
    argv = journal.argv[0]
    assert "--namespace=+ollama" in argv and argv[argv.index("-u") :][:2] == (
        "-u",
        "ollama.service",
    )
    assert argv[argv.index("--since") :][:2] == ("--since", "1 hour ago")
    assert out.startswith(
        "ollama.service since 1 hour ago (journal namespace ollama): 1 start, 0 stops, 1 restart, "
        "1 OOM kill"
    )
    assert "restart #1: oom-kill" in out and "61.50 s  ?  SLOW" in out
    code, out, _ = cli(rt, "logs", "--json")
    data = json.loads(out)
    assert data["namespace"] == "ollama" and data["counts"]["oom-kill"] == 1
    assert data["restarts"][0]["reason"].startswith("oom-kill")


def test_namespace_from_the_unit_files_under_root(root: Path) -> None:
    dropin = root / "etc/systemd/system/ollama.service.d/50-ollama-ops.conf"
    dropin.parent.mkdir(parents=True)
    dropin.write_text("[Service]\nLogNamespace=llm\n")
    journal = FakeJournalctl([])
    rt = dataclasses.replace(fake_runtime(root), run=journal)
    code, out, _ = cli(rt, "logs", "--root", str(root))
    assert code == 0
    assert "--namespace=+llm" in journal.argv[0] and f"--root={root}" in journal.argv[0]
    assert "No journal records for this unit" in out


@pytest.mark.parametrize(
    ("rc", "stderr", "needle"),
    [
        (0, "Hint: You are currently not seeing messages from other users and the system.\n",
         "run as root or add the user to the systemd-journal group"),
        (1, "Failed to parse timestamp: yesterdayish\n", "Failed to parse timestamp: yesterdayish"),
    ],
)  # fmt: skip
def test_unreadable_journal_is_one_line(root: Path, rc: int, stderr: str, needle: str) -> None:
    rt = live(root, FakeJournalctl([record("x", 1)], rc=rc, stderr=stderr))
    code, out, err = cli(rt, "logs", "--since", "yesterdayish")
    assert code == ExitStatus.COMMAND_FAILED
    assert needle in err and err.count("\n") == 1 and out == ""


def test_input_file_of_real_lines(root: Path) -> None:
    rt = fake_runtime(root)
    path = JOURNAL / "permission-restart-loop-4732.log"
    code, out, err = cli(rt, "logs", "--input", str(path))
    assert code == 0, err
    flat = " ".join(out.split())
    assert "1 restart," in flat and "ReadWritePaths=/home/myuser" in flat
    code, _, err = cli(rt, "logs", "--input", str(root / "missing.log"))
    assert code == ExitStatus.BAD_INPUT and err.count("\n") == 1


# ---------------------------------------------------------------- the plan


def _logs(cfg_text: str, version: int) -> tuple[dict[str, str | None], dict[str, str], list[str]]:
    facts = dataclasses.replace(host("nvidia-1x24g"), systemd_version=version)
    deployment = build(facts, config.loads(cfg_text))
    values = {
        s.key: s.value
        for s in deployment.settings
        if s.section is Section.SERVICE and "Log" in s.key
    }
    return values, render(deployment), list(deployment.notes)


def test_default_log_settings_are_version_gated() -> None:
    values, files, _ = _logs("", 257)
    assert values["LogRateLimitIntervalSec"] == "30s" and values["LogRateLimitBurst"] == "5000"
    assert values["LogFilterPatterns"] == "~" + logs_plan.PROBE_PATTERN
    dropin = files["/etc/systemd/system/ollama.service.d/50-ollama-ops.conf"]
    assert "LogFilterPatterns=~^\\[GIN\\] " in dropin and "LogNamespace" not in dropin
    values, files, _ = _logs("", 252)
    assert values["LogFilterPatterns"] is None  # 253+
    assert (
        "LogFilterPatterns" not in files["/etc/systemd/system/ollama.service.d/50-ollama-ops.conf"]
    )
    values, _, _ = _logs("", 239)
    assert values["LogRateLimitIntervalSec"] is None  # 240+


def test_namespace_option_writes_its_journald_file_and_says_so() -> None:
    values, files, notes = _logs('[logs]\nnamespace = "ollama"\nnamespace_max_use = "1G"\n', 247)
    assert values["LogNamespace"] == "ollama"
    conf = files["/etc/systemd/journald@ollama.conf"]
    assert "[Journal]\nSystemMaxUse=1G\nMaxRetentionSec=14day\n" in conf
    assert any("`journalctl -u ollama` then needs `--namespace=ollama`" in n for n in notes)
    _, files, _ = _logs("[logs]\nglobal_limits = true\n", 252)
    assert (
        "SystemMaxUse=2G\nSystemMaxFileSize=100M\nMaxRetentionSec=7day"
        in files[logs_plan.GLOBAL_DROPIN]
    )


def test_probe_pattern_drops_only_successful_probes() -> None:
    import re

    pattern = re.compile(logs_plan.PROBE_PATTERN)  # Python's re reads \x22 as PCRE2 does
    probe = '[GIN] 2025/01/02 - 15:04:05 | 200 |    1.234567ms |       127.0.0.1 | HEAD     "/"'
    version = '[GIN] 2025/01/02 - 15:04:05 | 200 |      52.1µs |       127.0.0.1 | GET      "/api/version"'
    failed = probe.replace("| 200 |", "| 500 |")
    chat = (
        '[GIN] 2025/01/02 - 15:04:05 | 200 |       5.05s |       127.0.0.1 | POST     "/api/chat"'
    )
    tags = (
        '[GIN] 2025/01/02 - 15:04:05 | 200 |      52.1µs |       127.0.0.1 | GET      "/api/tags"'
    )
    slow = probe.replace("   1.234567ms", "          4.1s")  # a hang's trace: kept
    assert pattern.search(probe) and pattern.search(version)
    assert not any(pattern.search(x) for x in (failed, chat, tags, slow))


def test_apply_restarts_the_journald_that_reads_a_changed_file(root: Path) -> None:
    (root / "etc/ollama-ops").mkdir(parents=True)
    (root / "etc/ollama-ops/ollama-ops.toml").write_text('[logs]\nnamespace = "ollama"\n')
    cfg = config.load(root / "etc/ollama-ops/ollama-ops.toml")
    planned = build(host("nvidia-1x24g"), cfg)
    systemctl = FakeSystemctl(props=activate.expected_properties(planned))
    rt = fake_runtime(root, systemctl)
    code, _, err = cli(rt, "apply", "--facts", str(FIXTURES / "hosts" / "nvidia-1x24g.json"))
    assert code == 0, err
    assert (root / "etc/systemd/journald@ollama.conf").is_file()
    restarts = [c for c in systemctl.calls if c[0] == "restart"]
    assert restarts[0] == ("restart", "systemd-journald@ollama.service")
    assert restarts[-1] == ("restart", "ollama.service")
