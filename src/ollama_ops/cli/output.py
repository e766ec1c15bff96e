"""Output for people and for programs: a summary first, 100 columns, colour only on a terminal.

A command builds a :class:`Doc` (lines of styled segments), then :func:`emit`
writes it: plain text when stdout is not a terminal, when ``NO_COLOR`` is set
(https://no-color.org) or when ``TERM=dumb``; otherwise through ``rich`` with
colour. Every line is wrapped to the width (100 columns, or the terminal's if
narrower) counting terminal cells, so a wide character counts twice; text is
folded onto the next line, never cut. Text that comes from outside (hostnames,
GPU names, paths, reasons) goes through :func:`printable` first, so no escape
sequence reaches the terminal. :func:`emit_json` is the ``--json`` twin.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from rich.cells import cell_len, chop_cells

WIDTH = 100
MIN_WIDTH = 40
NARROW = 24  # a table's last column narrower than this goes on lines of its own

Segment = tuple[str, str]  # (text, rich style; "" for none)


def printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped (an ANSI escape from a
    hostname or a GPU name must not reach the terminal)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 CPU``, ``2 CPUs``, ``0 files``."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def colour_wanted(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and not with NO_COLOR (any non-empty value) or TERM=dumb."""
    environ = os.environ if environ is None else environ
    if environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def width_for(stream: TextIO) -> int:
    """100 columns, or a narrower terminal's width (never under 40)."""
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return WIDTH
    columns = shutil.get_terminal_size((WIDTH, 24)).columns
    return max(MIN_WIDTH, min(WIDTH, columns))


