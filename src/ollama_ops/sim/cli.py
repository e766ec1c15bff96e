"""``ollama``-shaped command line: ``serve`` and ``--version``.

    ollama serve [--profile FILE] [--fault NAME[:ARG]]... [--control]
                 [--queue-mode ollama|strict] [--registry URL]
                 [--runner-wording llama-runner|llama-server]
    ollama --version | -v
    python -m ollama_ops.sim serve ...

Simulator options also come from the environment (flags win):
OLLAMA_SIM_PROFILE, OLLAMA_SIM_FAULTS (comma list), OLLAMA_SIM_CONTROL (bool),
OLLAMA_SIM_QUEUE_MODE, OLLAMA_SIM_SIGUSR1_FAULTS (comma list, default "hang"),
OLLAMA_SIM_REGISTRY (the registry /api/pull uses, e.g. http://127.0.0.1:5000),
OLLAMA_SIM_RUNNER_WORDING (llama-runner, or llama-server as Ollama >= 0.30 logs).
Everything else is Ollama's own OLLAMA_* environment.

Exit status: 0 after SIGTERM/SIGINT, 1 when ``serve`` cannot start (printed
as ``Error: ...`` on stderr, like Ollama), 2 for a usage error or the
``crash`` fault.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from . import VERSION
from .envconfig import env_bool, env_host, format_go_duration, read_server_env, var
from .faults import FaultError, parse_fault, parse_fault_list
from .logs import Logger, human_bytes2
from .profile import ProfileError, load_profile
from .server import SimConfig, SimServer
from .system import (
    ServeError,
    ensure_keypair,
    ensure_models_dir,
    home_dir,
    listen_socket,
    new_event_loop,
    read_meminfo,
    reduce_timer_slack,
)

USAGE = """Large language model runner (ollama-ops simulator)

Usage:
  ollama [flags]
  ollama [command]

Available Commands:
  serve       Start ollama (simulated)

Flags:
  -h, --help      help for ollama
  -v, --version   Show version information
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ollama serve",
        description="Start the ollama-ops Ollama simulator.",
    )
    p.add_argument("--profile", help="model/hardware profile JSON (env OLLAMA_SIM_PROFILE)")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME[:ARG]",
        help="inject a fault at start; repeatable (env OLLAMA_SIM_FAULTS, comma list)",
    )
    p.add_argument(
        "--control",
        action="store_true",
        default=None,
        help="enable the /_sim control API (env OLLAMA_SIM_CONTROL)",
    )
    p.add_argument(
        "--queue-mode",
        choices=("ollama", "strict"),
        help="ollama: OLLAMA_MAX_QUEUE bounds the scheduler queue only, as in Ollama; "
        "strict: it also bounds requests waiting for a slot (env OLLAMA_SIM_QUEUE_MODE)",
    )
    p.add_argument(
        "--registry",
        metavar="URL",
        help="the registry /api/pull fetches from, e.g. http://127.0.0.1:5000 as served by "
        "python -m ollama_ops.sim.registry (env OLLAMA_SIM_REGISTRY; default: none, "
        "pulls fail)",
    )
    p.add_argument(
        "--runner-wording",
        choices=("llama-runner", "llama-server"),
        help='model-load log lines say "llama runner" (Ollama before 0.30, the default) or '
        '"llama-server" (0.30 and later) (env OLLAMA_SIM_RUNNER_WORDING)',
    )
    return p


def _registry_url(value: str) -> str | None:
    """An http(s) base URL, or None when empty. Raises ServeError."""
    if not value:
        return None
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ServeError(
            f"OLLAMA_SIM_REGISTRY must be an http:// or https:// URL such as "
            f"http://127.0.0.1:5000, not {value!r}"
        )
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ServeError(f"OLLAMA_SIM_REGISTRY has an invalid port: {value!r}") from None
    return value.rstrip("/")


