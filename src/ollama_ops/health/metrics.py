"""Prometheus metrics of the supervisor: one custom collector that reads state at scrape time.

Nothing is updated in the loop: the supervisor publishes one immutable
:class:`Status` per check and the collector turns the latest into metric
families when Prometheus asks (prometheus/client_python's "custom
collectors"). Names follow the Prometheus rules: base units (seconds,
bytes, ratios, celsius, watts), ``_total`` for counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ollama_ops.errors import ConfigError
from ollama_ops.health.model import Snapshot, State, Verdict
from ollama_ops.health.policy import PolicyState
from ollama_ops.health.settings import check_listen


@dataclass(frozen=True)
class Status:
    """What the supervisor knows after one check (replaced whole, never mutated)."""

    snapshot: Snapshot | None = None
    verdict: Verdict | None = None
    policy: PolicyState = field(default_factory=PolicyState)
    checks: int = 0
    probe_failures: Mapping[str, int] = field(default_factory=dict)  # probe -> failures
    actions: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (action, problem)
    log_totals: Mapping[str, int] = field(default_factory=dict)  # logscan.Kind value -> lines


class Board:
    """The latest Status; the supervisor writes, the collector reads (a reference swap)."""

    def __init__(self) -> None:
        self.status = Status()


def _gauge(
    name: str, doc: str, value: float | None, labels: Mapping[str, str] | None = None
) -> GaugeMetricFamily:
    labels = labels or {}
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    if value is not None:
        family.add_metric(list(labels.values()), value)
    return family


class HealthCollector(Collector):
    def __init__(self, board: Board) -> None:
        self.board = board

    def collect(self) -> Iterator[Metric]:
        st = self.board.status
        yield from self._health(st)
        snap = st.snapshot
        if snap is not None:
            yield from self._models(snap)
            yield from self._unit(snap)
            yield from self._gpus(snap)

    def _health(self, st: Status) -> Iterator[Metric]:
        snap, verdict = st.snapshot, st.verdict
        yield _gauge(
            "ollama_up",
            "1 when GET / answered 'Ollama is running' at the last check",
            None if snap is None else float(snap.api.live.ok),
        )
        states = GaugeMetricFamily(
            "ollama_health_verdict",
            "1 for the current verdict, 0 for the others",
            labels=["verdict"],
        )
        for state in State:
            states.add_metric([state.value], float(verdict is not None and verdict.state is state))
        yield states
        yield _gauge(
            "ollama_health_status",
            "monitoring-plugin status of the last check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
            None if verdict is None else float(int(verdict.status)),
        )
        latency = GaugeMetricFamily(
            "ollama_probe_duration_seconds", "duration of the last probe", labels=["probe"]
        )
        if snap is not None:
            latency.add_metric(["liveness"], snap.api.live.latency_s)
            if snap.deep is not None and snap.deep.latency_s is not None:
                latency.add_metric(["generate"], snap.deep.latency_s)
        yield latency
        failures = CounterMetricFamily(
            "ollama_probe_failures", "failed probes since the supervisor started", labels=["probe"]
        )
        for probe, n in sorted(st.probe_failures.items()):
            failures.add_metric([probe], float(n))
        yield failures
        yield CounterMetricFamily(
            "ollama_health_checks", "checks since the supervisor started", value=float(st.checks)
        )
        actions = CounterMetricFamily(
            "ollama_supervisor_actions", "recovery actions taken", labels=["action", "reason"]
        )
        for (action, reason), n in sorted(st.actions.items()):
            actions.add_metric([action, reason], float(n))
        yield actions
        yield _gauge(
            "ollama_supervisor_gave_up",
            "1 when the action budget is spent and the supervisor waits for an operator",
            float(st.policy.gave_up),
        )
        yield _gauge(
            "ollama_supervisor_failure_streak",
            "consecutive checks with an actionable problem",
            float(st.policy.streak),
        )
        lines = CounterMetricFamily(
            "ollama_log_events", "evidence lines in Ollama's journal by kind", labels=["kind"]
        )
        for kind, n in sorted(st.log_totals.items()):
            lines.add_metric([kind], float(n))
        yield lines

    def _models(self, snap: Snapshot) -> Iterator[Metric]:
        loaded = GaugeMetricFamily(
            "ollama_model_loaded", "1 per model in /api/ps", labels=["model"]
        )
        size = GaugeMetricFamily(
            "ollama_model_size_bytes", "memory of a loaded model", labels=["model"]
        )
        vram = GaugeMetricFamily(
            "ollama_model_vram_bytes", "the part of it in GPU memory", labels=["model"]
        )
        expires = GaugeMetricFamily(
            "ollama_model_expires_in_seconds",
            "time left before a loaded model expires",
            labels=["model"],
        )
        for m in snap.api.models or ():
            loaded.add_metric([m.name], 1.0)
            size.add_metric([m.name], float(m.size))
            vram.add_metric([m.name], float(m.size_vram))
            if m.expires_in_s is not None:
                expires.add_metric([m.name], m.expires_in_s)
        yield from (loaded, size, vram, expires)

    def _unit(self, snap: Snapshot) -> Iterator[Metric]:
        u, mem = snap.unit, snap.memory
        if u.available:
            yield _gauge(
                "ollama_unit_active", "1 when the unit is active", float(u.active_state == "active")
            )
            yield CounterMetricFamily(
                "ollama_unit_restarts", "NRestarts of the unit", value=float(u.n_restarts)
            )
        if mem.available:
            yield _gauge(
                "ollama_memory_current_bytes",
                "the unit's cgroup memory.current",
                float(mem.current or 0),
            )
            if mem.peak is not None:
                yield _gauge(
                    "ollama_memory_peak_bytes", "the unit's cgroup memory.peak", float(mem.peak)
                )
            if mem.limit is not None:
                yield _gauge(
                    "ollama_memory_max_bytes", "the unit's cgroup memory.max", float(mem.limit)
                )
            yield CounterMetricFamily(
                "ollama_oom_kills",
                "OOM kills in the unit's cgroup (memory.events)",
                value=float(mem.oom_kills),
            )

    def _gpus(self, snap: Snapshot) -> Iterator[Metric]:
        labels = ["gpu", "name"]
        used = GaugeMetricFamily("ollama_gpu_memory_used_bytes", "GPU memory used", labels=labels)
        total = GaugeMetricFamily("ollama_gpu_memory_total_bytes", "GPU memory", labels=labels)
        util = GaugeMetricFamily(
            "ollama_gpu_utilization_ratio", "GPU busy time, 0-1", labels=labels
        )
        temp = GaugeMetricFamily("ollama_gpu_temperature_celsius", "GPU temperature", labels=labels)
        power = GaugeMetricFamily("ollama_gpu_power_watts", "GPU power draw", labels=labels)
        for g in snap.gpu.gpus:
            key = [str(g.index), g.name]
            for family, value in (
                (used, g.memory_used),
                (total, g.memory_total),
                (util, None if g.utilization_percent is None else g.utilization_percent / 100.0),
                (temp, g.temperature_c),
                (power, g.power_w),
            ):
                if value is not None:
                    family.add_metric(key, float(value))
        yield from (used, total, util, temp, power)


def registry_for(board: Board) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(board))
    return registry


def serve(board: Board, address: str) -> Callable[[], None]:
    """Serve /metrics on ``address`` (loopback) from a daemon thread; returns its closer."""
    from prometheus_client import start_http_server

    host, port = check_listen(address)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry_for(board))
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {address} ({exc.strerror}); pick another with --metrics"
        ) from exc

    def close() -> None:
        server.shutdown()
        server.server_close()

    return close