def wrap(text: str, width: int, indent: str = "", hanging: str | None = None) -> list[str]:
    """Word-wrap ``text`` to ``width`` terminal cells; a word longer than a line is folded.

    The first line starts with ``indent``, the others with ``hanging`` (default:
    ``indent``). Nothing is dropped: joining the words of the result gives the
    words of ``text``.
    """
    hanging = indent if hanging is None else hanging
    # An indent never takes the whole line: at least half of it (up to 20 cells) stays for text.
    most = width - max(1, min(20, width // 2))
    indent, hanging = indent[:most], hanging[:most]
    lines: list[str] = []
    current, prefix = "", indent
    for word in text.split():
        room = width - cell_len(prefix)
        if current and cell_len(current) + 1 + cell_len(word) <= room:
            current += " " + word
            continue
        if current:
            lines.append(prefix + current)
            prefix = hanging
            room = width - cell_len(prefix)
        rest = word
        while cell_len(rest) > room:  # longer than a line: fold it, line by line
            piece = chop_cells(rest, max(1, room))[0]
            lines.append(prefix + piece)
            rest, prefix = rest[len(piece) :], hanging
            room = width - cell_len(prefix)
        current = rest
    if current or not lines:
        lines.append(prefix + current)
    return lines


@dataclass(frozen=True)
class Column:
    """A leading column of :meth:`Doc.table`: as wide as its widest cell, at most ``cap``
    (exactly ``cap`` when ``fixed``, so that several tables line up)."""

    cap: int
    fixed: bool = False


@dataclass
class Doc:
    """The lines a command prints, each a tuple of styled segments, already wrapped."""

    width: int = WIDTH
    lines: list[tuple[Segment, ...]] = field(default_factory=list)

    def summary(self, text: str, style: str = "bold") -> None:
        """The command's first line(s): what changed or would change, and what to do next."""
        self.text(text, style=style, hanging="  ")

    def text(
        self, text: str, *, indent: str = "", hanging: str | None = None, style: str = ""
    ) -> None:
        """A wrapped paragraph of outside text (escaped)."""
        for line in wrap(printable(text), self.width, indent, hanging):
            self.lines.append(((line, style),))

    def heading(self, text: str) -> None:
        self.text(text, style="bold")

    def blank(self) -> None:
        if self.lines and self.lines[-1] != ():
            self.lines.append(())

    def bullets(self, items: Iterable[str], style: str = "") -> None:
        for item in items:
            self.text(f"- {item}", indent="  ", hanging="    ", style=style)

    def verbatim(self, line: str, style: str = "", marker: str = "") -> None:
        """A line shown as it is (file content: never reflowed), escaped; one wider than the
        width is folded: each piece but the last ends in ``\\``, and each piece after the
        first starts with ``marker`` (a diff's +, - or space)."""
        text = printable(line)
        while cell_len(text) > self.width:
            piece = chop_cells(text, self.width - 1)[0]
            self.lines.append(((piece + "\\", style),))
            text = marker + text[len(piece) :]
        self.lines.append(((text, style),))

    def table(
        self,
        rows: Sequence[Sequence[Segment]],
        columns: Sequence[Column],  # the leading columns; the last cell takes the rest
        *,
        indent: str = "  ",
        gap: str = "  ",
    ) -> None:
        """Rows whose leading cells are padded to their column and whose last cell is wrapped.

        A leading cell wider than its column gets a line of its own (wrapped if need
        be); the other cells then start on the next line, at their column.
        """
        widths = [
            col.cap
            if col.fixed
            else min(col.cap, max((cell_len(printable(r[i][0])) for r in rows), default=0))
            for i, col in enumerate(columns)
        ]
        last_at = cell_len(indent) + sum(w + cell_len(gap) for w in widths)
        hanging = " " * last_at
        for row in rows:
            cells = [(printable(text), style) for text, style in row]
            if self.width - last_at < NARROW:  # a narrow terminal: the last cell goes below
                lead = gap.join(text for text, _ in cells[:-1]).rstrip()
                if lead:
                    self.lines += [
                        ((line, cells[0][1]),) for line in wrap(lead, self.width, indent)
                    ]
                if cells[-1][0]:
                    below = wrap(cells[-1][0], self.width, indent + "    ")
                    self.lines += [((line, cells[-1][1]),) for line in below]
                continue
            segments: list[Segment] = [(indent, "")]
            for i, (text, style) in enumerate(cells[:-1]):
                pad = widths[i] - cell_len(text)
                if pad < 0:  # too wide: on a line of its own
                    if len(segments) > 1:
                        self.lines.append(tuple(segments))
                    for part in wrap(text, self.width, indent + " " * _offset(widths, i, gap)):
                        self.lines.append(((part, style),))
                    segments = [(" " * (cell_len(indent) + _offset(widths, i + 1, gap)), "")]
                    continue
                segments += [(text, style), (" " * pad + gap, "")]
            text, style = cells[-1]
            first, *rest = wrap(text, self.width, hanging) if text else [hanging]
            segments.append((first[last_at:], style))
            self.lines.append(_rstrip(tuple(segments)))
            self.lines += [((line, style),) for line in rest]

    def extend(self, other: Doc) -> None:
        self.lines += other.lines

    def plain(self) -> str:
        return "".join("".join(text for text, _ in line) + "\n" for line in self.lines)


def _offset(widths: Sequence[int], index: int, gap: str) -> int:
    return sum(w + cell_len(gap) for w in widths[:index])


def _rstrip(segments: tuple[Segment, ...]) -> tuple[Segment, ...]:
    out = list(segments)
    while out and not out[-1][0].strip():
        out.pop()
    if out:
        out[-1] = (out[-1][0].rstrip(), out[-1][1])
    return tuple(out)


def emit(stream: TextIO, doc: Doc, environ: Mapping[str, str] | None = None) -> None:
    """Write ``doc``: plain text, or coloured by rich when :func:`colour_wanted`."""
    if not colour_wanted(stream, environ):
        stream.write(doc.plain())
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(
        file=stream,
        force_terminal=True,
        color_system="standard",
        soft_wrap=True,  # already wrapped: rich must not wrap or cut again
        width=doc.width,
        highlight=False,
        markup=False,
        emoji=False,
    )
    for line in doc.lines:
        console.print(Text.assemble(*line), end="\n")


def emit_json(stream: TextIO, data: object) -> None:
    """The ``--json`` twin: one JSON document, keys in a stable order."""
    stream.write(json.dumps(data, indent=2) + "\n")


def same_inputs(command: str, args: argparse.Namespace, *extra: str) -> str:
    """``ollama-ops COMMAND`` with the --root, --facts and --config this run was given."""
    words = ["ollama-ops", command]
    if getattr(args, "root", "/") not in (None, "/"):
        words += ["--root", args.root]
    for option in ("facts", "config"):
        value = getattr(args, option, None)
        if value:
            words += [f"--{option}", value]
    words += extra
    return shlex.join(words)


def counts(kinds: Iterable[str], order: Sequence[str]) -> str:
    """``2 new, 1 changed``: how many of each kind, in ``order``, zeros left out."""
    seen = list(kinds)
    return ", ".join(f"{seen.count(k)} {k}" for k in order if seen.count(k))