def build_config(args: argparse.Namespace, env: Mapping[str, str], log: Logger) -> SimConfig:
    """Flags over OLLAMA_SIM_* over defaults. Raises ServeError."""
    profile_path = args.profile or var(env, "OLLAMA_SIM_PROFILE") or None
    try:
        profile = load_profile(profile_path)
    except ProfileError as e:
        raise ServeError(str(e)) from None
    try:
        faults = parse_fault_list(var(env, "OLLAMA_SIM_FAULTS"))
        faults += [parse_fault(s) for s in args.fault]
        usr1 = var(env, "OLLAMA_SIM_SIGUSR1_FAULTS") or "hang"
        for name, _ in parse_fault_list(usr1):
            del name
    except FaultError as e:
        raise ServeError(str(e)) from None
    mode = args.queue_mode or var(env, "OLLAMA_SIM_QUEUE_MODE") or "ollama"
    if mode not in ("ollama", "strict"):
        raise ServeError(f'OLLAMA_SIM_QUEUE_MODE must be "ollama" or "strict", not {mode!r}')
    control = args.control if args.control is not None else env_bool(env, "OLLAMA_SIM_CONTROL")
    registry = _registry_url(args.registry or var(env, "OLLAMA_SIM_REGISTRY"))
    wording = args.runner_wording or var(env, "OLLAMA_SIM_RUNNER_WORDING") or "llama-runner"
    if wording not in ("llama-runner", "llama-server"):
        raise ServeError(
            f'OLLAMA_SIM_RUNNER_WORDING must be "llama-runner" or "llama-server", not {wording!r}'
        )
    home = env.get("HOME") or None

    def warn(msg: str, attrs: dict[str, object]) -> None:
        log.warn(msg, src="config.go:40", **attrs)

    server_env = read_server_env(env, home, warn)
    return SimConfig(
        env=server_env,
        profile=profile,
        faults=faults,
        control=bool(control),
        queue_mode=mode,
        sigusr1_faults=[s for s in usr1.split(",") if s.strip()],
        registry=registry,
        runner_wording=wording,
    )


#: OLLAMA_ORIGINS' built-in list, printed after the operator's own origins.
DEFAULT_ORIGINS = (
    "http://localhost https://localhost http://localhost:* https://localhost:* "
    "http://127.0.0.1 https://127.0.0.1 http://127.0.0.1:* https://127.0.0.1:* "
    "http://0.0.0.0 https://0.0.0.0 http://0.0.0.0:* https://0.0.0.0:* "
    "app://* file://* tauri://* vscode-webview://* vscode-file://*"
)


