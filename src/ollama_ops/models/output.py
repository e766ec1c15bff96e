"""Where pull progress goes: a rich progress bar on a terminal, plain lines, or JSON lines.

Every sink gets the same calls: ``note`` (egress and other events, one line
each), ``step`` (one progress line of a model), ``pulled`` (a model is in
the store) and ``close``. The JSON sink writes one object per call, with an
``event`` key, so a script reads the same facts a person sees.
"""

from __future__ import annotations

import json
import os
from typing import Any, Protocol, TextIO

from ollama_ops.models.progress import LineThrottle, Step, Tally, human_bytes, plain_line


class Sink(Protocol):
    def note(self, event: str, text: str) -> None: ...
    def step(self, model: str, step: Step, tally: Tally) -> None: ...
    def pulled(self, model: str, tally: Tally, seconds: float) -> None: ...
    def close(self) -> None: ...


def pulled_text(model: str, tally: Tally, seconds: float) -> str:
    size = f"{human_bytes(tally.total)} " if tally.total else ""
    return f"{model}: pulled {size}in {seconds:.1f} s"


class PlainSink:
    """Lines for a log or a pipe: a new status, or a layer complete; never the 60 ms ticks."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.throttle = LineThrottle()

    def note(self, event: str, text: str) -> None:
        self.out.write(text + "\n")

    def step(self, model: str, step: Step, tally: Tally) -> None:
        if self.throttle.wanted(model, step):
            self.out.write(plain_line(model, step) + "\n")

    def pulled(self, model: str, tally: Tally, seconds: float) -> None:
        self.out.write(pulled_text(model, tally, seconds) + "\n")

    def close(self) -> None:
        self.out.flush()


class JsonSink:
    """One JSON object per line: ``{"event": "progress", "model": ..., "status": ...}``."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def _emit(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, sort_keys=True) + "\n")
        self.out.flush()

    def note(self, event: str, text: str) -> None:
        self._emit({"event": event, "message": text})

    def step(self, model: str, step: Step, tally: Tally) -> None:
        row: dict[str, Any] = {"event": "progress", "model": model, "status": step.status}
        if step.is_layer:
            row.update(digest=step.digest, total=step.total, completed=step.completed)
        self._emit(row)

    def pulled(self, model: str, tally: Tally, seconds: float) -> None:
        self._emit({"event": "pulled", "model": model, "bytes": tally.total, "seconds": seconds})

    def close(self) -> None:
        self.out.flush()


class RichSink:
    """One progress bar per model (bytes of the layers known so far), notes printed above."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(file=out, no_color="NO_COLOR" in os.environ, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def note(self, event: str, text: str) -> None:
        self.progress.console.print(text, markup=False)

    def _task(self, model: str) -> Any:
        if model not in self.tasks:
            self.tasks[model] = self.progress.add_task(model, total=None, status="")
        return self.tasks[model]

    def step(self, model: str, step: Step, tally: Tally) -> None:
        status = step.status if not step.is_layer else step.status.split(" ")[0]
        self.progress.update(
            self._task(model), total=tally.total or None, completed=tally.done, status=status[:30]
        )

    def pulled(self, model: str, tally: Tally, seconds: float) -> None:
        total = tally.total or 1
        self.progress.update(self._task(model), total=total, completed=total, status="pulled")

    def close(self) -> None:
        self.progress.stop()


def make_sink(out: TextIO, *, json_lines: bool) -> Sink:
    """JSON lines with --json; rich on a terminal (TERM not dumb); plain lines otherwise."""
    if json_lines:
        return JsonSink(out)
    tty = getattr(out, "isatty", lambda: False)()
    if tty and os.environ.get("TERM") != "dumb":
        return RichSink(out)
    return PlainSink(out)
