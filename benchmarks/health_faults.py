"""Each simulator fault against ollama-ops' supervisor and against the seed guide's timer.

One Debian 12 container (systemd 252, tests/systemd/nspawn.py), the simulator as
ollama.service under ollama-ops' plan (the same unit for both designs, its
ExecStartPost= wait included), then for each design in turn and each fault in
turn: a clean start, the fault, and the clock running until the design acts
and a one-token generation answers again (or the observation cap passes).

* supervisor: `[watch] enabled = true`, the defaults except a 30 s start-up
  grace (the default 90 s would only lengthen the benchmark between faults).
* guide: its script and timer as printed (OnCalendar=*:0/2, Persistent=true,
  systemd's default AccuracySec=1min, GET /api/tags with a 10 s limit, restart
  after one failure), with python3's urllib in place of curl and 127.0.0.1 in
  place of localhost, which Debian's minimal container lacks; the supervisor is
  moved out of the way meanwhile.

Reported per fault and design: when the design first acted (detection), when a
generation answered again (recovery), and actions taken where none were due
(false actions) or in total (the never-clearing fault). Times are CLOCK_MONOTONIC
seconds after the fault, one run each (the guide's depend on where in its 2-minute
cycle the fault falls). Needs root, systemd-nspawn and debootstrap.

    PYTHONPATH=src .venv/bin/python benchmarks/health_faults.py [--faults hang,gpu-lost] [--cap 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.systemd.health_env import (  # noqa: E402
    API,
    BASE_CONFIG,
    UNIT,
    WATCH,
    api_up,
    cpu_seconds,
    fault,
    hang_each_new_process,
    load_model,
    main_pid,
    records,
    rss_kib,
    setup,
    signal,
    start_load,
)
from tests.systemd.nspawn import Container, ContainerError  # noqa: E402

MODEL = "qwen2.5:0.5b"
GUIDE_TAG = "ollama-healthcheck"
GUIDE_SCRIPT = """\
#!/bin/bash
# /opt/ollama/healthcheck.sh - the seed guide's health check; curl replaced by python3's urllib
# and localhost by 127.0.0.1 (the minimal container has neither curl nor a hosts entry)
OLLAMA_API="http://127.0.0.1:11434"
MAX_RESPONSE_TIME=10
LOG_TAG="ollama-healthcheck"

http_code() {
  python3 - "$1" "$MAX_RESPONSE_TIME" <<'EOF'
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except Exception:
    print("000")
EOF
}

# Check 1: API responds
HTTP_CODE=$(http_code "$OLLAMA_API/api/tags")
if [ "$HTTP_CODE" != "200" ]; then
  logger -t "$LOG_TAG" "FAIL: API returned HTTP $HTTP_CODE"
  systemctl restart ollama
  logger -t "$LOG_TAG" "Triggered restart due to API failure"
  exit 1
fi

# Check 3: GPU is accessible (NVIDIA specific)
if command -v nvidia-smi >/dev/null; then
  if ! nvidia-smi >/dev/null 2>&1; then
    logger -t "$LOG_TAG" "FAIL: GPU not accessible"
    systemctl restart ollama
    logger -t "$LOG_TAG" "Triggered restart due to GPU failure"
    exit 1
  fi
fi

logger -t "$LOG_TAG" "OK: API healthy"
exit 0
"""
GUIDE_TIMER = """\
[Unit]
Description=Ollama Health Check Timer

[Timer]
OnCalendar=*:0/2
Persistent=true

[Install]
WantedBy=timers.target
"""
GUIDE_SERVICE = """\
[Unit]
Description=Ollama Health Check