def _server_config_line(env: Mapping[str, str], config: SimConfig) -> str:
    """envconfig.AsMap printed with %v: ``map[KEY:value ...]``, keys in byte order."""
    e = config.env
    origins = " ".join([o.strip() for o in var(env, "OLLAMA_ORIGINS").split(",") if o.strip()])
    items: dict[str, object] = {
        "OLLAMA_CONTEXT_LENGTH": e.context_length,
        "OLLAMA_DEBUG": "DEBUG" if e.debug else "INFO",
        "OLLAMA_FLASH_ATTENTION": env_bool(env, "OLLAMA_FLASH_ATTENTION"),
        "OLLAMA_GPU_OVERHEAD": var(env, "OLLAMA_GPU_OVERHEAD") or 0,
        "OLLAMA_HOST": e.host.url,
        "OLLAMA_INTEL_GPU": env_bool(env, "OLLAMA_INTEL_GPU"),
        "OLLAMA_KEEP_ALIVE": format_go_duration(e.keep_alive),
        "OLLAMA_KV_CACHE_TYPE": var(env, "OLLAMA_KV_CACHE_TYPE"),
        "OLLAMA_LLM_LIBRARY": var(env, "OLLAMA_LLM_LIBRARY"),
        "OLLAMA_LOAD_TIMEOUT": format_go_duration(e.load_timeout),
        "OLLAMA_MAX_LOADED_MODELS": e.max_loaded_models,
        "OLLAMA_MAX_QUEUE": e.max_queue,
        "OLLAMA_MODELS": e.models,
        "OLLAMA_MULTIUSER_CACHE": env_bool(env, "OLLAMA_MULTIUSER_CACHE"),
        "OLLAMA_NEW_ENGINE": env_bool(env, "OLLAMA_NEW_ENGINE"),
        "OLLAMA_NOHISTORY": env_bool(env, "OLLAMA_NOHISTORY"),
        "OLLAMA_NOPRUNE": e.noprune,
        "OLLAMA_NUM_PARALLEL": e.num_parallel,
        "OLLAMA_ORIGINS": "[" + (origins + " " if origins else "") + DEFAULT_ORIGINS + "]",
        "OLLAMA_SCHED_SPREAD": env_bool(env, "OLLAMA_SCHED_SPREAD"),
        "OLLAMA_SIM_PROFILE": config.profile.source,
        "OLLAMA_SIM_QUEUE_MODE": config.queue_mode,
        "OLLAMA_SIM_REGISTRY": config.registry or "",
        "OLLAMA_SIM_RUNNER_WORDING": config.runner_wording,
    }
    for key in (
        "CUDA_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL",
        "HIP_VISIBLE_DEVICES",
        "HSA_OVERRIDE_GFX_VERSION",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "ROCR_VISIBLE_DEVICES",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ):
        items[key] = var(env, key)

    def show(v: object) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    return "map[" + " ".join(f"{k}:{show(v)}" for k, v in sorted(items.items())) + "]"


def _log_hardware(log: Logger, config: SimConfig) -> None:
    log.info("looking for compatible GPUs", src="gpu.go:217")
    try:
        mem = read_meminfo()
        total = mem["MemTotal"]
        avail = mem.get("MemAvailable", mem.get("MemFree", 0))
        log.info(
            "system memory",
            src="types.go:60",
            total=human_bytes2(total),
            free=human_bytes2(avail),
            free_swap=human_bytes2(mem.get("SwapFree", 0)),
        )
    except OSError as e:
        total = avail = 0
        log.warn(
            "failed to read system memory",
            src="cpu_linux.go:20",
            error=f"open /proc/meminfo: {e.strerror or e}",
        )
    gpus = config.profile.gpus
    if gpus and any(name == "gpu-lost" for name, _ in config.faults):
        # What a GPU gone after suspend looks like at start: cudart fails, CPU only.
        log.debug(
            "Unable to load cudart",
            src="gpu.go:533",
            library="/usr/lib/ollama/cuda_v12/libcudart.so.12.8.90",
            error="cudart init failure: 999",
        )
        gpus = ()
    if not gpus:
        log.info("no compatible GPUs were discovered", src="gpu.go:377")
        log.info(
            "inference compute",
            src="types.go:130",
            id="0",
            library="cpu",
            variant="",
            compute="",
            driver="0.0",
            name="",
            total=human_bytes2(total),
            available=human_bytes2(avail),
        )
    for g in gpus:
        log.info(
            "inference compute",
            src="types.go:130",
            id=g.id,
            library=g.library,
            variant="v12",
            compute="8.9",
            driver="12.8",
            name=g.name,
            total=human_bytes2(g.vram_bytes),
            available=human_bytes2(int(g.vram_bytes * 0.98)),
        )


