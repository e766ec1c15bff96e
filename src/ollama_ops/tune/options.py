"""The options of ``ollama-ops tune`` (argparse only: cheap to import when the CLI starts)."""

from __future__ import annotations

import argparse

ALL_KV_TYPES = "f16,q8_0,q4_0"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="M", help="the model to tune for")
    p.add_argument(
        "--url", metavar="URL", help="the API to benchmark (default: the service's bind address)"
    )
    what = p.add_argument_group("what to sweep (a grid; OLLAMA_NUM_PARALLEL always)")
    what.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="values of num_parallel (default 1,2,4,8), flash_attention, kv_cache_type, "
        "context_length or max_loaded_models (or the OLLAMA_* name); repeatable",
    )
    what.add_argument(
        "--flash-attention", action="store_true", help="sweep OLLAMA_FLASH_ATTENTION 0 and 1"
    )
    what.add_argument(
        "--kv-cache-type",
        nargs="?",
        const=ALL_KV_TYPES,
        metavar="T[,T...]",
        help=f"sweep OLLAMA_KV_CACHE_TYPE ({ALL_KV_TYPES} when no list is given)",
    )
    what.add_argument("--context-length", metavar="N[,N...]", help="sweep OLLAMA_CONTEXT_LENGTH")
    what.add_argument(
        "--max-loaded-models", metavar="N[,N...]", help="sweep OLLAMA_MAX_LOADED_MODELS"
    )
    how = p.add_argument_group("how each setting is measured")
    load = how.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="streams at once (default: the largest num_parallel swept)",
    )
    load.add_argument("--rate", type=float, metavar="R", help="requests/s offered (Poisson)")
    how.add_argument(
        "--duration", type=float, default=30.0, metavar="S", help="seconds per setting (30)"
    )
    how.add_argument(
        "--warmup", type=int, metavar="N", help="uncounted requests first (default: the streams)"
    )
    how.add_argument(
        "--output-tokens", metavar="SPEC", help="tokens asked for: 128, 64-256 or 128~32"
    )
    how.add_argument("--slo", metavar="SPEC", help="e.g. ttft=500ms,tpot=50ms (also itl, e2e)")
    how.add_argument(
        "--min-share",
        type=float,
        default=99.0,
        metavar="PCT",
        help="share of requests that must succeed and meet the SLO (99)",
    )
    p.add_argument(
        "--yes", action="store_true", help="write the winner to the config without asking"
    )
    p.add_argument("--json", metavar="FILE", help="write the results as JSON (- for stdout)")
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to wait for the API after each restart (60)",
    )
