"""The text report (pure): a summary first, one row per stage, then each stage's detail.

Every line fits 100 columns. Latencies are shown in milliseconds.
"""

from __future__ import annotations

import textwrap

from .stats import Dist
from .summary import RunSummary, StageSummary

WIDTH = 100


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    ms = v * 1e3
    if ms >= 10_000:
        return f"{ms / 1e3:.1f}s"
    if ms >= 100:
        return f"{ms:.0f}"
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _q(d: Dist | None, which: str) -> float | None:
    return getattr(d, which) if d is not None else None


def headline(summary: RunSummary) -> list[str]:
    r = summary.result
    t = r.target
    shape = r.shape
    stop = shape.stop
    how = []
    if stop.duration_s is not None:
        how.append(f"{stop.duration_s:g} s")
    if stop.requests is not None:
        how.append(f"{stop.requests} requests")
    lines = [
        f"ollama-ops bench: {t.model} at {t.url} ({t.api.path})",
        f"load: {shape.name}, {len(shape.stages)} stage(s) of {' or '.join(how)} each",
    ]
    if r.partial:
        lines.append(f"PARTIAL: {r.note}")
    if r.model_loaded_before is False:
        load = summary.warmup_load_s
        detail = f" (load_duration {load:.2f} s)" if load is not None else ""
        who = "the warm-up loaded it" if r.warmup else "the first requests loaded it"
        lines.append(f"model load: {t.model} was not loaded before the run; {who}{detail}")
    for s in summary.stages:
        if s.load_waits:
            lines.append(
                f"model load during the run: {s.load_waits} request(s) of {s.label} waited for"
                f" a load (up to {s.load_max_s:.2f} s); left out of their latency figures"
            )
    bound = [s for s in summary.stages if s.client.bound]
    for s in bound:
        lines.append(f"CLIENT-BOUND at {s.label}: {s.client.why}; latencies include its delays")
    total, ok, busy = summary.requests, summary.ok, summary.busy
    if total and not ok:
        what = "503 (server busy)" if busy == total else "failed"
        lines.append(f"no request succeeded: {total} {what}")
    return lines


def stage_table(summary: RunSummary) -> list[str]:
    kind = summary.result.shape.kind
    head = (
        f"{'streams' if kind == 'concurrency' else 'req/s in':>8} {'req/s':>7} {'out tok/s':>9}"
        f" {'TTFT p50':>8} {'p99':>7} {'TPOT p50':>8} {'p99':>7} {'ITL p99':>7}"
        f" {'E2E p99':>7} {'ok':>6} {'fail':>4} {'503':>4} {'SLO%':>4}"
    )
    lines = [head, "-" * len(head)]
    for s in summary.stages:
        share = s.slo_share
        lines.append(
            f"{s.level:>8g} {_num(s.req_per_s):>7} {_num(s.output_tokens_per_s):>9}"
            f" {_ms(_q(s.ttft, 'median')):>8} {_ms(_q(s.ttft, 'p99')):>7}"
            f" {_ms(_q(s.tpot, 'median')):>8} {_ms(_q(s.tpot, 'p99')):>7}"
            f" {_ms(_q(s.itl, 'p99')):>7} {_ms(_q(s.e2e, 'p99')):>7}"
            f" {s.ok:>6} {s.errors:>4} {s.busy:>4}"
            f" {'-' if share is None else f'{share * 100:.0f}':>4}"
        )
    lines.append("latencies in ms; SLO% = share of requests meeting every --slo bound")
    return lines


def stage_detail(s: StageSummary, slo: str | None) -> list[str]:
    lines = [
        f"{s.label}: {s.requests} requests in {s.wall_s:.1f} s: {s.ok} ok, {s.errors} failed,"
        f" {s.busy} got 503" + (f", {s.cut} cut" if s.cut else "")
    ]
    if s.top_error:
        lines.append(f"  most common failure: {s.top_error[: WIDTH - 24]}")
    lines.append(
        f"  throughput: {_num(s.req_per_s)} req/s; output {_num(s.output_tokens_per_s)} tok/s"
        f" (server's count), {_num(s.chunks_per_s)} chunks/s (client's count)"
    )
    lines.append(f"  prompt+output: {_num(s.total_tokens_per_s)} tok/s (server's counts)")
    if s.guide_tokens_per_s is not None:
        lines.append(
            f"  the guide's figure (eval_count / eval_duration, per request):"
            f" {_num(s.guide_tokens_per_s)} tok/s"
        )
    lines.append(f"  {'latency ms':<22} {'mean':>9} {'median':>9} {'p90':>9} {'p99':>9} {'n':>8}")
    rows = (
        ("TTFT", s.ttft),
        ("TPOT", s.tpot),
        ("ITL (every gap)", s.itl),
        ("E2E", s.e2e),
        ("server load_duration", s.load),
        ("server prompt_eval", s.prompt_eval),
        ("server eval_duration", s.eval),
    )
    for name, d in rows:
        if d is None:
            continue
        lines.append(
            f"  {name:<22} {_ms(d.mean):>9} {_ms(d.median):>9} {_ms(d.p90):>9}"
            f" {_ms(d.p99):>9} {d.n:>8}"
        )
    if slo is not None and s.slo_met is not None and s.goodput_req_per_s is not None:
        share = s.slo_share or 0.0
        lines.append(
            f"  SLO {slo}: {s.slo_met} of {s.requests} met ({share * 100:.1f} %),"
            f" goodput {_num(s.goodput_req_per_s)} req/s"
        )
    c = s.client
    per = f", {c.cpu_per_1k_tokens:.3f} CPU-s/1k tok" if c.cpu_per_1k_tokens is not None else ""
    state = f"CLIENT-BOUND ({c.why})" if c.bound else "kept up"
    lines.append(
        f"  client: {c.cpu_share:.2f} core{per}; loop lag p99 {_ms(c.lag_p99_s)} ms;"
        f" send slip p99 {_ms(c.slip_p99_s)} ms; {state}"
    )
    return lines


def render(summary: RunSummary) -> str:
    lines = headline(summary)
    if summary.stages:
        lines += ["", *stage_table(summary)]
        slo = summary.slo.describe() if summary.slo else None
        for s in summary.stages:
            lines += ["", *stage_detail(s, slo)]
    else:
        lines.append("no stage ran")
    return "\n".join(fit(lines)) + "\n"


def fit(lines: list[str]) -> list[str]:
    """Wrap lines longer than WIDTH, keeping their indentation (plus two)."""
    out: list[str] = []
    for line in lines:
        if len(line) <= WIDTH:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip()) + 2)
        out += textwrap.wrap(line, WIDTH, subsequent_indent=indent, break_on_hyphens=False)
    return out