async def _serve(config: SimConfig, log: Logger, env: Mapping[str, str]) -> int:
    host = config.env.host
    sock = listen_socket(host.host, host.port)
    log.info("server config", src="routes.go:1318", env=_server_config_line(env, config))
    blobs = ensure_models_dir(config.env.models)
    log.info(f"total blobs: {blobs}", src="images.go:463")
    log.info("total unused blobs removed: 0", src="images.go:470")
    server = SimServer(config, log, install_signals=True)
    await server.start(sock)
    shown = sock.getsockname()
    where = f"[{shown[0]}]:{shown[1]}" if ":" in str(shown[0]) else f"{shown[0]}:{shown[1]}"
    log.info(f"Listening on {where} (version {VERSION})", src="routes.go:1369")
    _log_hardware(log, config)
    sched = server.sched
    assert sched is not None
    log.info(
        "vram-based default context",
        src="routes.go:1410",
        total_vram=human_bytes2(config.profile.total_vram),
        default_num_ctx=sched.default_num_ctx,
    )
    previous = _install_signals(server, config)
    # Start-up objects are long-lived: keep them out of the collector's way so
    # that full collections stay short while thousands of tokens are in flight.
    gc.collect()
    gc.freeze()
    try:
        await server.wait_stopped()
        await server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _install_signals(server: SimServer, config: SimConfig) -> dict[int, Any]:
    """SIGTERM/SIGINT stop, SIGUSR1 sets faults, SIGUSR2 clears them.

    Plain signal.signal handlers (not loop.add_signal_handler) so that they
    still run while the ``hang`` fault blocks the event loop. Returns the
    handlers they replace.
    """
    loop = asyncio.get_running_loop()

    def term(signum: int, frame: object) -> None:
        del signum, frame
        if server.faults.is_set("stuck-unload"):
            return  # stuck stopping a runner: only SIGKILL ends it
        server.request_stop()

    def usr1(signum: int, frame: object) -> None:
        del signum, frame
        specs = list(config.sigusr1_faults)
        loop.call_soon_threadsafe(lambda: server.faults.apply(specs, []))

    def usr2(signum: int, frame: object) -> None:
        del signum, frame
        server.release_hang()
        loop.call_soon_threadsafe(server.faults.clear_all)

    previous: dict[int, Any] = {}
    for sig, fn in (
        (signal.SIGTERM, term),
        (signal.SIGINT, term),
        (signal.SIGUSR1, usr1),
        (signal.SIGUSR2, usr2),
    ):
        previous[sig] = signal.signal(sig, fn)
    return previous


def serve(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ) if env is None else dict(env)
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as e:
        return int(e.code or 0)
    log = Logger(debug=env_bool(env, "OLLAMA_DEBUG"))
    try:
        home = home_dir(env)
        ensure_keypair(home)
        config = build_config(args, env, log)
        for name, arg in config.faults:
            if name == "slow-start":
                time.sleep(float(arg or 0.0))
        reduce_timer_slack()
        loop = new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            return loop.run_until_complete(_serve(config, log, env))
        finally:
            loop.close()
    except ServeError as e:
        sys.stdout.flush()
        sys.stderr.write(f"Error: {e}\n")
        sys.stderr.flush()
        return 1


def version(env: Mapping[str, str] | None = None) -> int:
    """``ollama -v``: ask the server, as the real client does."""
    env = dict(os.environ) if env is None else dict(env)
    host = env_host(env)
    connect = host.host
    if connect in ("", "0.0.0.0", "::"):
        connect = "127.0.0.1"
    url = f"{host.scheme}://{connect if ':' not in connect else '[' + connect + ']'}:{host.port}"
    try:
        with urllib.request.urlopen(url + "/api/version", timeout=2) as r:
            server_version = json.loads(r.read().decode()).get("version", "")
    except (OSError, ValueError, urllib.error.URLError):
        print("Warning: could not connect to a running Ollama instance")
        print(f"Warning: client version is {VERSION}")
        return 0
    print(f"ollama version is {server_version}")
    if server_version != VERSION:
        print(f"Warning: client version is {VERSION}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ollama`` script and of ``python -m ollama_ops.sim``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    if args[0] in ("-v", "--version", "version"):
        return version()
    if args[0] == "serve":
        return serve(args[1:])
    sys.stderr.write(
        f'Error: unknown command "{args[0]}" for "ollama" '
        "(the ollama-ops simulator implements serve and --version)\n"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
