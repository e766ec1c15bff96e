"""The log classifiers and the summary, over real Ollama and systemd journal lines.

Fixtures: tests/fixtures/journal/ollama/*.log, each naming the issue it was
copied from (see the README there).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollama_ops.errors import OpsError
from ollama_ops.logs import records, summary
from ollama_ops.logs.classify import Event, Kind, classify, fix_for, slog_attr, slog_message
from ollama_ops.logs.records import Record

JOURNAL = Path(__file__).parent / "fixtures" / "journal" / "ollama"


def events(name: str) -> list[Event]:
    found = records.parse_any((JOURNAL / name).read_text(), name, 2025)
    assert found, name
    return [e for r in found for e in classify(r)]


def kinds(name: str) -> list[Kind]:
    return [e.kind for e in events(name)]


def summarize(name: str, slow: float = 30.0) -> summary.Summary:
    found = records.parse_any((JOURNAL / name).read_text(), name, 2025)
    evs = [e for r in found for e in classify(r)]
    return summary.summarize(
        evs, unit="ollama.service", since="x", namespace=None, records=len(found),
        truncated=False, slow_load_s=slow,
    )  # fmt: skip


# ---------------------------------------------------------------- systemd's lines


def test_crash_exit_and_restart_with_its_reason() -> None:
    assert kinds("crash-exit-2-restart-9170.log") == [
        Kind.EXIT, Kind.FAILED, Kind.RESTART, Kind.STOP, Kind.START,
    ]  # fmt: skip
    s = summarize("crash-exit-2-restart-9170.log")
    (restart,) = s.restarts
    assert restart.text == "restart #1"
    assert restart.reason == "failed: result exit-code"  # the unit's result wins over the exit line


def test_both_started_wordings_count() -> None:
    assert kinds("restart-systemd252-9415.log") == [Kind.STOP, Kind.START]  # "unit - description"
    assert Kind.START in kinds("read-only-models-nixpkgs-304531.log")  # a NixOS description


def test_oom_kill_lines_merge_into_one() -> None:
    lines = [
        "ollama.service: A process of this unit has been killed by the OOM killer.",
        "ollama.service: Main process exited, code=killed, status=9/KILL",
        "ollama.service: Failed with result 'oom-kill'.",
        "ollama.service: Scheduled restart job, restart counter is at 2.",
    ]
    evs = [e for i, m in enumerate(lines) for e in classify(Record(100.0 + i, m, "systemd", 1))]
    s = summary.summarize(
        evs, unit="u", since="x", namespace=None, records=4, truncated=False, slow_load_s=30
    )
    assert s.counts["oom-kill"] == 1
    assert s.restarts[0].reason.startswith("oom-kill")


def test_hang_stop_timeout() -> None:
    (e,) = classify(
        Record(1.0, "ollama.service: State 'stop-sigterm' timed out. Killing.", "systemd", 1)
    )
    assert e.kind is Kind.HANG and "TimeoutStopSec" in e.text


# ---------------------------------------------------------------- Ollama's lines


def test_permission_and_read_only_errors_give_the_fix() -> None:
    (e,) = [e for e in events("permission-denied-home-9148.log") if e.kind is Kind.ACCESS]
    assert e.fix == "ReadWritePaths=/var/lib/ollama"  # mkdir: the directory it wants
    (e,) = [e for e in events("read-only-home-7471.log") if e.kind is Kind.ACCESS]
    assert (e.text, e.fix) == (
        "mkdir /usr/share/ollama: read-only file system",
        "ReadWritePaths=/usr/share/ollama",
    )
    (e,) = [e for e in events("read-only-models-nixpkgs-304531.log") if e.kind is Kind.ACCESS]
    assert e.fix == "ReadWritePaths=/mnt/nvme/ollama/models"  # the store, not its blobs/
    (e,) = [e for e in events("permission-restart-loop-4732.log") if e.kind is Kind.ACCESS]
    assert e.fix == "ReadWritePaths=/home/myuser"  # the home, not .ollama


@pytest.mark.parametrize(
    ("op", "path", "fix"),
    [
        ("open", "/usr/share/ollama/.ollama/id_ed25519", "ReadWritePaths=/usr/share/ollama"),
        ("mkdir", "/srv/models/blobs", "ReadWritePaths=/srv/models"),
        ("create", "/srv/models/manifests/registry.ollama.ai/x", "ReadWritePaths=/srv/models"),
        ("open", "/srv/cache/x.bin", "ReadWritePaths=/srv/cache"),
    ],
)
def test_fix_for(op: str, path: str, fix: str) -> None:
    assert fix_for(op, path) == fix


def test_model_loads_both_wordings_and_slow_ones() -> None:
    s = summarize("slow-loads-14028.log", slow=30.0)
    assert [load.seconds for load in s.loads] == [29.96, 30.22, 30.46, 29.96]
    assert [load.slow for load in s.loads] == [False, True, True, False]
    assert s.counts["slow-load"] == 2
    new = summarize("llama-server-wording-source.log")
    (load,) = new.loads
    assert (load.seconds, load.model) == (2.01, "sha256-6a0746a1ec1a")
    (model,) = [e for e in events("model-load-9857.log") if e.kind is Kind.MODEL_START]
    assert model.path == "sha256-afa0ea2ef463"  # journalctl cut the line; the blob is still read


def test_llama_server_wording_failures() -> None:
    got = kinds("llama-server-wording-source.log")
    assert got.count(Kind.LOAD_FAILED) == 2  # client gave up; load timed out
    assert Kind.RUNTIME_OOM in got and Kind.CRASH in got and Kind.BUSY in got
    s = summarize("llama-server-wording-source.log")
    assert s.counts["slow-load"] == 1  # the timed-out load


def test_runner_killed_and_500() -> None:
    assert kinds("runner-killed-load-failed-9685.log") == [
        Kind.LOAD_FAILED, Kind.CRASH, Kind.HTTP_5XX,
    ]  # fmt: skip


def test_gpu_and_cpu_starts() -> None:
    assert kinds("start-cuda-4636.log") == [Kind.LISTENING, Kind.GPU, Kind.GPU]
    assert kinds("vulkan-start-0.32.9-18123.log") == [Kind.GPU]
    assert kinds("cpu-fallback-9496.log") == [Kind.CPU_ONLY, Kind.CPU_ONLY]  # cpu-fallback
    assert kinds("cudart-999-after-sleep-6647.log") == [Kind.GPU_ERROR, Kind.GPU_ERROR]
    gpu = events("cudart-999-after-sleep-6647.log")[0]
    assert gpu.text == "Unable to load cudart"


def test_offload_lines_tell_a_cpu_fallback() -> None:
    real = (
        "time=2025-06-05T12:36:11.458Z level=INFO source=server.go:168 msg=offload library=cpu "
        'layers.requested=-1 layers.model=49 layers.offload=0 layers.split=""'
    )  # https://github.com/atineiatte/deep-research-at-home/issues/14 (emmahicks, 2025-06-05)
    (e,) = classify(Record(0, real, "ollama"))
    assert e.kind is Kind.CPU_ONLY and "no layer on a GPU" in e.text
    partial = "msg=offload library=cuda layers.requested=-1 layers.model=49 layers.offload=4"
    (e,) = classify(Record(0, partial, "ollama"))  # #10739: 4 of 49 layers fit in VRAM
    assert e.text == "model partly on the CPU: 4 of 49 layers on the GPU"
    full = 'msg="offload to cuda" layers.requested=-1 layers.model=33 layers.offload=33'
    assert classify(Record(0, full, "ollama")) == []


def test_a_slow_probe_is_a_hang() -> None:
    slow = '[GIN] 2025/01/02 - 15:04:09 | 200 |          4.1s |       127.0.0.1 | GET      "/"'
    (e,) = classify(Record(0, slow, "ollama"))
    assert e.kind is Kind.HANG and e.text == "GET / took 4.1s: the server was not answering"
    chat = (
        '[GIN] 2025/01/02 - 15:04:09 | 200 |         2m48s |       127.0.0.1 | POST     "/api/chat"'
    )
    assert classify(Record(0, chat, "ollama"))[0].kind is Kind.REQUEST  # generation may be long


def test_an_abandoned_generation_is_a_hang() -> None:
    gone = '[GIN] 2026/12/01 - 03:01:46 | 499 |  3.014831508s |       127.0.0.1 | POST    "/api/generate"'
    (e,) = classify(Record(0, gone, "ollama"))
    assert (e.kind, e.status) == (Kind.HANG, 499)
    assert "abandoned by its client after 3.014831508s" in e.text
    line = 'time=t level=INFO source=server.go:1046 msg="aborting completion request due to client closing the connection"'
    assert [e.kind for e in classify(Record(0, line, "ollama"))] == [Kind.HANG]


def test_probe_and_busy_access_lines() -> None:
    ok = '[GIN] 2025/01/02 - 15:04:05 | 200 |    1.234567ms |       127.0.0.1 | HEAD     "/"'
    busy = (
        '[GIN] 2025/01/02 - 15:04:05 | 503 |      12.3µs |       127.0.0.1 | POST     "/api/chat"'
    )
    assert [e.kind for e in classify(Record(0, ok, "ollama"))] == [Kind.REQUEST]
    (e,) = classify(Record(0, busy, "ollama"))
    assert (e.kind, e.status) == (Kind.BUSY, 503)


def test_slog_parsing() -> None:
    line = 'time=x level=INFO source=a.go:1 msg="inference compute" library=cuda name="A B \\"c\\""'
    assert slog_message(line) == "inference compute"
    assert slog_attr(line, "library") == "cuda"
    assert slog_attr(line, "name") == 'A B "c"'
    assert slog_message("2024/05/27 12:32:31 routes.go:1028: INFO x") == (
        "2024/05/27 12:32:31 routes.go:1028: INFO x"
    )


@given(st.text(max_size=300))
def test_classifiers_never_crash(line: str) -> None:
    for ident in ("systemd", "ollama"):
        for e in classify(Record(0.0, line, ident, 1 if ident == "systemd" else 7)):
            assert isinstance(e.kind, Kind)


# ---------------------------------------------------------------- inputs and output


def test_json_lines_input_and_junk() -> None:
    line = json.dumps(
        {
            "__REALTIME_TIMESTAMP": "1724234400000000",
            "MESSAGE": "ollama.service: Failed with result 'oom-kill'.",
            "SYSLOG_IDENTIFIER": "systemd",
            "_PID": "1",
            "UNIT": "ollama.service",
            "UNIT_RESULT": "oom-kill",
        }
    )
    (r,) = records.parse_any(line + "\n", "f", 2025)
    assert (r.time, r.unit, r.result, r.from_systemd) == (
        1724234400.0,
        "ollama.service",
        "oom-kill",
        True,
    )
    binary = json.dumps({"MESSAGE": [104, 105], "_PID": "7"})
    assert records.parse_any(binary, "f", 2025)[0].message == "hi"
    with pytest.raises(OpsError) as err:
        records.parse_any(line + "\n{not json\n", "f.json", 2025)
    assert "line 2 is not journal JSON" in str(err.value) and "\n" not in str(err.value)


def test_text_and_json_renderings_fit() -> None:
    s = summarize("llama-server-wording-source.log")
    text = summary.render_text(s)
    assert text.startswith("ollama.service since x: 0 starts, 0 stops, 0 restarts")
    assert all(len(line) <= summary.WIDTH for line in text.splitlines()), text
    data = json.loads(summary.render_json(s))
    assert data["counts"]["busy"] == 1 and data["loads"][0]["model"] == "sha256-6a0746a1ec1a"
    s2 = summarize("permission-denied-home-9148.log")
    assert "ReadWritePaths=/var/lib/ollama" in summary.render_text(s2)
    assert json.loads(summary.render_json(s2))["fixes"][0]["directive"] == (
        "ReadWritePaths=/var/lib/ollama"
    )
