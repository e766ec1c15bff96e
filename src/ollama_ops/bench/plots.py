"""PNG plots (matplotlib, Agg): throughput and latency against the load, latency CDFs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import BenchError
from .stats import cdf
from .summary import RunSummary


def write_png(summary: RunSummary, path: str) -> None:
    """Four panels: tokens/s and req/s vs load, TTFT/TPOT p50/p99 vs load, TTFT and ITL CDFs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError(
            "--plot needs matplotlib; install it (pip install matplotlib) or drop --plot"
        ) from None
    stages = summary.stages
    result = summary.result
    xlabel = "concurrent streams" if result.shape.kind == "concurrency" else "requests/s offered"
    x = [s.level for s in stages]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax = axes[0][0]
    ax.plot(x, [s.output_tokens_per_s for s in stages], "o-", label="output tok/s (server)")
    ax.plot(x, [s.chunks_per_s for s in stages], "x--", label="chunks/s (client)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("tokens/s")
    ax2 = ax.twinx()
    ax2.plot(x, [s.req_per_s for s in stages], "s:", color="grey", label="requests/s")
    ax2.set_ylabel("requests/s")
    handles = ax.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize=8)
    ax.set_title("throughput")
    ax = axes[0][1]
    for name, attr, style in (("TTFT", "ttft", "o"), ("TPOT", "tpot", "s")):
        for q, line in (("median", "-"), ("p99", "--")):
            ys = [getattr(getattr(s, attr), q) * 1e3 if getattr(s, attr) else None for s in stages]
            ax.plot(
                x,
                [y if y is not None else float("nan") for y in ys],
                style + line,
                label=f"{name} {q}",
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("latency")
    ttft: list[tuple[str, list[float]]] = []
    itl: list[tuple[str, list[float]]] = []
    for st in result.stages:
        timed = [r for r in st.records if r.ok and not r.waited_for_load]
        ttft.append((st.stage.label, [r.ttft * 1e3 for r in timed if r.ttft is not None]))
        itl.append((st.stage.label, [g * 1e3 for r in timed for g in r.gaps()]))
    _cdf_panel(axes[1][0], "TTFT CDF", ttft)
    _cdf_panel(axes[1][1], "ITL CDF (every gap)", itl)
    t = result.target
    fig.suptitle(f"{t.model} at {t.url} ({t.api.path})" + ("  [PARTIAL]" if result.partial else ""))
    fig.tight_layout()
    try:
        fig.savefig(Path(path), format="png", dpi=100)
    except OSError as exc:
        raise BenchError(f"--plot {path!r} cannot be written ({exc.strerror})") from None
    finally:
        plt.close(fig)


def _cdf_panel(ax: Any, title: str, series: list[tuple[str, list[float]]]) -> None:
    for label, values in series:
        xs, ys = cdf(values)
        if xs:
            ax.step(xs, ys, where="post", label=label)
    ax.set_xlabel("ms")
    ax.set_ylabel("share of values <= x")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if 0 < len(series) <= 8:
        ax.legend(fontsize=8)
