"""Egress opened only while pulling, and closed again however the pull ends (fakes, no HTTP).

``SystemdModel`` plays what systemd does with ``IPAddressDeny=`` for one unit,
as measured on systemd 252 (tests/systemd/test_pull_real.py checks it for
real): ``set-property --runtime`` changes the value at once and writes the
runtime control drop-in; ``daemon-reload`` reads the drop-ins again, so with
the control drop-in gone the persistent value comes back.
"""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from ollama_ops.errors import BusyError, CommandError, ConfigError
from ollama_ops.models import egress
from ollama_ops.models.api import Loaded
from ollama_ops.models.output import JsonSink, PlainSink
from ollama_ops.models.pull import pull_models
from ollama_ops.runtime import Runtime
from tests.helpers import FakeSystemctl, fake_runtime

UNIT = "ollama.service"
CLOSED = "::/0 0.0.0.0/0"
SUCCESS_LINES: list[object] = [
    {"status": "pulling manifest"},
    {"status": "pulling aaaaaaaaaaaa", "digest": "sha256:" + "a" * 64, "total": 100},
    {
        "status": "pulling aaaaaaaaaaaa",
        "digest": "sha256:" + "a" * 64,
        "total": 100,
        "completed": 100,
    },
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "success"},
]


class SystemdModel:
    """FakeSystemctl plus systemd's handling of IPAddressDeny= for one unit."""

    def __init__(
        self,
        root: Path,
        *,
        persistent: str = CLOSED,
        environment: str = "OLLAMA_HOST=127.0.0.1:11434 HOME=/usr/share/ollama",
    ) -> None:
        self.root = root
        self.persistent = persistent
        self.fake = FakeSystemctl(props={"IPAddressDeny": persistent, "Environment": environment})
        self.fake.on_call = self._on_call
        self.control = egress.Paths.of(root, UNIT).control
        self.on_call: Callable[[tuple[str, ...]], None] | None = None  # the test's own hook

    @property
    def deny(self) -> str:
        return self.fake.props["IPAddressDeny"]

    @property
    def open(self) -> bool:
        return egress.is_open(self.deny)

    def _from_files(self) -> str:
        if not self.control.exists():
            return self.persistent
        lines = [
            ln for ln in self.control.read_text().splitlines() if ln.startswith("IPAddressDeny")
        ]
        values: list[str] = []
        for line in lines:
            value = line.partition("=")[2]
            values = [*values, value] if value else []
        return " ".join(values)

    def _on_call(self, call: tuple[str, ...]) -> None:
        if self.on_call is not None:
            self.on_call(call)
        if call[0] == "set-property":
            value = call[-1].partition("=")[2]
            self.control.parent.mkdir(parents=True, exist_ok=True)
            body = "IPAddressDeny=\n" + (
                "IPAddressDeny=::/0\nIPAddressDeny=0.0.0.0/0\n" if value else ""
            )
            self.control.write_text("[Service]\n" + body)
        elif call[0] == "daemon-reload":
            self.fake.props["IPAddressDeny"] = self._from_files()

    def commands(self) -> list[tuple[str, ...]]:
        return [c for c in self.fake.calls if c[0] in ("set-property", "daemon-reload")]


class FakeApi:
    """ModelApi without HTTP: ``lines`` per pull, ``during`` runs at the 3rd line."""

    url = "http://127.0.0.1:11434"

    def __init__(self, lines: list[object] | None = None) -> None:
        self.lines = SUCCESS_LINES if lines is None else lines
        self.during: Callable[[], None] | None = None
        self.pulled: list[str] = []
        self.up = True

    def version(self) -> str:
        if not self.up:
            raise CommandError("GET /api/version on http://127.0.0.1:11434 failed (ConnectError)")
        return "0.33.0"

    def pull(self, model: str) -> Iterator[object]:
        self.pulled.append(model)
        for i, line in enumerate(self.lines):
            if i == 2 and self.during is not None:
                self.during()
            yield line

    def tags(self) -> list[str]:
        return list(self.pulled)

    def ps(self) -> list[Loaded]:
        return []

    def load(self, model: str, keep_alive: int | str) -> str:
        return "load"


@pytest.fixture
def model(tmp_path: Path) -> SystemdModel:
    return SystemdModel(tmp_path)


def runtime(m: SystemdModel) -> Runtime:
    return fake_runtime(m.root, m.fake)


