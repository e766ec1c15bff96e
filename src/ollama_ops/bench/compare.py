"""Two saved runs side by side (pure): the change in each figure, regressions, SLO breaches.

Stages are matched by their level (the concurrency or the rate). A figure
regresses when it moved the wrong way (throughput down, latency up) by more
than the threshold, in percent of A's value. An SLO is breached when fewer
than ``min_share`` of B's requests met it (the SLO saved in B, or one given).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BenchError
from .report import fit
from .slo import Slo
from .summary import FORMAT_VERSION

#: (name shown, key path in a stage's JSON, True when higher is better)
FIGURES: tuple[tuple[str, str, bool], ...] = (
    ("req/s", "request_throughput_per_s", True),
    ("output tok/s", "output_tokens_per_s", True),
    ("goodput req/s", "goodput_per_s", True),
    ("TTFT median", "ttft_s.median", False),
    ("TTFT p99", "ttft_s.p99", False),
    ("TPOT median", "tpot_s.median", False),
    ("TPOT p99", "tpot_s.p99", False),
    ("ITL p99", "itl_s.p99", False),
    ("E2E median", "e2e_s.median", False),
    ("E2E p99", "e2e_s.p99", False),
    ("failed share", "failed_share", False),
)


@dataclass(frozen=True)
class Change:
    stage: str
    figure: str
    a: float | None
    b: float | None
    higher_is_better: bool

    @property
    def percent(self) -> float | None:
        if self.a is None or self.b is None or self.a == 0:
            return None
        return (self.b - self.a) / abs(self.a) * 100

    def worse_by(self) -> float:
        """How much worse B is, in percent of A (negative: better)."""
        p = self.percent
        if p is None:
            if self.a == 0 and self.b is not None and self.b > 0 and not self.higher_is_better:
                return float("inf")  # from no failures to some
            return 0.0
        return -p if self.higher_is_better else p


@dataclass(frozen=True)
class Comparison:
    changes: tuple[Change, ...]
    regressions: tuple[Change, ...]
    breaches: tuple[str, ...]
    unmatched: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def failed(self) -> bool:
        return bool(self.regressions or self.breaches)


def load(path: str) -> dict[str, Any]:
    """A result file written by ``bench --json``; a one-line error otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BenchError(
            f"{path!r} cannot be read ({exc.strerror}); give a --json result"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise BenchError(f"{path!r} is not JSON; give a file written by `bench --json`") from None
    if not isinstance(data, dict) or data.get("format") != "ollama-ops-bench":
        raise BenchError(f"{path!r} is not a bench result; give a file written by `bench --json`")
    if data.get("version") != FORMAT_VERSION:
        raise BenchError(
            f"{path!r} has result format version {data.get('version')!r}; "
            f"this version reads {FORMAT_VERSION}: rerun the benchmark"
        )
    if not isinstance(data.get("stages"), list):
        raise BenchError(f"{path!r} has no stages list; give a file written by `bench --json`")
    return data


def _get(stage: dict[str, Any], path: str) -> float | None:
    if path == "failed_share":
        n = stage.get("requests") or 0
        return (stage.get("errors", 0) + stage.get("busy_503", 0)) / n if n else None
    cur: Any = stage
    for key in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return float(cur) if isinstance(cur, int | float) and not isinstance(cur, bool) else None


def parse_threshold(text: str) -> float:
    """``"5%"`` or ``"5"`` -> 5.0 (percent)."""
    raw = text.strip().removesuffix("%").strip()
    try:
        value = float(raw)
    except ValueError:
        raise BenchError(f"--fail-on-regression {text!r}: give a percentage, e.g. 5%") from None
    if not value >= 0:
        raise BenchError(f"--fail-on-regression {text!r}: give a percentage >= 0, e.g. 5%")
    return value


def _slo_breaches(
    label: str, stage: dict[str, Any], slo: Slo | None, min_share: float
) -> list[str]:
    if slo is None:
        return []
    share = stage.get("slo_share")
    saved = stage.get("slo_met") is not None
    if not saved or not isinstance(share, int | float):
        return [f"{label}: B has no SLO figures for {slo.describe()}; rerun B with --slo"]
    if share < min_share:
        return [
            f"{label}: {share * 100:.1f} % of B's requests met {slo.describe()}"
            f" (needs {min_share * 100:g} %)"
        ]
    return []


def compare(
    a: dict[str, Any],
    b: dict[str, Any],
    threshold: float | None = None,
    slo: Slo | None = None,
    min_share: float = 0.99,
) -> Comparison:
    by_level = {s.get("level"): s for s in a["stages"]}
    changes: list[Change] = []
    breaches: list[str] = []
    unmatched: list[str] = []
    notes: list[str] = []
    for name, doc in (("A", a), ("B", b)):
        if doc.get("partial"):
            notes.append(f"{name} is partial: {doc.get('note') or 'interrupted'}")
        for s in doc["stages"]:
            if (s.get("client") or {}).get("client_bound"):
                notes.append(
                    f"{name} was client-bound at {s.get('label')}: "
                    f"{s['client'].get('client_bound_why', '')}"
                )
    for sb in b["stages"]:
        label = str(sb.get("label"))
        sa = by_level.get(sb.get("level"))
        breaches += _slo_breaches(label, sb, slo, min_share)
        if sa is None:
            unmatched.append(label)
            continue
        for figure, path, higher in FIGURES:
            va, vb = _get(sa, path), _get(sb, path)
            if va is None and vb is None:
                continue
            changes.append(Change(label, figure, va, vb, higher))
    regressions = tuple(c for c in changes if threshold is not None and c.worse_by() > threshold)
    return Comparison(tuple(changes), regressions, tuple(breaches), tuple(unmatched), tuple(notes))


def _fmt(figure: str, v: float | None) -> str:
    if v is None:
        return "-"
    if figure.startswith(("TTFT", "TPOT", "ITL", "E2E")):
        return f"{v * 1e3:.2f} ms"
    if figure == "failed share":
        return f"{v * 100:.1f} %"
    return f"{v:,.1f}"


def render(cmp: Comparison, a_name: str, b_name: str, threshold: float | None) -> str:
    verdict = "no regression" if threshold is not None else "no threshold given"
    if cmp.regressions:
        verdict = f"{len(cmp.regressions)} regression(s) beyond {threshold:g} %"
    if cmp.breaches:
        verdict += f"; {len(cmp.breaches)} SLO breach(es)"
    lines = [f"bench compare: A={a_name} B={b_name}: {verdict}"]
    lines += [f"note: {n}" for n in cmp.notes]
    lines += [f"SLO breach: {b}" for b in cmp.breaches]
    if cmp.unmatched:
        lines.append("only in B (not compared): " + ", ".join(cmp.unmatched))
    head = f"{'stage':<22} {'figure':<14} {'A':>14} {'B':>14} {'change':>9}"
    lines += ["", head, "-" * len(head)]
    bad = {id(c) for c in cmp.regressions}
    for c in cmp.changes:
        p = c.percent
        change = "-" if p is None else f"{p:+.1f} %"
        flag = "  REGRESSION" if id(c) in bad else ""
        lines.append(
            f"{c.stage[:22]:<22} {c.figure:<14} {_fmt(c.figure, c.a):>14}"
            f" {_fmt(c.figure, c.b):>14} {change:>9}{flag}"
        )
    return "\n".join(fit(lines)) + "\n"
