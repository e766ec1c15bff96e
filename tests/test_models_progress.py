"""Pull progress lines: read, summed, shown (plain lines, JSON lines, rich on a terminal)."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollama_ops.models.output import JsonSink, PlainSink, RichSink, make_sink
from ollama_ops.models.progress import LineThrottle, Step, Tally, parse_line, plain_line

DIGEST = "sha256:" + "6a0746a1ec1a" + "0" * 52
LINES: list[dict[str, object]] = [
    {"status": "pulling manifest"},
    {"status": "pulling 6a0746a1ec1a", "digest": DIGEST, "total": 2097152},
    {"status": "pulling 6a0746a1ec1a", "digest": DIGEST, "total": 2097152, "completed": 65536},
    {"status": "pulling 6a0746a1ec1a", "digest": DIGEST, "total": 2097152, "completed": 1048576},
    {"status": "pulling 6a0746a1ec1a", "digest": DIGEST, "total": 2097152, "completed": 2097152},
    {
        "status": "pulling 0123456789ab",
        "digest": "sha256:" + "1" * 64,
        "total": 10,
        "completed": 10,
    },
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "success"},
]


def test_lines_as_ollama_sends_them() -> None:
    steps = [parse_line(x) for x in LINES]
    assert steps[0] == Step(status="pulling manifest")
    assert steps[1] == Step("pulling 6a0746a1ec1a", DIGEST, 2097152, 0)  # completed omitted: 0
    assert steps[3].completed == 1048576 and steps[3].is_layer
    assert not steps[-1].is_layer and steps[-1].status == "success"


def test_the_tally_sums_the_layers_and_ends_at_success() -> None:
    tally = Tally()
    fractions = []
    for line in LINES:
        tally.add(parse_line(line))
        fractions.append(tally.fraction)
    assert fractions == sorted(fractions)  # never goes back
    assert fractions[3] == 1048576 / 2097152
    assert tally.total == 2097152 + 10 and tally.done == tally.total
    assert tally.succeeded and tally.fraction == 1.0


def test_an_error_line_is_an_error_step() -> None:
    step = parse_line({"error": "pull model manifest: file does not exist"})
    assert step.error == "pull model manifest: file does not exist"
    assert parse_line({"error": 5}).error  # never an empty error
    assert parse_line([1, 2]).error.startswith("not a progress object")


def test_hostile_fields_count_as_absent() -> None:
    step = parse_line(
        {"status": "pulling x\x1b[31m", "digest": ["x"], "total": -5, "completed": True}
    )
    assert step == Step(status="pulling x?[31m")
    over = parse_line({"status": "s", "digest": "d", "total": 10, "completed": 10**9})
    assert over.completed == 10  # never more than the total


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(["status", "digest", "total", "completed", "error", "x"]), json_values
    )
    | json_values
)
def test_any_json_is_read_without_a_crash(obj: object) -> None:
    step = parse_line(obj)
    assert 0 <= step.completed <= max(step.total, 0)
    assert all(c.isprintable() for c in step.status + step.error)
    tally = Tally()
    tally.add(step)
    assert 0.0 <= tally.fraction <= 1.0
    plain_line("m:1", step)


def test_plain_lines_keep_the_first_and_last_of_each_layer() -> None:
    out = io.StringIO()
    sink = PlainSink(out)
    tally = Tally()
    for line in LINES:
        step = parse_line(line)
        tally.add(step)
        sink.step("smollm2:135m", step, tally)
    sink.pulled("smollm2:135m", tally, 1.25)
    assert out.getvalue().splitlines() == [
        "smollm2:135m: pulling manifest",
        "smollm2:135m: pulling 6a0746a1ec1a (2.0 MiB)",
        "smollm2:135m: pulling 6a0746a1ec1a 2.0 MiB done",
        "smollm2:135m: pulling 0123456789ab 10 B done",
        "smollm2:135m: verifying sha256 digest",
        "smollm2:135m: writing manifest",
        "smollm2:135m: success",
        "smollm2:135m: pulled 2.0 MiB in 1.2 s",
    ]


def test_a_line_in_the_middle_of_a_layer() -> None:
    step = parse_line(LINES[3])
    assert plain_line("m:1", step) == "m:1: pulling 6a0746a1ec1a 1.0 MiB/2.0 MiB (50%)"


def test_throttle_is_per_model() -> None:
    t = LineThrottle()
    s = Step("pulling manifest")
    assert t.wanted("a", s) and t.wanted("b", s)
    assert not t.wanted("a", s)


def test_json_lines_carry_every_step() -> None:
    out = io.StringIO()
    sink = JsonSink(out)
    tally = Tally()
    sink.note("open", "opened egress")
    for line in LINES:
        step = parse_line(line)
        tally.add(step)
        sink.step("m:1", step, tally)
    sink.pulled("m:1", tally, 0.5)
    rows = [json.loads(x) for x in out.getvalue().splitlines()]
    assert rows[0] == {"event": "open", "message": "opened egress"}
    assert [r["status"] for r in rows[1:-1]] == [x["status"] for x in LINES]
    assert rows[3]["completed"] == 65536 and rows[3]["digest"] == DIGEST
    assert rows[-1] == {"event": "pulled", "model": "m:1", "bytes": 2097162, "seconds": 0.5}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_progress_bar_and_a_pipe_plain_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mp = monkeypatch
    mp.setenv("TERM", "xterm")
    mp.setenv("NO_COLOR", "1")
    out = Tty()
    sink = make_sink(out, json_lines=False)
    assert isinstance(sink, RichSink)
    tally = Tally()
    sink.note("open", "opened egress of ollama.service")
    for line in LINES:
        step = parse_line(line)
        tally.add(step)
        sink.step("smollm2:135m", step, tally)
    sink.pulled("smollm2:135m", tally, 0.4)
    sink.close()
    text = out.getvalue()
    assert "opened egress of ollama.service" in text and "smollm2:135m" in text
    assert "\x1b[3" not in text  # NO_COLOR: no colour codes
    assert isinstance(make_sink(io.StringIO(), json_lines=False), PlainSink)
    assert isinstance(make_sink(out, json_lines=True), JsonSink)
    mp.setenv("TERM", "dumb")
    assert isinstance(make_sink(Tty(), json_lines=False), PlainSink)
