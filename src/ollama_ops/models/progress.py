"""Ollama's ``/api/pull`` progress lines, read and summed. Pure.

Each NDJSON line is an ``api.ProgressResponse`` (the official client's
``ProgressResponse``): ``status`` always, ``digest``, ``total`` and
``completed`` for a layer (left out when empty or zero), or ``{"error": ...}``
when the pull failed after the stream began::

    {"status":"pulling manifest"}
    {"status":"pulling 6a0746a1ec1a","digest":"sha256:6a07...","total":2097152,"completed":65536}
    {"status":"verifying sha256 digest"}
    {"status":"writing manifest"}
    {"status":"success"}

A line of another shape (a hostile or broken server) is read leniently: a
field of the wrong type counts as absent, never as a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SUCCESS = "success"


@dataclass(frozen=True)
class Step:
    """One progress line."""

    status: str = ""
    digest: str = ""
    total: int = 0
    completed: int = 0
    error: str = ""

    @property
    def is_layer(self) -> bool:
        return bool(self.digest) and self.total > 0


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def _text(value: object, limit: int = 500) -> str:
    if not isinstance(value, str):
        return ""
    clean = "".join(c if c.isprintable() else "?" for c in value)
    return clean[:limit]


def parse_line(obj: object) -> Step:
    """A Step from one decoded JSON line; a non-object is an error step."""
    if not isinstance(obj, dict):
        return Step(error=f"not a progress object: {_text(repr(obj), 80)}")
    if "error" in obj:
        return Step(error=_text(obj.get("error")) or "the server reported an error without text")
    total = _count(obj.get("total"))
    return Step(
        status=_text(obj.get("status")),
        digest=_text(obj.get("digest"), 80),
        total=total,
        completed=min(_count(obj.get("completed")), total) if total else 0,
    )


@dataclass
class Tally:
    """The layers of one model's pull so far: bytes done of bytes known."""

    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # digest -> (total, done)
    status: str = ""
    succeeded: bool = False

    def add(self, step: Step) -> None:
        if step.status:
            self.status = step.status
        if step.status == SUCCESS:
            self.succeeded = True
        if step.is_layer:
            self.layers[step.digest] = (step.total, step.completed)

    @property
    def total(self) -> int:
        return sum(t for t, _ in self.layers.values())

    @property
    def done(self) -> int:
        return sum(d for _, d in self.layers.values())

    @property
    def fraction(self) -> float:
        """Share of the known bytes downloaded (1.0 once the pull succeeded)."""
        if self.succeeded:
            return 1.0
        total = self.total
        return self.done / total if total else 0.0


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def plain_line(model: str, step: Step) -> str:
    """A progress line for a log: ``llama3.2:3b: pulling 6a0746a1ec1a 1.0 MiB/2.0 MiB (50%)``."""
    if not step.is_layer:
        return f"{model}: {step.status}"
    size = human_bytes(step.total)
    if step.completed == 0:
        return f"{model}: {step.status} ({size})"
    if step.completed == step.total:
        return f"{model}: {step.status} {size} done"
    pct = 100 * step.completed // step.total
    return f"{model}: {step.status} {human_bytes(step.completed)}/{size} ({pct}%)"


class LineThrottle:
    """Which steps deserve a plain line: a new status, or a layer reaching 100%.

    Ollama sends a layer line every 60 ms; a log needs its first and its last.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, bool]] = {}

    def wanted(self, model: str, step: Step) -> bool:
        key = (step.status, step.is_layer and step.completed == step.total)
        if self._last.get(model) == key:
            return False
        self._last[model] = key
        return True
