"""The tune's report (pure): the verdict first, a row per setting, why each other one lost;
and its ``--json`` twin. Every line fits 100 columns."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ollama_ops.bench.slo import Slo

from .pick import Measurement, Verdict, fmt_s
from .plan import SweepPlan

WIDTH = 100
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Context:
    """What was tuned, and how it was measured (for the headline and the JSON)."""

    model: str
    url: str
    load: str  # e.g. "concurrency 8 for 30 s"
    slo: Slo | None
    min_share: float
    config_path: str


def _wrap(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ")


def _tps(m: Measurement) -> str:
    return f"{m.figures.tokens_per_s:,.1f}" if m.figures is not None else "-"


def _share(m: Measurement, slo: Slo | None) -> str:
    f = m.figures
    if f is None:
        return "-"
    share = f.slo_share if slo is not None else f.ok_share
    return f"{(share or 0.0) * 100:.0f}%"


def headline(
    plan: SweepPlan, done: Sequence[Measurement], verdict: Verdict, ctx: Context
) -> list[str]:
    if verdict.winner is None:
        return [f"tune: no setting of {len(done)} qualified; the configuration stays as it was"]
    best = done[verdict.winner]
    f = best.figures
    assert f is not None
    met = f" and {_share(best, ctx.slo)} met {ctx.slo.describe()}" if ctx.slo else ""
    if best.setting == plan.current:
        return [
            f"tune: the current setting is the best: {best.setting.label()}, "
            f"{f.tokens_per_s:,.1f} tokens/s{met}; nothing to change"
        ]
    lines = [f"tune: best is {best.setting.label()}: {f.tokens_per_s:,.1f} tokens/s{met}"]
    now = next((m for m in done if m.setting == plan.current), None)
    if now is not None and now.figures is not None and now.figures.tokens_per_s > 0:
        gain = f.tokens_per_s / now.figures.tokens_per_s - 1
        lines.append(
            f"vs now ({now.setting.label()}): {now.figures.tokens_per_s:,.1f} tokens/s, "
            f"{gain * 100:+.0f}%"
        )
    return lines


def table(
    plan: SweepPlan, done: Sequence[Measurement], verdict: Verdict, slo: Slo | None
) -> list[str]:
    width = max([len("setting"), *(len(m.setting.label()) + 6 for m in done)])
    width = min(width, 44)
    met = "SLO met" if slo is not None else "ok"
    head = (
        f"{'setting':<{width}} {'tokens/s':>10} {'req/s':>7} {'TTFT p50':>9} "
        f"{'TTFT p99':>9} {'TPOT p99':>9} {met:>7}"
    )
    lines = [head]
    for i, m in enumerate(done):
        mark = " *" if i == verdict.winner else ""
        label = m.setting.label() + (" (now)" if m.setting == plan.current else "") + mark
        if len(label) > width:
            label = label[: width - 1] + "~"
        f = m.figures
        if f is None:
            lines.append(f"{label:<{width}} {'-':>10} {'failed':>7}")
            continue
        lines.append(
            f"{label:<{width}} {_tps(m):>10} {f.req_per_s:>7.2f} {fmt_s(f.ttft_p50):>9} "
            f"{fmt_s(f.ttft_p99):>9} {fmt_s(f.tpot_p99):>9} {_share(m, slo):>7}"
        )
    return lines


def render(
    plan: SweepPlan, done: Sequence[Measurement], verdict: Verdict, ctx: Context, final: str
) -> str:
    """The text report: verdict, table, why the others lost, notes, what was done."""
    lines = [w for line in headline(plan, done, verdict, ctx) for w in _wrap(line, "")]
    slo = f", SLO {ctx.slo.describe()} for {ctx.min_share * 100:g}% of requests" if ctx.slo else ""
    lines += _wrap(f"model {ctx.model} at {ctx.url}, {ctx.load}{slo}", "")
    lines.append("")
    lines += table(plan, done, verdict, ctx.slo)
    lost = [(m, why) for m, why in zip(done, verdict.why_lost, strict=True) if why]
    if lost:
        lines.append("why the others lost:" if verdict.winner is not None else "why each lost:")
        for m, why in lost:
            lines += _wrap(f"{m.setting.label()}: {why}")
    for skipped in plan.skipped:
        lines += _wrap(f"not measured: {skipped}")
    for note in verdict.notes:
        lines += _wrap(f"note: {note}", "")
    for m in done:
        if m.figures is not None and m.figures.load_waits:
            lines += _wrap(
                f"note: {m.setting.label()}: {m.figures.load_waits} request(s) waited for a "
                "model load during the run (left out of its latencies)",
                "",
            )
    if final:
        lines += _wrap(final, "")
    return "\n".join(lines) + "\n"


def _figures(m: Measurement) -> dict[str, Any] | None:
    f = m.figures
    if f is None:
        return None
    return {
        "requests": f.requests,
        "ok": f.ok,
        "errors": f.errors,
        "busy_503": f.busy,
        "output_tokens_per_s": f.tokens_per_s,
        "request_throughput_per_s": f.req_per_s,
        "ttft_p50_s": f.ttft_p50,
        "ttft_p99_s": f.ttft_p99,
        "tpot_p50_s": f.tpot_p50,
        "tpot_p99_s": f.tpot_p99,
        "itl_p99_s": f.itl_p99,
        "e2e_p99_s": f.e2e_p99,
        "slo_met": f.slo_met,
        "slo_share": f.slo_share,
        "top_error": f.top_error,
        "client_bound": f.client_bound,
        "model_load_waits": f.load_waits,
    }


def to_json(
    plan: SweepPlan,
    done: Sequence[Measurement],
    verdict: Verdict | None,
    ctx: Context,
    *,
    kept: bool,
    final: str,
    partial: bool,
) -> dict[str, Any]:
    rows = []
    for i, m in enumerate(done):
        rows.append(
            {
                "setting": dict(m.setting.values),
                "label": m.setting.label(),
                "current": m.setting == plan.current,
                "applied": m.note,
                "measure_s": m.seconds,
                "failure": m.failure or None,
                "figures": _figures(m),
                "winner": verdict is not None and i == verdict.winner,
                "why_lost": (verdict.why_lost[i] or None) if verdict is not None else None,
            }
        )
    winner = (
        dict(done[verdict.winner].setting.values)
        if verdict is not None and verdict.winner is not None
        else None
    )
    return {
        "format": "ollama-ops-tune",
        "version": FORMAT_VERSION,
        "partial": partial,
        "model": ctx.model,
        "url": ctx.url,
        "load": ctx.load,
        "slo": ctx.slo.to_json() if ctx.slo else None,
        "min_share": ctx.min_share,
        "planned": [dict(s.values) for s in plan.settings],
        "current": dict(plan.current.values),
        "skipped": list(plan.skipped),
        "settings": rows,
        "winner": winner,
        "notes": list(verdict.notes) if verdict is not None else [],
        "kept": kept,
        "config": ctx.config_path,
        "outcome": final,
    }
