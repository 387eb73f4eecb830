"""The Grafana dashboard is well-formed and queries only metrics the exporter (or the guard's collector) emits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from exporter_running import run_exporter  # noqa: F401 (a fixture)

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "connguard.json"
METRIC = re.compile(r"\b(connguard_[a-zA-Z0-9_]+)")


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def emitted_names(body: str) -> set[str]:
    """Sample names on an exposition page (histograms give _bucket, _count and _sum)."""
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in body.splitlines() if line and not line.startswith("#")}


def test_the_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for needed in ("capacity ratio", "by kind", "rejected", "top sources", "causes", "exhaustion", "breaker"):
        assert needed in titles, needed
    ratio = next(p for p in dash["panels"] if "0.8 / 0.9" in p["title"])
    lines = [s["value"] for s in ratio["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    from connguard.analysis.capacity import CRITICAL_RATIO, WARNING_RATIO

    assert lines[1:] == [WARNING_RATIO, CRITICAL_RATIO]


def test_every_exporter_metric_the_dashboard_queries_is_emitted(default_binary, start_server, crowd_for, run_exporter):
    server = start_server(default_binary, maxclients=50)
    crowd_for(server).open(5, source="127.0.0.5", name="app")
    running = run_exporter()
    url = f"redis://127.0.0.1:{server.port}"
    running.probe(url)  # the first CLIENT LIST makes commandstats report its cost on the next scrape
    _, body = running.get("/probe?target=" + url)
    emitted = emitted_names(body)
    wanted = {m for e in dashboard_exprs() for m in METRIC.findall(e) if not m.startswith("connguard_guard_")}
    assert wanted and wanted <= emitted, wanted - emitted


def test_the_guard_panel_queries_the_guard_collectors_metrics() -> None:
    metrics = pytest.importorskip("connguard.guard.metrics")
    if not hasattr(metrics, "GuardCollector"):
        pytest.skip("connguard.guard.metrics has no prometheus-client collector on this branch yet")
    defined = set()
    for family in metrics.GuardCollector().collect():
        defined.add(family.name + ("_total" if family.type == "counter" else ""))
    wanted = {m for e in dashboard_exprs() for m in METRIC.findall(e) if m.startswith("connguard_guard_")}
    assert wanted and wanted <= defined, f"the guard panel queries {wanted - defined}, which GuardCollector lacks"
