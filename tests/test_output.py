"""cli/output: wrapping to terminal cells, tables, escaping, and when colour is used."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from ollama_ops.cli.output import (
    Column,
    Doc,
    colour_wanted,
    emit,
    plural,
    printable,
    same_inputs,
    wrap,
)

ANSI = "\x1b["


class Tty(io.StringIO):
    """A stream that says it is a terminal, as a real one would."""

    def isatty(self) -> bool:
        return True


words = st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=300)


@settings(max_examples=300, deadline=None)
@given(text=words, width=st.integers(min_value=8, max_value=120), indent=st.integers(0, 6))
def test_wrap_fits_the_width_and_keeps_every_character(text: str, width: int, indent: int) -> None:
    text = printable(text)
    lines = wrap(text, width, " " * indent, " " * (indent + 2))
    assert all(cell_len(line) <= width for line in lines), lines
    # Folded, never cut: the non-blank characters come out in the same order.
    assert "".join("".join(lines).split()) == "".join(text.split())


def test_wrap_folds_a_word_longer_than_the_line_and_counts_wide_characters() -> None:
    assert wrap("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    lines = wrap("漢字" * 10, 10, "  ")
    assert all(cell_len(line) <= 10 for line in lines)
    assert "".join(line.strip() for line in lines) == "漢字" * 10


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(words, words, words), min_size=1, max_size=5),
    width=st.integers(min_value=40, max_value=100),
)
def test_a_table_never_exceeds_the_width(rows: list[tuple[str, str, str]], width: int) -> None:
    doc = Doc(width)
    doc.table(
        [((a, ""), (b, ""), (c, "")) for a, b, c in rows], (Column(30, fixed=True), Column(9))
    )
    assert all(cell_len(line) <= width for line in doc.plain().splitlines())
    text = "".join(doc.plain().split())
    for a, b, c in rows:
        for cell in (a, b, c):
            assert "".join(printable(cell).split()) in text


def test_a_table_puts_a_wide_first_cell_on_its_own_line() -> None:
    doc = Doc(60)
    doc.table([(("short", ""), ("the reason", "")), (("x" * 20, ""), ("why", ""))], (Column(10),))
    assert doc.plain().splitlines() == [
        "  short       the reason",
        "  " + "x" * 20,
        "              why",
    ]


def test_escape_sequences_never_reach_the_terminal() -> None:
    doc = Doc()
    doc.summary("host \x1b[2J\x07 evil\u202e")
    doc.verbatim("+Environment=\x1b]0;title\x07")
    doc.table([(("\x1b[31m", ""), ("\x9b", ""))], (Column(9),))
    out = Tty()
    emit(out, doc, environ={"TERM": "xterm"})
    text = out.getvalue()
    for bad in ("\x1b[2J", "\x07", "\u202e", "\x1b]0", "\x9b", "\x1b[31m\x1b"):
        assert bad not in text
    assert "\\x1b[2J" in text


@pytest.mark.parametrize(
    ("tty", "environ", "coloured"),
    [
        (True, {"TERM": "xterm-256color"}, True),
        (False, {"TERM": "xterm-256color"}, False),  # a pipe or a file: never colour
        (True, {"TERM": "xterm", "NO_COLOR": "1"}, False),
        (True, {"TERM": "dumb"}, False),
        (True, {"TERM": "xterm", "NO_COLOR": ""}, True),  # no-color.org: only a non-empty value
    ],
)
def test_colour_only_on_a_terminal(tty: bool, environ: dict[str, str], coloured: bool) -> None:
    stream = Tty() if tty else io.StringIO()
    assert colour_wanted(stream, environ) is coloured
    doc = Doc()
    doc.summary("plan: 2 files would change")
    doc.table([(("new", "green"), ("/etc/x", ""))], (Column(9),))
    emit(stream, doc, environ)
    assert (ANSI in stream.getvalue()) is coloured
    plain = stream.getvalue()
    if coloured:
        import re

        plain = re.sub(r"\x1b\[[0-9;]*m", "", plain)
    assert plain == doc.plain()  # colour changes nothing else


def test_plural_and_the_next_command() -> None:
    assert [plural(n, "CPU") for n in (0, 1, 2)] == ["0 CPUs", "1 CPU", "2 CPUs"]
    import argparse

    args = argparse.Namespace(root="/srv/my root", facts="f.json", config=None)
    assert same_inputs("apply", args) == "ollama-ops apply --root '/srv/my root' --facts f.json"
    assert same_inputs("apply", argparse.Namespace(root="/")) == "ollama-ops apply"
