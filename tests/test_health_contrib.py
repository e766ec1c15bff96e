"""contrib/: the alert rules and the dashboard ask only for metrics the supervisor exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client import generate_latest

from ollama_ops.health.metrics import Board, Status, registry_for
from ollama_ops.health.model import GpuReading, MemoryState, State, Verdict
from ollama_ops.health.policy import PolicyState

from .health_helpers import model, snap

CONTRIB = Path(__file__).resolve().parents[1] / "contrib"
METRIC = re.compile(r"\b(ollama_[a-z_]+)")


def exported() -> set[str]:
    """Every sample name the collector produces with all sources present."""
    board = Board()
    board.status = Status(
        snapshot=snap(
            models=[model()],
            gpus=[GpuReading(0, "GPU", 1, 2, 50.0, 60.0, 200.0)],
            memory=MemoryState(available=True, current=1, peak=2, limit=3, oom_kills=1),
        ),
        verdict=Verdict(State.OK),
        policy=PolicyState(),
        checks=1,
        probe_failures={"liveness": 1},
        actions={("restart_unit", "process_hung"): 1},
        log_totals={"completion": 3},
    )
    text = generate_latest(registry_for(board)).decode()
    return {line.split("{")[0].split()[0] for line in text.splitlines() if line and line[0] != "#"}


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((CONTRIB / "prometheus/ollama-ops-alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_alert_rules_are_complete_and_use_exported_metrics(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"]
    names = set(METRIC.findall(rule["expr"]))
    assert names and names <= exported(), names - exported()


def test_the_dashboard_uses_exported_metrics() -> None:
    dash = json.loads((CONTRIB / "grafana/ollama-ops-dashboard.json").read_text())
    assert dash["uid"] == "ollama-ops" and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for target in panel["targets"]:
            names = set(METRIC.findall(target["expr"]))
            assert names and names <= exported(), (panel["title"], names - exported())
