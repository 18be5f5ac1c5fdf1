"""The Grafana dashboard queries only metrics the library exports; alerts link to its panels."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import messaging  # noqa: F401  (registers every metric of the bus in the default registry)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "docs" / "grafana" / "chimera-bus.json").read_text())
MONITORING = (ROOT / "docs" / "MONITORING.md").read_text()
# Series Prometheus itself adds for every scrape target.
PROMETHEUS_OWN = {"up"}
METRIC = re.compile(r"\b(chimera_[a-z0-9_]+)")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def exported_series() -> set[str]:
    """Every series name the library's metrics are exposed under, from the registry."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("chimera_"):
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def panels() -> list[dict[str, Any]]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    found = [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"${variable['name']}", variable["definition"]))
    return found


def test_the_registry_lists_the_bus_metrics() -> None:
    exported = exported_series()
    # Sanity: the check below is only as good as this list.
    for name in (
        "chimera_messages_published_total",
        "chimera_handler_duration_seconds_bucket",
        "chimera_connection_up",
        "chimera_dlq_messages",
        "chimera_reconnects_total",
    ):
        assert name in exported


@pytest.mark.parametrize(("where", "expr"), queries())
def test_every_metric_a_panel_queries_exists(where: str, expr: str) -> None:
    exported = exported_series()
    used = set(METRIC.findall(expr))
    outside = {
        name
        for name in re.findall(r"\b([a-z_]+)\{", expr)
        if not name.startswith("chimera_") and name not in PROMETHEUS_OWN
    }
    assert used or PROMETHEUS_OWN & set(re.findall(r"\b([a-z_]+)\{", expr)), where
    missing = used - exported
    assert not missing, f"{where}: queries {sorted(missing)}, which the library does not export"
    assert not outside, f"{where}: queries {sorted(outside)}, not a metric of the bus"


def test_every_chart_has_a_unique_id_and_says_what_it_shows() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]


def alerts() -> dict[str, tuple[str, int]]:
    """Alert name -> (its expression, the panel id its dashboard link names)."""
    section = MONITORING[MONITORING.index("## Example Prometheus alerts") :]
    yaml = section[section.index("```yaml") : section.index("```\n", section.index("```yaml") + 7)]
    found: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n\s*- alert: ", yaml)[1:]:
        name = block.split()[0]
        expr = block[block.index("expr:") : block.index("annotations:")]
        link = re.search(r"/d/chimera-bus/[^\"]*\?viewPanel=(\d+)", block)
        assert link, f"alert {name} has no dashboard link to a panel"
        found[name] = (expr, int(link.group(1)))
    return found


def test_every_alert_links_to_a_panel_that_shows_its_metric() -> None:
    found = alerts()
    assert len(found) >= 7, "the alert examples were not found in docs/MONITORING.md"
    by_id = {p["id"]: p for p in panels()}
    for name, (expr, panel_id) in found.items():
        assert panel_id in by_id, f"alert {name} links to panel {panel_id}, which does not exist"
        panel_exprs = " ".join(t["expr"] for t in by_id[panel_id]["targets"])
        alert_metrics = set(METRIC.findall(expr)) or set(re.findall(r"\b(up)\{", expr))
        panel_metrics = set(METRIC.findall(panel_exprs)) | set(re.findall(r"\b(up)\{", panel_exprs))
        assert alert_metrics & panel_metrics, (
            f"alert {name} ({sorted(alert_metrics)}) links to panel {panel_id} "
            f"({by_id[panel_id]['title']}), which shows {sorted(panel_metrics)}"
        )
        assert name in by_id[panel_id]["description"], f"panel {panel_id} does not name {name}"


def test_the_dashboard_imports_with_a_datasource_choice() -> None:
    assert DASHBOARD["uid"] == "chimera-bus"
    assert DASHBOARD["__inputs"][0]["pluginId"] == "prometheus"
    for panel in panels():
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