[Service]
Type=oneshot
ExecStart=/opt/ollama/healthcheck.sh
"""
CONFIG = BASE_CONFIG + "startup_grace = 30\n"
WATCH_PATH = f"/etc/systemd/system/{WATCH}"
PARKED = "/root/ollama-ops-watch.service.parked"


@dataclass
class Outcome:
    detected: float | None = None
    recovered: float | None = None
    actions: int = 0
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)


class Design:
    name = ""

    def __init__(self, c: Container) -> None:
        self.c = c

    def activate(self) -> None: ...

    def actions(self, since: float) -> list[float]:
        raise NotImplementedError


class Supervisor(Design):
    name = "supervisor"

    def activate(self) -> None:
        c = self.c
        c.systemctl("disable", "--now", "ollama-healthcheck.timer", check=False)
        if c.exists(PARKED):
            c.exec(["mv", PARKED, WATCH_PATH])
            c.systemctl("daemon-reload")
        c.systemctl("restart", WATCH)
        c.wait_active(WATCH, timeout=60)

    def actions(self, since: float) -> list[float]:
        return [float(r["at"]) for r in records(self.c, "act", since)]


class Guide(Design):
    name = "guide timer"

    def activate(self) -> None:
        c = self.c
        # Out of the way entirely: ollama.service's Wants= would start it again on a restart,
        # and a runtime mask does not beat a unit file in /etc.
        c.systemctl("stop", WATCH)
        c.exec(["mv", WATCH_PATH, PARKED])
        c.write_file("/opt/ollama/healthcheck.sh", GUIDE_SCRIPT, mode=0o755)
        c.write_file("/etc/systemd/system/ollama-healthcheck.service", GUIDE_SERVICE)
        c.write_file("/etc/systemd/system/ollama-healthcheck.timer", GUIDE_TIMER)
        c.systemctl("daemon-reload")
        c.systemctl("enable", "--now", "ollama-healthcheck.timer")

    def actions(self, since: float) -> list[float]:
        out = self.c.exec(
            ["journalctl", "-t", GUIDE_TAG, "-o", "json", "--no-pager", "-q"], check=False
        ).stdout
        found = []
        for line in out.splitlines():
            rec = json.loads(line)
            at = int(rec["__MONOTONIC_TIMESTAMP"]) / 1e6
            if at >= since and str(rec.get("MESSAGE", "")).startswith("FAIL"):
                found.append(at)
        return found


def generation_ok(c: Container) -> bool:
    body = json.dumps(
        {"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    )
    try:
        return c.http("POST", API + "/api/generate", body=body, timeout=5).status == 200
    except ContainerError:
        return False


def clean_start(c: Container, d: Design, grace: float = 31.0) -> None:
    """A fresh ollama.service with the model loaded, up longer than the start-up grace,
    and a fresh supervisor (each fault is measured on its own, as the guide's timer is)."""
    c.systemctl("reset-failed", UNIT, check=False)  # the benchmark's own restarts count too
    c.systemctl("restart", UNIT, timeout=180)
    c.wait_active(UNIT, timeout=120)
    load_model(c, MODEL)
    if isinstance(d, Supervisor):
        c.systemctl("restart", WATCH)
        c.wait_active(WATCH, timeout=60)
    time.sleep(grace)


def watch(
    c: Container,
    d: Design,
    began: float,
    cap: float,
    *,
    tick: Callable[[], None] = lambda: None,
    need_recovery: bool = True,
) -> Outcome:
    """Poll until the design acted and a generation answers again, or ``cap`` passes."""
    out = Outcome()
    while time.monotonic() - began < cap:
        tick()
        acts = d.actions(began)
        if acts and out.detected is None:
            out.detected = acts[0] - began
        if out.detected is not None and need_recovery and generation_ok(c):
            out.recovered = time.monotonic() - began
            break
        time.sleep(0.5)
    out.actions = len(d.actions(began))
    if isinstance(d, Supervisor):
        out.extra["acts"] = ", ".join(
            f"{r['OLLAMA_OPS_ACTION']} at {float(r['at']) - began:.0f}s"
            for r in records(c, "act", began)
        )
    return out


def cleared_if_unrecovered(c: Container, out: Outcome) -> Outcome:
    """A fault the design never recovered from is cleared by hand, so the next one starts clean."""
    if out.recovered is None and api_up(c):
        fault(c, clear=("*",))
        out.note = "never detected; fault cleared by hand"
    return out


def run_hang(c: Container, d: Design, cap: float) -> Outcome:
    clean_start(c, d)
    began = time.monotonic()
    signal(c, main_pid(c), "USR1")
    return watch(c, d, began, cap)


def run_generate_hang(c: Container, d: Design, cap: float, streams: int = 0) -> Outcome:
    clean_start(c, d)
    load = start_load(c, MODEL, streams=streams, seconds=cap, tokens=64) if streams else None
    try:
        time.sleep(3 if streams else 0.1)
        began = time.monotonic()
        fault(c, "generate-hang")
        out = watch(c, d, began, cap)
    finally:
        if load is not None:
            load.stop()
    return cleared_if_unrecovered(c, out)


def run_gpu_lost(c: Container, d: Design, cap: float) -> Outcome:
    clean_start(c, d)
    began = time.monotonic()
    fault(c, "gpu-lost")
    last = [0.0]

    def client() -> None:  # traffic keeps coming: each load fails with a CUDA error
        if time.monotonic() - last[0] > 2:
            last[0] = time.monotonic()
            body = json.dumps({"model": "llama3.2:1b", "prompt": "x"})
            with contextlib.suppress(ContainerError):
                c.http("POST", API + "/api/generate", body=body, timeout=5)

    out = watch(c, d, began, cap, tick=client)
    return cleared_if_unrecovered(c, out)


def run_stuck_unload(c: Container, d: Design, cap: float) -> Outcome:
    clean_start(c, d)
    began = time.monotonic()
    fault(c, "stuck-unload")  # the loaded model is told to unload, and never does
    out = watch(c, d, began, cap)
    return cleared_if_unrecovered(c, out)


def run_load_flood(c: Container, d: Design, seconds: float = 60.0) -> Outcome:
    clean_start(c, d)
    began = time.monotonic()
    fault(c, f"slow-load:{seconds:g}")
    load = start_load(c, "llama3.2:1b", streams=256, seconds=seconds, tokens=8)
    result = load.result(timeout=seconds + 240)
    fault(c, clear=("*",))
    out = Outcome(actions=len(d.actions(began)))
    out.extra = {"503s": result["statuses"].get("503", 0), "completed": result["completed"]}
    out.note = f"{out.extra['503s']} answers 503, {out.extra['completed']} completed"
    return out


def run_never_clearing(c: Container, d: Design, seconds: float) -> Outcome:
    clean_start(c, d)
    began = time.monotonic()
    hung: set[int] = set()

    out = watch(
        c, d, began, seconds, tick=lambda: hang_each_new_process(c, hung), need_recovery=False
    )
    gave_up = bool(records(c, "give_up", began)) if isinstance(d, Supervisor) else False
    out.note = f"{len(hung)} hung processes; gave up: {'yes' if gave_up else 'no'}"
    signal(c, main_pid(c), "USR2")
    return out


def idle_cost(c: Container, d: Design, seconds: float = 60.0) -> Outcome:
    clean_start(c, d, grace=5)
    cpu0 = {u: cpu_seconds(c, u) for u in (WATCH, UNIT)} if isinstance(d, Supervisor) else {}
    ollama0 = cpu_seconds(c, UNIT)
    time.sleep(seconds)
    out = Outcome()
    ollama = (cpu_seconds(c, UNIT) - ollama0) / seconds * 100
    if isinstance(d, Supervisor):
        own = (cpu_seconds(c, WATCH) - cpu0[WATCH]) / seconds * 100
        out.note = f"supervisor {own:.2f}% of a core, {rss_kib(c, WATCH) / 1024:.0f} MiB RSS; "
    out.note += f"ollama.service {ollama:.2f}% of a core"
    return out


FAULTS: dict[str, Callable[[Container, Design, float], Outcome]] = {
    "hang": run_hang,
    "generate-hang idle": run_generate_hang,
    "generate-hang, 8 streams": lambda c, d, cap: run_generate_hang(c, d, cap, streams=8),
    "gpu-lost": run_gpu_lost,
    "stuck-unload": run_stuck_unload,
    "60 s load + 256 streams of 503s": lambda c, d, cap: run_load_flood(c, d),
    "never-clearing hang (300 s)": lambda c, d, cap: run_never_clearing(c, d, 300.0),
    "idle cost (60 s)": lambda c, d, cap: idle_cost(c, d),
}


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--faults", help="comma-separated subset (default: all): " + ", ".join(FAULTS)
    )
    parser.add_argument(
        "--cap", type=float, default=200.0, help="observation cap per fault (200 s)"
    )
    args = parser.parse_args()
    chosen = [
        f for f in FAULTS if not args.faults or any(p.strip() in f for p in args.faults.split(","))
    ]
    rows: list[tuple[str, str, Outcome]] = []
    with Container("bookworm") as c:
        setup(c, CONFIG)
        for design in (Supervisor(c), Guide(c)):
            design.activate()
            for name in chosen:
                t0 = time.monotonic()
                outcome = FAULTS[name](c, design, args.cap)
                rows.append((name, design.name, outcome))
                print(
                    f"{name:<34} {design.name:<11} detected {fmt(outcome.detected):>7} "
                    f"recovered {fmt(outcome.recovered):>7} actions {outcome.actions} "
                    f"{outcome.note} {outcome.extra.get('acts', '')} ({time.monotonic() - t0:.0f}s)",
                    flush=True,
                )
    print("\n| fault | design | detected after | generation back after | actions | note |")
    print("|---|---|---|---|---|---|")
    for name, design_name, o in rows:
        print(
            f"| {name} | {design_name} | {fmt(o.detected)} | {fmt(o.recovered)} | {o.actions} | {o.note} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
