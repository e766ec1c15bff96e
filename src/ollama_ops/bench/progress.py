"""The live progress line while a run goes on (rich, only on a terminal)."""

from __future__ import annotations

from types import TracebackType
from typing import TextIO

from .runner import Snapshot


class LiveProgress:
    """One status line, redrawn in place twice a second; nothing when not on a terminal."""

    def __init__(self, stream: TextIO, wanted: bool = True) -> None:
        self.stream = stream
        self.live: object | None = None
        self.enabled = wanted and stream.isatty()

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            try:
                from rich.console import Console
                from rich.live import Live
            except ImportError:  # rich is optional: no live line without it
                self.enabled = False
                return self

            console = Console(file=self.stream)
            live = Live("", console=console, auto_refresh=False, transient=True)
            live.start()
            self.live = live
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.live is not None:
            from rich.live import Live

            assert isinstance(self.live, Live)
            self.live.stop()
            self.live = None

    def update(self, s: Snapshot) -> None:
        if self.live is None:
            return
        from rich.live import Live

        assert isinstance(self.live, Live)
        self.live.update(line(s), refresh=True)


def line(s: Snapshot) -> str:
    """``[2/3] concurrency 64  12.0/30 s  done 311  in flight 64  2,519 tok/s  failed 0  503 0``."""
    if s.stage_no <= 0:
        where = f"warm-up {s.done}/{s.planned_requests or '?'}"
    else:
        where = f"[{s.stage_no}/{s.stages}] {s.stage}"
    plan = f"/{s.planned_s:g}" if s.planned_s else ""
    reqs = f"/{s.planned_requests}" if s.planned_requests and s.stage_no > 0 else ""
    return (
        f"{where}  {s.elapsed_s:.1f}{plan} s  done {s.done}{reqs}  in flight {s.in_flight}"
        f"  {s.chunks_per_s:,.0f} tok/s  failed {s.failed}  503 {s.busy}"
    )[:100]
