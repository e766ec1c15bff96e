"""The probes' edges: bounded HTTP against misbehaving servers, parsers of what Ollama,
systemd, the cgroup, NVML/nvidia-smi and the journal say, sd_notify and journald records."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ollama_ops.errors import ConfigError
from ollama_ops.health import api, journal, logscan, notify
from ollama_ops.health.gpu import GpuReader, parse_smi
from ollama_ops.health.host import parse_events, read_memory, unit_state
from ollama_ops.health.http import Http, check_url
from ollama_ops.health.logscan import Kind, classify
from ollama_ops.health.model import DeepOutcome, Failure
from ollama_ops.host import proc
from ollama_ops.runtime import Runtime

from .health_helpers import RecordingRunner

# ---------------------------------------------------------------- misbehaving servers


@contextmanager
def raw_server(handler: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server on 127.0.0.1 whose every connection is given to ``handler``."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conns.append(conn)
            threading.Thread(target=_guard, args=(handler, conn), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        listener.close()
        for conn in conns:
            conn.close()


def _guard(handler: Callable[[socket.socket], None], conn: socket.socket) -> None:
    try:
        conn.recv(65536)
        handler(conn)
    except OSError:
        pass


def never_closes(conn: socket.socket) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    for _ in range(400):
        line = b'{"response":"x","done":false}\n'
        conn.sendall(b"%x\r\n%s\r\n" % (len(line), line))
        time.sleep(0.01)


def silent(conn: socket.socket) -> None:
    time.sleep(5)


def garbage(conn: socket.socket) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    conn.close()


def nginx(conn: socket.socket) -> None:
    body = b"<html>Welcome to nginx!</html>"
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_a_stream_that_never_closes_ends_at_the_deadline() -> None:
    with raw_server(never_closes) as url:
        t0 = time.monotonic()
        reply = Http(url).request("POST", "/api/generate", deadline=0.3, body={})
        spent = time.monotonic() - t0
    assert not reply.ok and reply.failure is Failure.TIMEOUT
    assert "still streaming" in reply.detail
    assert spent < 3.0  # bounded: the 4 s stream was cut, not read to its end


def test_a_silent_server_is_a_timeout() -> None:
    with raw_server(silent) as url:
        reply = api.liveness(Http(url), 0.3)
    assert reply.failure is Failure.TIMEOUT


def test_a_server_that_is_not_http_is_not_ollama() -> None:
    with raw_server(garbage) as url:
        reply = api.liveness(Http(url), 2.0)
    assert reply.failure is Failure.NOT_OLLAMA


def test_an_http_server_that_is_not_ollama_is_named() -> None:
    with raw_server(nginx) as url:
        reply = api.liveness(Http(url), 2.0)
    assert reply.failure is Failure.NOT_OLLAMA and "Welcome to nginx" in reply.detail


def test_nothing_listening_is_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reply = api.liveness(Http(f"http://127.0.0.1:{port}"), 1.0)
    assert reply.failure is Failure.REFUSED


def test_an_oversized_answer_is_cut() -> None:
    def huge(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200000)

    with raw_server(huge) as url:
        reply = api.liveness(Http(url), 2.0)
    assert reply.failure is Failure.NOT_OLLAMA and "larger than" in reply.detail


@pytest.mark.parametrize(
    "url", ["ftp://x", "127.0.0.1:11434", "http://", "http://h:99999", "http://h/?a=1"]
)
def test_bad_urls_are_one_line_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_url(url)
    assert "\n" not in str(err.value)


def test_good_urls_lose_their_slash() -> None:
    assert check_url("http://[::1]:11434/") == "http://[::1]:11434"


# ---------------------------------------------------------------- Ollama's answers


def test_ps_parses_go_times_and_sizes() -> None:
    text = json.dumps(
        {
            "models": [
                {
                    "name": "a:1b",
                    "size": 10,
                    "size_vram": 4,
                    "expires_at": "2026-08-21T10:00:30.123456789+02:00",
                },
                {"model": "b", "size": 5, "size_vram": 5, "expires_at": "0001-01-01T00:00:00Z"},
            ]
        }
    )
    now = api.parse_rfc3339("2026-08-21T08:00:00Z")
    assert now is not None
    a, b = api.parse_ps(text, now)
    assert a.name == "a:1b" and a.expires_in_s == pytest.approx(30.123456789)
    assert a.on_gpu_percent == 40.0
    assert b.name == "b" and b.expires_in_s is None  # Go's zero time: unknown, not long past


@pytest.mark.parametrize("text", ["[]", '{"models": 3}', '{"models": [{"size": 1}]}', "nope"])
def test_ps_that_is_not_ollamas_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        api.parse_ps(text, 0.0)


def test_rfc3339_variants() -> None:
    assert api.parse_rfc3339("1970-01-01T00:00:01Z") == 1.0
    assert api.parse_rfc3339("1970-01-01T01:00:01+01:00") == 1.0
    assert api.parse_rfc3339("yesterday") is None


# ---------------------------------------------------------------- log lines

GIN = '[GIN] 2026/08/21 - 10:00:00 | {status} |  5.05s | 127.0.0.1 | POST     "{path}"'


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (GIN.format(status=200, path="/api/chat"), Kind.COMPLETION),
        (GIN.format(status=200, path="/v1/chat/completions"), Kind.COMPLETION),
        (GIN.format(status=503, path="/api/generate"), Kind.REJECTED),
        (GIN.format(status=500, path="/api/generate"), Kind.SERVER_ERROR),
        (
            'time=2026-08-21T10:00:00Z level=INFO source=server.go:1273 msg="waiting for llama runner to start responding"',
            Kind.LOAD_START,
        ),
        ('level=INFO msg="waiting for llama-server to start responding"', Kind.LOAD_START),
        ('level=INFO msg="llama runner started in 2.01 seconds"', Kind.LOAD_DONE),
        ('level=INFO msg="llama-server started in 2.01 seconds"', Kind.LOAD_DONE),
        (
            'level=ERROR msg="error loading llama server" error="timed out waiting for llama runner to start - progress 0.00 - "',
            Kind.LOAD_FAILED,
        ),
        (
            'level=ERROR msg="error loading llama server" error="llama runner process has terminated: CUDA error: unknown error"',
            Kind.GPU_ERROR,
        ),
        ('level=WARN msg="cudart init failure: 999"', Kind.GPU_ERROR),
        ('level=WARN msg="runtime OOM detected; expiring loaded models"', Kind.OOM),
        ("ollama.service: Failed with result 'oom-kill'.", Kind.OOM),
        (
            'msg="inference compute" id=GPU-1 library=cuda variant=v12 total="23.6 GiB"',
            Kind.LIBRARY,
        ),
        ('msg="Listening on 127.0.0.1:11434 (version 0.33.0)"', Kind.START),
        ("Suppressed 4242 messages from ollama.service", Kind.SUPPRESSED),
    ],
)
def test_log_lines_are_classified(line: str, kind: Kind) -> None:
    found = classify(line)
    assert found is not None and found[0] is kind


@pytest.mark.parametrize(
    "line",
    [
        GIN.format(status=200, path="/"),
        GIN.format(status=200, path="/api/ps"),
        GIN.format(status=404, path="/api/chat"),
        "hello",
    ],
)
def test_probe_and_irrelevant_lines_are_no_evidence(line: str) -> None:
    assert classify(line) is None


def test_tracker_counts_a_window_and_follows_loads() -> None:
    t = logscan.Tracker()
    for at, kind in [
        (1.0, Kind.LOAD_START),
        (2.0, Kind.COMPLETION),
        (50.0, Kind.REJECTED),
        (61.0, Kind.COMPLETION),
    ]:
        t.add(logscan.Event(at, kind))
    p = t.progress(now=70.0, window=30.0)
    assert p.completions == 1 and p.rejected == 1
    assert p.last_completion_age_s == pytest.approx(9.0)
    assert p.last_rejection_age_s == pytest.approx(20.0)
    assert p.loading_for_s == pytest.approx(69.0)
    t.add(logscan.Event(71.0, Kind.LOAD_DONE))
    assert t.progress(72.0, 30.0).loading_for_s is None
    assert t.totals[Kind.COMPLETION] == 2


def test_lines_journald_dropped_make_the_evidence_incomplete() -> None:
    t = logscan.Tracker()
    t.add(logscan.Event(10.0, Kind.SUPPRESSED, "4242"))
    assert not t.progress(20.0, 60.0).readable
    assert t.progress(80.0, 60.0).readable


def test_a_new_server_process_ends_a_load_and_the_old_ones_errors() -> None:
    events = [
        logscan.Event(0.5, Kind.GPU_ERROR, "CUDA error"),
        logscan.Event(0.6, Kind.OOM),
        logscan.Event(1.0, Kind.LOAD_START),
        logscan.Event(2.0, Kind.START),
    ]
    p = logscan.summarize(events, 3.0, 60.0)
    assert p.loading_for_s is None and p.gpu_errors == 0
    assert p.oom_events == 1  # still worth a warning after the restart


def test_journal_entries_use_the_monotonic_clock_and_skip_other_boots() -> None:
    line = json.dumps({"MESSAGE": "hi", "__MONOTONIC_TIMESTAMP": "2500000", "_BOOT_ID": "b1"})
    assert journal.parse_entry(line, "b1") == (2.5, "hi")
    assert journal.parse_entry(line, "b2") is None
    raw = json.dumps({"MESSAGE": list(b"caf\xc3\xa9 \xff"), "__MONOTONIC_TIMESTAMP": "1"})
    entry = journal.parse_entry(raw, None)
    assert entry is not None and entry[1].startswith("café")
    assert journal.parse_entry("not json", None) is None


def _completed(stdout: str, stderr: str = "", code: int = 0) -> proc.Completed:
    return proc.Completed(("journalctl",), code, stdout, stderr)


def test_an_unreadable_journal_is_said_so(tmp_path: Path) -> None:
    denied = RecordingRunner(
        {
            "journalctl": _completed(
                "", "No journal files were opened due to insufficient permissions."
            )
        }
    )
    rt = Runtime(root=tmp_path, run=denied)
    p = journal.recent(rt, "ollama.service", 60, 60)
    assert not p.readable and "insufficient permissions" in p.detail


def test_the_follower_reads_what_journalctl_prints(tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "MESSAGE": GIN.format(status=200, path="/api/chat"),
                "__MONOTONIC_TIMESTAMP": str(int(time.monotonic() * 1e6)),
            }
        ),
    ]
    script = tmp_path / "fake-journalctl"
    script.write_text("#!/bin/sh\ncat <<'EOF'\n" + "\n".join(lines) + "\nEOF\nsleep 30\n")
    script.chmod(0o755)
    follower = journal.JournalFollower("x.service", argv=[str(script)]).start()
    try:
        deadline = time.monotonic() + 10
        while follower.progress(time.monotonic(), 60).completions < 1:
            assert time.monotonic() < deadline, "the follower read nothing"
            time.sleep(0.05)
    finally:
        follower.stop()
    assert follower.progress(time.monotonic(), 60).readable


def test_a_follower_that_hears_nothing_after_an_answer_says_so(tmp_path: Path) -> None:
    script = tmp_path / "fake-journalctl"
    script.write_text("#!/bin/sh\nsleep 30\n")
    script.chmod(0o755)
    follower = journal.JournalFollower("x.service", argv=[str(script)], silent_after=0.3).start()
    try:
        time.sleep(0.6)  # a silent server (a hung one) is no reason to doubt the journal
        assert follower.progress(time.monotonic(), 60).readable
        follower.expect(time.monotonic())  # but Ollama answered us: its access line is due
        deadline = time.monotonic() + 10
        while follower.progress(time.monotonic(), 60).readable:
            assert time.monotonic() < deadline, "the silence was not noticed"
            time.sleep(0.05)
    finally:
        follower.stop()
    assert "after Ollama answered" in follower.progress(time.monotonic(), 60).detail


def test_the_follower_says_when_journalctl_complains(tmp_path: Path) -> None:
    script = tmp_path / "fake-journalctl"
    script.write_text("#!/bin/sh\necho 'Failed to open journal: Permission denied'\nsleep 30\n")
    script.chmod(0o755)
    follower = journal.JournalFollower("x.service", argv=[str(script)]).start()
    try:
        deadline = time.monotonic() + 10
        while follower.progress(time.monotonic(), 60).readable:
            assert time.monotonic() < deadline, "the complaint was not noticed"
            time.sleep(0.05)
    finally:
        follower.stop()
    assert "Permission denied" in follower.progress(time.monotonic(), 60).detail


# ---------------------------------------------------------------- systemd and the cgroup


def test_unit_state_from_systemctl_show() -> None:
    props = {
        "LoadState": "loaded",
        "ActiveState": "active",
        "SubState": "running",
        "Result": "success",
        "NRestarts": "3",
        "MainPID": "77",
        "ActiveEnterTimestampMonotonic": "5000000",
        "ControlGroup": "/system.slice/ollama.service",
    }
    u = unit_state(props, now=65.0, restarts_before=1)
    assert u.available and u.active_for_s == 60.0 and u.restarts_recent == 2 and u.main_pid == 77
    assert not unit_state({"LoadState": "not-found"}, 0.0, None).available


def test_cgroup_memory_files(tmp_path: Path) -> None:
    group = tmp_path / "sys/fs/cgroup/system.slice/ollama.service"
    group.mkdir(parents=True)
    (group / "memory.current").write_text("1048576\n")
    (group / "memory.max").write_text("max\n")
    (group / "memory.events").write_text(
        "low 0\nhigh 2\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n"
    )
    mem = read_memory(Runtime(root=tmp_path), "/system.slice/ollama.service", oom_before=0)
    assert mem.available and mem.current == 1048576 and mem.limit is None and mem.peak is None
    assert mem.oom_kills == 1 and mem.oom_kills_recent == 1
    none = read_memory(Runtime(root=tmp_path), "/other.service")
    assert not none.available and "no memory controller" in none.detail
    hybrid = tmp_path / "sys/fs/cgroup/memory/other.service"
    hybrid.mkdir(parents=True)
    (hybrid / "memory.usage_in_bytes").write_text("4096\n")
    (hybrid / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (hybrid / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    v1 = read_memory(Runtime(root=tmp_path), "/other.service")
    assert v1.available and v1.current == 4096 and v1.limit is None and v1.oom_kills == 2
    assert parse_events("oom_kill 3\nbad line\n") == {"oom_kill": 3}


# ---------------------------------------------------------------- GPUs

SMI = "0, NVIDIA H100 80GB HBM3, 1024, 81559, 37, 45, 120.50\n1, NVIDIA H100, [N/A], 81559, [N/A], 40, [N/A]\n"


def test_nvidia_smi_output_in_base_units() -> None:
    a, b = parse_smi(SMI)
    assert a.memory_used == 1024 * 1024**2 and a.utilization_percent == 37.0 and a.power_w == 120.5
    assert b.memory_used is None and b.temperature_c == 40.0


def test_no_nvml_and_no_nvidia_smi_is_no_gpu_not_an_error() -> None:
    broken = SimpleNamespace(
        nvmlInit=lambda: (_ for _ in ()).throw(OSError("libnvidia-ml.so.1 not found"))
    )
    state = GpuReader(RecordingRunner(), nvml=broken, which=lambda name: None).read()
    assert state.source == "none" and "libnvidia-ml" in state.detail


def test_nvidia_smi_is_the_fallback() -> None:
    broken = SimpleNamespace(nvmlInit=lambda: (_ for _ in ()).throw(OSError("no NVML")))
    runner = RecordingRunner({"nvidia-smi": proc.Completed(("nvidia-smi",), 0, SMI, "")})
    state = GpuReader(runner, nvml=broken, which=lambda name: "/usr/bin/nvidia-smi").read()
    assert state.source == "nvidia-smi" and len(state.gpus) == 2
    failing = RecordingRunner(
        {"nvidia-smi": proc.Completed(("nvidia-smi",), 9, "", "NVIDIA-SMI has failed")}
    )
    bad = GpuReader(failing, nvml=broken, which=lambda name: "/usr/bin/nvidia-smi").read()
    assert bad.source == "error" and "NVIDIA-SMI has failed" in bad.detail


class FakeNvml:
    """pynvml's shape, for the reader; `lost` makes every call fail as a fallen-off GPU does."""

    def __init__(self) -> None:
        self.lost = False
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        if self.lost:
            raise RuntimeError("GPU is lost")
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=3 << 30, total=24 << 30)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=55)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 61

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        raise RuntimeError("Not Supported")

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"RTX 4090"


