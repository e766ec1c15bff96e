"""The options of ``ollama-ops bench`` (argparse only: cheap to import when the CLI starts)."""

from __future__ import annotations

import argparse

DEFAULT_URL = "http://127.0.0.1:11434"
APIS = ("ollama", "ollama-chat", "openai")  # wire.Api values
ARRIVALS = ("poisson", "constant", "gamma")  # shapes.Arrival values


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``bench`` (and its ``compare`` subcommand)."""
    p.add_argument("--model", metavar="M", help="model to benchmark (as `ollama list` names it)")
    p.add_argument("--url", metavar="URL", help=f"server (default $OLLAMA_HOST or {DEFAULT_URL})")
    p.add_argument(
        "--api",
        choices=APIS,
        default=APIS[0],
        help="ollama = /api/generate, ollama-chat = /api/chat, openai = /v1/chat/completions",
    )
    load = p.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency", metavar="N[,N...]", help="streams at once; several = a sweep"
    )
    load.add_argument("--rate", metavar="R[,R...]", help="requests/s offered; several = a sweep")
    load.add_argument(
        "--sequential",
        action="store_true",
        help="the guide's benchmark: 5 requests one at a time, its prompt (the default)",
    )
    p.add_argument(
        "--arrival",
        choices=ARRIVALS,
        default="poisson",
        help="how --rate spreads request starts (poisson)",
    )
    p.add_argument(
        "--burstiness", type=float, default=1.0, metavar="K", help="gamma shape, < 1 burstier (1)"
    )
    p.add_argument("--max-concurrency", type=int, metavar="N", help="cap in flight with --rate")
    p.add_argument(
        "--ramp-up",
        type=float,
        metavar="S",
        help="with --concurrency: start the streams over S seconds (2 ms each, at most 1 s)",
    )
    p.add_argument("--duration", type=float, metavar="S", help="seconds of sending per stage")
    p.add_argument("--requests", type=int, metavar="N", help="requests per stage")
    p.add_argument("--warmup", type=int, metavar="N", help="uncounted requests first (1)")
    p.add_argument("--prompts", metavar="FILE", help='JSONL: {"prompt": "...", "max_tokens": N}')
    p.add_argument(
        "--output-tokens",
        metavar="SPEC",
        help="tokens asked for: 128, 64-256 (uniform) or 128~32 (normal); default the model's",
    )
    p.add_argument("--slo", metavar="SPEC", help="e.g. ttft=500ms,tpot=50ms (also itl, e2e)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per request (300)")
    p.add_argument("--seed", type=int, default=0, help="for arrivals and output lengths (0)")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON (- for stdout)")
    p.add_argument("--csv", metavar="FILE", help="write one row per request")
    p.add_argument("--plot", metavar="FILE", help="write PNG plots (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    sub = p.add_subparsers(dest="bench_command", metavar="compare")
    c = sub.add_parser("compare", help="two --json results side by side; exit 1 on a regression")
    c.add_argument("a", metavar="A.json")
    c.add_argument("b", metavar="B.json")
    c.add_argument(
        "--fail-on-regression",
        metavar="PCT",
        help="exit 1 when a figure of B is worse than A's by more than PCT (e.g. 5%%)",
    )
    c.add_argument("--slo", metavar="SPEC", help="check B against this SLO (default: B's own)")
    c.add_argument(
        "--min-share",
        type=float,
        default=99.0,
        metavar="PCT",
        help="share of B's requests that must meet the SLO (99)",
    )