def sink() -> PlainSink:
    import io

    return PlainSink(io.StringIO())


OPEN_CALL = ("set-property", "--runtime", UNIT, "IPAddressDeny=")
CLOSE_CALL = ("set-property", "--runtime", UNIT, "IPAddressDeny=any")
CLOSE_SEQUENCE = [CLOSE_CALL, ("daemon-reload",)]


def assert_closed_and_clean(m: SystemdModel) -> None:
    assert m.deny == CLOSED
    assert not m.control.exists()
    paths = egress.Paths.of(m.root, UNIT)
    assert not paths.marker.exists()


def test_open_only_while_pulling_then_closed_and_nothing_left(model: SystemdModel) -> None:
    api = FakeApi()
    seen: list[tuple[bool, bool]] = []
    marker = egress.Paths.of(model.root, UNIT).marker
    api.during = lambda: seen.append((model.open, marker.exists()))
    report = pull_models(runtime(model), api, UNIT, ["smollm2:135m"], sink(), force=False)
    assert seen == [(True, True)]  # open, and the marker written, while the pull ran
    assert model.commands() == [OPEN_CALL, *CLOSE_SEQUENCE]
    assert_closed_and_clean(model)
    assert report.egress_opened and [p.model for p in report.pulled] == ["smollm2:135m"]
    assert report.pulled[0].bytes == 100


def test_the_marker_is_written_before_egress_opens(model: SystemdModel) -> None:
    marker = egress.Paths.of(model.root, UNIT).marker
    at_open: list[bool] = []
    model.on_call = lambda call: at_open.append(marker.exists()) if call == OPEN_CALL else None
    pull_models(runtime(model), FakeApi(), UNIT, ["m:1"], sink(), force=False)
    assert at_open == [True]


