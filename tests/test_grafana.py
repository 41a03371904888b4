"""The Grafana dashboard in docs/grafana asks only for series the control plane and the
HTTP bridge expose, with the labels they have."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from runtime.control import ScalerMetrics
from runtime.core import DURATION_BUCKETS_MS, CallCounts
from runtime.gateway.metrics import GatewayMetrics

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "autan.json"
_SERIES = re.compile(r"\b(autan_[a-z_]+)(\{[^}]*\})?")


def _exposed() -> dict[str, set[str]]:
    """Every series name the two registries expose, with its label names."""
    scaler = ScalerMetrics()
    scaler.backlog.labels(function="a.f").set(1)
    scaler.oldest_age.labels(function="a.f").set(1)
    scaler.workers.labels(function="a.f", state="idle").set(1)
    scaler.decisions.labels(function="a.f", direction="up").inc()
    scaler.observe_cold_start("a.f", {"fork": 5.0})
    scaler.batch_sizes.report("w", "a.f", {4: 1})
    counts = (1,) * (len(DURATION_BUCKETS_MS) + 1)
    scaler.calls.report("w", "a.f", CallCounts(calls=1, errors={"E": 1}, run_ms=counts,
                                                wait_ms=counts))  # fmt: skip
    gateway = GatewayMetrics()
    gateway.requests.labels(method="POST", route="/v1/x", status="200").inc()
    text = generate_latest(scaler.registry).decode() + generate_latest(gateway.registry).decode()
    exposed: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            labels = {pair.split("=")[0] for pair in rest.split("}")[0].split(",") if pair}
            exposed.setdefault(name.split()[0], set()).update(labels)
    return exposed


def test_every_panel_queries_series_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = _exposed()
    queried = 0
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name, selector in _SERIES.findall(target["expr"]):
                assert name in exposed, f"panel {panel['title']!r} asks for {name}"
                for label in re.findall(r"(\w+)=~?\"", selector or ""):
                    assert label in exposed[name], f"{name} has no label {label}"
                queried += 1
    assert queried >= 10
    variable = dashboard["templating"]["list"][1]["query"]["query"]
    assert _SERIES.search(variable) is not None
    assert _SERIES.search(variable).group(1) in exposed  # type: ignore[union-attr]