def test_nvml_readings_are_kept_initialised_and_a_lost_gpu_is_an_error() -> None:
    nvml = FakeNvml()
    reader = GpuReader(RecordingRunner(), nvml=nvml)
    first = reader.read()
    reader.read()
    assert nvml.inits == 1
    (gpu,) = first.gpus
    assert gpu.name == "RTX 4090" and gpu.memory_used == 3 << 30 and gpu.power_w is None
    nvml.lost = True
    assert reader.read().source == "error"


# ---------------------------------------------------------------- sd_notify and journald


def test_sd_notify_sends_to_the_socket_systemd_names(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert notify.sd_notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert sock.recv(100) == b"READY=1"
    assert not notify.sd_notify("READY=1", {})
    assert notify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert notify.watchdog_interval({}) is None


def test_journal_records_use_the_native_protocol(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        log = notify.Journal(socket_path=str(path))
        log.send("act: restart_unit: silent", 4, {"event": "act", "evidence": '{"a":\n1}'})
        data = sock.recv(65536)
        log.close()
    assert b"MESSAGE=act: restart_unit: silent\n" in data
    assert b"OLLAMA_OPS_EVENT=act\n" in data
    value = b'{"a":\n1}'
    assert b"OLLAMA_OPS_EVIDENCE\n" + struct.pack("<Q", len(value)) + value + b"\n" in data


def test_journal_records_fall_back_to_one_json_line(tmp_path: Path) -> None:
    import io

    out = io.StringIO()
    notify.Journal(socket_path=str(tmp_path / "none"), fallback=out).send("x", 6, {"event": "ok"})
    assert json.loads(out.getvalue())["OLLAMA_OPS_EVENT"] == "ok"


def test_generate_one_reads_ollamas_outcomes() -> None:
    def answer(status: int, body: bytes) -> Callable[[socket.socket], None]:
        def handler(conn: socket.socket) -> None:
            conn.sendall(
                b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)
            )

        return handler

    cases = [
        (200, b'{"done": true, "response": "ok"}', DeepOutcome.OK),
        (
            503,
            b'{"error": "server busy, please try again.  maximum pending requests exceeded"}',
            DeepOutcome.BUSY,
        ),
        (
            500,
            b'{"error": "llama runner process has terminated: CUDA error: unknown error"}',
            DeepOutcome.ERROR,
        ),
        (200, b'{"error": "an error was encountered while running the model"}', DeepOutcome.ERROR),
    ]
    for status, body, outcome in cases:
        with raw_server(answer(status, body)) as url:
            got, _, detail = api.generate_one(Http(url), "m", 2.0)
        assert got is outcome, (status, body, detail)