def test_a_failed_pull_closes_egress(model: SystemdModel) -> None:
    api = FakeApi(
        [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
    )
    with pytest.raises(
        CommandError, match="pulling nope:latest failed: pull model manifest: file does not exist"
    ):
        pull_models(runtime(model), api, UNIT, ["nope:latest"], sink(), force=False)
    assert model.commands() == [OPEN_CALL, *CLOSE_SEQUENCE]
    assert_closed_and_clean(model)


def test_a_stream_that_ends_without_success_is_a_failure(model: SystemdModel) -> None:
    api = FakeApi([{"status": "pulling manifest"}])
    with pytest.raises(CommandError, match="without success"):
        pull_models(runtime(model), api, UNIT, ["m:1"], sink(), force=False)
    assert_closed_and_clean(model)


def test_the_second_model_failing_still_closes_after_the_first(model: SystemdModel) -> None:
    api = FakeApi()
    calls = {"n": 0}

    def second_fails() -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise CommandError("GET /api/pull: connection reset")

    api.during = second_fails
    with pytest.raises(CommandError, match="connection reset"):
        pull_models(runtime(model), api, UNIT, ["a:1", "b:1"], sink(), force=False)
    assert model.commands() == [OPEN_CALL, *CLOSE_SEQUENCE]  # opened once, closed once
    assert_closed_and_clean(model)


def test_ctrl_c_closes_egress_and_is_still_an_interrupt(model: SystemdModel) -> None:
    api = FakeApi()

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    api.during = ctrl_c
    with pytest.raises(KeyboardInterrupt):
        pull_models(runtime(model), api, UNIT, ["m:1"], sink(), force=False)
    assert model.commands() == [OPEN_CALL, *CLOSE_SEQUENCE]
    assert_closed_and_clean(model)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_during_the_pull_closes_egress(model: SystemdModel, signum: int) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    api = FakeApi()
    api.during = lambda: os.kill(os.getpid(), signum)
    with pytest.raises(KeyboardInterrupt):
        pull_models(runtime(model), api, UNIT, ["m:1"], sink(), force=False)
    assert_closed_and_clean(model)
    assert {s: signal.getsignal(s) for s in before} == before  # handlers put back


def test_a_signal_while_closing_waits_for_the_close(model: SystemdModel) -> None:
    def interrupt_at_close(call: tuple[str, ...]) -> None:
        if call == CLOSE_CALL:
            os.kill(os.getpid(), signal.SIGTERM)

    model.on_call = interrupt_at_close
    with pytest.raises(KeyboardInterrupt):
        pull_models(runtime(model), FakeApi(), UNIT, ["m:1"], sink(), force=False)
    assert model.commands() == [OPEN_CALL, *CLOSE_SEQUENCE]  # the reload still ran
    assert_closed_and_clean(model)


def test_a_killed_pull_is_closed_by_the_next_run(model: SystemdModel) -> None:
    """SIGKILL runs no finally: the marker and the control drop-in stay; the next run closes."""
    api = FakeApi()
    api.during = lambda: os.kill(os.getpid(), signal.SIGKILL)
    pid = os.fork()
    if pid == 0:  # the pull that gets killed
        try:
            pull_models(runtime(model), api, UNIT, ["m:1"], sink(), force=False)
        finally:
            os._exit(3)  # not reached: SIGKILL comes first
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    model.fake.props["IPAddressDeny"] = model._from_files()  # systemd's view: left open
    assert model.open and egress.Paths.of(model.root, UNIT).marker.exists()
    events: list[str] = []
    report = pull_models(runtime(model), FakeApi(), UNIT, ["m:1"], JsonOf(events), force=False)
    assert events[:3] == ["recovered", "open", "pulled"]
    assert model.commands() == [*CLOSE_SEQUENCE, OPEN_CALL, *CLOSE_SEQUENCE]
    assert report.egress_opened
    assert_closed_and_clean(model)


class JsonOf:
    """A sink that keeps the note events in order."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def note(self, event: str, text: str) -> None:
        self.events.append(event)

    def step(self, model: str, step: object, tally: object) -> None:
        pass

    def pulled(self, model: str, tally: object, seconds: float) -> None:
        self.events.append("pulled")

    def close(self) -> None:
        pass


def test_close_leftover_with_an_unreadable_marker_closes_to_any(model: SystemdModel) -> None:
    paths = egress.Paths.of(model.root, UNIT)
    paths.marker.parent.mkdir(parents=True)
    paths.marker.write_text("{not json")
    model.fake.set_property_runtime(UNIT, ["IPAddressDeny="])  # left open
    assert model.open
    events: list[str] = []
    assert egress.close_leftover(runtime(model), UNIT, lambda e, t: events.append(e))
    assert events == ["recovered"]
    assert_closed_and_clean(model)
    assert not egress.close_leftover(runtime(model), UNIT, lambda e, t: events.append(e))


def test_an_operators_own_runtime_drop_in_is_put_back(model: SystemdModel) -> None:
    own = "[Service]\nIPAddressDeny=\nIPAddressDeny=::/0\nIPAddressDeny=0.0.0.0/0\n"
    model.control.parent.mkdir(parents=True)
    model.control.write_text(own)
    pull_models(runtime(model), FakeApi(), UNIT, ["m:1"], sink(), force=False)
    assert model.control.read_text() == own
    assert model.deny == CLOSED


def test_egress_already_open_is_left_alone(tmp_path: Path) -> None:
    m = SystemdModel(tmp_path, persistent="")  # service.egress = "open"
    events: list[str] = []
    report = pull_models(runtime(m), FakeApi(), UNIT, ["m:1"], JsonOf(events), force=False)
    assert m.commands() == []
    assert events == ["already-open", "pulled"]
    assert not report.egress_opened and report.open_seconds == 0


class IgnoredOpen(FakeSystemctl):
    """A systemd that accepts `set-property IPAddressDeny=` and keeps denying."""

    def set_property_runtime(self, unit: str, assignments: Sequence[str]) -> None:
        super().set_property_runtime(unit, assignments)
        self.props["IPAddressDeny"] = CLOSED


def test_an_open_that_does_not_take_effect_fails_and_closes(tmp_path: Path) -> None:
    fake = IgnoredOpen(props={"IPAddressDeny": CLOSED})
    api = FakeApi()
    with pytest.raises(CommandError, match="egress did not open"):
        pull_models(fake_runtime(tmp_path, fake), api, UNIT, ["m:1"], sink(), force=False)
    assert api.pulled == []
    assert [c for c in fake.calls if c[0] != "show"] == [OPEN_CALL, *CLOSE_SEQUENCE]
    assert not egress.Paths.of(tmp_path, UNIT).marker.exists()


def test_a_close_that_fails_says_so_keeps_the_marker_and_a_later_close_works(
    model: SystemdModel,
) -> None:
    def broken(call: tuple[str, ...]) -> None:
        if call in (CLOSE_CALL, ("daemon-reload",)):
            raise CommandError(
                f"systemctl {' '.join(call)} exited 1: Transport endpoint is not connected"
            )

    model.on_call = broken
    with pytest.raises(CommandError, match="may still be open") as info:
        pull_models(runtime(model), FakeApi(), UNIT, ["m:1"], sink(), force=False)
    message = str(info.value)
    assert "ollama-ops pull --close --unit ollama.service" in message and "\n" not in message
    assert "Transport endpoint is not connected" in message
    assert model.open and egress.Paths.of(model.root, UNIT).marker.exists()
    model.on_call = None
    events: list[str] = []
    assert egress.close_leftover(runtime(model), UNIT, lambda e, t: events.append(e))
    assert events == ["recovered"]
    assert_closed_and_clean(model)


def test_a_second_pull_at_the_same_time_is_busy(model: SystemdModel) -> None:
    lock = egress.Paths.of(model.root, UNIT).lock
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(BusyError, match="another ollama-ops pull"):
            pull_models(runtime(model), FakeApi(), UNIT, ["m:1"], sink(), force=False)
    finally:
        os.close(fd)
    assert model.commands() == []


def test_a_server_that_does_not_answer_opens_nothing(model: SystemdModel) -> None:
    api = FakeApi()
    api.up = False
    with pytest.raises(CommandError, match="api/version"):
        pull_models(runtime(model), api, UNIT, ["m:1"], sink(), force=False)
    assert model.commands() == []


@pytest.mark.parametrize(
    "environment",
    ["OLLAMA_HOST=0.0.0.0:11434", "OLLAMA_HOST=10.1.2.3", 'OLLAMA_HOST=http://[::]:11434 "A=b c"'],
)
def test_a_non_loopback_bind_needs_force(tmp_path: Path, environment: str) -> None:
    m = SystemdModel(tmp_path, environment=environment)
    with pytest.raises(ConfigError, match="--force") as info:
        pull_models(runtime(m), FakeApi(), UNIT, ["m:1"], sink(), force=False)
    assert "\n" not in str(info.value)
    assert m.commands() == []
    pull_models(runtime(m), FakeApi(), UNIT, ["m:1"], sink(), force=True)
    assert m.commands() == [OPEN_CALL, *CLOSE_SEQUENCE]


@pytest.mark.parametrize(
    ("environment", "bind"),
    [
        ("", None),
        ("OLLAMA_HOST=127.0.0.1:11434", "127.0.0.1:11434"),
        ('HOME=/x "OLLAMA_HOST=[::1]:8080" PATH=/bin', "[::1]:8080"),
    ],
)
def test_bind_is_read_from_the_units_environment(
    tmp_path: Path, environment: str, bind: str | None
) -> None:
    m = SystemdModel(tmp_path, environment=environment)
    assert egress.bind_of(m.fake, UNIT) == bind


@pytest.mark.parametrize(
    ("shown", "is_open", "is_closed"),
    [("", True, False), ("::/0 0.0.0.0/0", False, True), ("0.0.0.0/0 ::/0", False, True),
     ("any", False, True), ("10.0.0.0/8", False, False), ("0.0.0.0/0", False, False)],
)  # fmt: skip
def test_what_show_means(shown: str, is_open: bool, is_closed: bool) -> None:
    assert egress.is_open(shown) is is_open
    assert egress.is_closed(shown) is is_closed


def test_json_sink_reports_the_egress_window_in_order(model: SystemdModel) -> None:
    import io
    import json

    out = io.StringIO()
    pull_models(runtime(model), FakeApi(), UNIT, ["m:1"], JsonSink(out), force=False)
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events[0] == "open" and events[-1] == "closed"
    assert events.count("progress") == len(SUCCESS_LINES) and "pulled" in events


def test_marker_round_trip_and_refusals() -> None:
    m = egress.Marker(UNIT, CLOSED, None, 42, 1.5)
    assert egress.Marker.loads(m.dumps(), UNIT) == m
    assert egress.Marker.loads(m.dumps(), "other.service") is None
    for bad in (
        "",
        "[]",
        '{"unit": 1}',
        "null",
        '{"unit":"ollama.service","before":"","control":null,"pid":"x","opened_at":0}',
    ):
        assert egress.Marker.loads(bad, UNIT) is None
