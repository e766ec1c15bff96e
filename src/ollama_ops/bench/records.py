"""What one request did (frozen records), and the CSV of every request."""

from __future__ import annotations

import csv
import enum
import io
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

#: A request whose ``load_duration`` reaches this waited for a model load
#: (Ollama's load_duration is the wait for the scheduler and the load; with
#: the model resident it is a few milliseconds).
LOAD_FLAG_S = 0.25


class Outcome(enum.Enum):
    OK = "ok"
    ERROR = "error"  # any failure but a 503
    BUSY = "busy"  # 503: Ollama's queue was full
    CUT = "cut"  # unfinished when the run was interrupted


@dataclass(frozen=True, eq=False)
class RequestRecord:
    """Times are ``time.perf_counter()`` seconds; durations from the server in seconds."""

    stage: int
    index: int
    ready: float  # when it could have been sent (its arrival time, or a free stream)
    sent: float
    end: float
    outcome: Outcome
    status: int = 0
    error: str = ""
    max_tokens: int | None = None
    times: array[float] = field(default_factory=lambda: array("d"))  # token chunk arrivals
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    done_reason: str = ""
    load_s: float | None = None
    prompt_eval_s: float | None = None
    eval_s: float | None = None
    total_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def ttft(self) -> float | None:
        return self.times[0] - self.sent if self.times else None

    @property
    def e2e(self) -> float:
        return self.end - self.sent

    @property
    def tokens(self) -> int:
        """Output tokens: the server's count, else the chunks received."""
        return self.output_tokens if self.output_tokens is not None else len(self.times)

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: (last chunk - first chunk) / (tokens - 1)."""
        n = self.tokens
        if len(self.times) < 2 or n < 2:
            return None
        return (self.times[-1] - self.times[0]) / (n - 1)

    def gaps(self) -> list[float]:
        """Every inter-chunk gap (the true ITL distribution)."""
        t = self.times
        return [t[i] - t[i - 1] for i in range(1, len(t))]

    @property
    def max_gap(self) -> float | None:
        g = self.gaps()
        return max(g) if g else None

    @property
    def slip(self) -> float:
        """Send-time slip: sent minus when it could have been sent (the client's delay)."""
        return max(0.0, self.sent - self.ready)

    @property
    def waited_for_load(self) -> bool:
        return self.load_s is not None and self.load_s >= LOAD_FLAG_S

    @property
    def decode_rate(self) -> float | None:
        """The guide's figure for one request: eval_count / eval_duration."""
        if not self.eval_s or not self.output_tokens:
            return None
        return self.output_tokens / self.eval_s

    def slo_values(self) -> dict[str, float | None]:
        return {"ttft": self.ttft, "tpot": self.tpot, "itl": self.max_gap, "e2e": self.e2e}


CSV_FIELDS = (
    "stage",
    "index",
    "outcome",
    "status",
    "sent_s",
    "ttft_ms",
    "tpot_ms",
    "itl_max_ms",
    "e2e_ms",
    "slip_ms",
    "chunks",
    "prompt_tokens",
    "output_tokens",
    "max_tokens",
    "done_reason",
    "load_ms",
    "prompt_eval_ms",
    "eval_ms",
    "total_ms",
    "error",
)


def _ms(v: float | None) -> str:
    return "" if v is None else f"{v * 1e3:.3f}"


def _int(v: int | None) -> str:
    return "" if v is None else str(v)


def csv_text(records: Iterable[RequestRecord], t0: float) -> str:
    """One row per request; times relative to ``t0``, latencies in milliseconds."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in records:
        w.writerow(
            (
                r.stage,
                r.index,
                r.outcome.value,
                r.status,
                f"{r.sent - t0:.6f}",
                _ms(r.ttft),
                _ms(r.tpot),
                _ms(r.max_gap),
                _ms(r.e2e),
                _ms(r.slip),
                len(r.times),
                _int(r.prompt_tokens),
                _int(r.output_tokens),
                _int(r.max_tokens),
                r.done_reason,
                _ms(r.load_s),
                _ms(r.prompt_eval_s),
                _ms(r.eval_s),
                _ms(r.total_s),
                r.error,
            )
        )
    return out.getvalue()
