"""A real Prometheus scrapes the exporter's /probe every second with rules.yml loaded (short `for:`):
a lab leak to 85% fires ConnguardCapacityWarning and ConnguardCause (naming connection_leak); filling the
server fires ConnguardRefusing while connguard_connections_used is still scraped."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from alert_path_running import PROMETHEUS, RULES, Prometheus, probe_job
from alert_path_running import wait_for as wait_until
from connguard.analysis.findings import DoctorSettings
from connguard.lab.scenario_specs import LAB_IDLE_THRESHOLD_S
from connguard.lab.workloads import Leaker
from exporter_running import run_exporter  # noqa: F401 (a fixture)
from test_exporter_dashboard import dashboard_exprs

DEADLINE_S = 60.0  # for each condition to show up in Prometheus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240),
              pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian: apt-get install prometheus)")]


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = DEADLINE_S) -> Any:
    return wait_until(check, what, timeout_s)


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[int, int], Prometheus]]:
    """The shipped rules with every `for:` at 1 s, scraping one server through the exporter every second."""
    started: list[Prometheus] = []

    def start(exporter_port: int, server_port: int) -> Prometheus:
        rules = re.sub(r"(?m)^(\s*(?:for|keep_firing_for):\s*)\S+", r"\g<1>1s", RULES.read_text())
        prom = Prometheus(tmp_path, [probe_job("connguard", [f"redis://127.0.0.1:{server_port}"],
                                               f"127.0.0.1:{exporter_port}")], rules=rules)
        started.append(prom)
        return prom

    yield start
    for prom in started:
        prom.stop()


def _alert(firing: list[dict[str, Any]], name: str, **labels: str) -> dict[str, Any] | None:
    return next((a for a in firing if a["labels"]["alertname"] == name
                 and all(a["labels"].get(k) == v for k, v in labels.items())), None)


def test_prometheus_fires_capacity_cause_and_refusing_alerts(default_binary, start_server, crowd_for, run_exporter,
                                                             prometheus_for):
    server = start_server(default_binary, maxclients=40)
    crowd = crowd_for(server)
    crowd.open(2, source="127.0.0.10", kind="active", name="api")
    running = run_exporter(diagnose_every_s=1.0, window_s=10.0,
                           doctor=DoctorSettings(idle_threshold_s=LAB_IDLE_THRESHOLD_S))
    prom = prometheus_for(running.port, server.port)
    instance = f"redis://127.0.0.1:{server.port}"
    wait_for(lambda: prom.api("query", query="connguard_up == 1")["result"], "the first scrape")

    # A leak from one host, opened over time and never used again, up to 85% of maxclients.
    leaker = Leaker(crowd, "127.0.0.5", name="orders-worker", every_s=0.25, cap=32, max_duration_s=60)
    leaker.start()
    try:
        leaker.join(timeout=60)
        assert leaker.opened == 32
        warning = wait_for(lambda: _alert(prom.alerts(), "ConnguardCapacityWarning"), "ConnguardCapacityWarning")
        assert warning["labels"]["instance"] == instance
        assert warning["annotations"]["command"] == f"connguard doctor {instance}"
        leak = wait_for(lambda: _alert(prom.alerts(), "ConnguardCause"), "ConnguardCause")
        assert "connection_leak" in leak["annotations"]["summary"]
        assert "cause" not in leak["labels"]  # one alert per instance, whichever cause the doctor names
    finally:
        leaker.stop()

    # Fill the server: it refuses everyone new, but the exporter's held connection keeps the numbers coming.
    crowd.open(20, source="127.0.0.6")
    refusing = wait_for(lambda: _alert(prom.alerts(), "ConnguardRefusing"), "ConnguardRefusing")
    assert refusing["labels"]["instance"] == instance
    used = prom.api("query", query="connguard_connections_used")["result"]
    assert used and float(used[0]["value"][1]) == 39  # all but the exporter's own slot
    fresh = prom.api("query", query="time() - timestamp(connguard_connections_used)")["result"]
    assert float(fresh[0]["value"][1]) < 5, "connguard_connections_used is no longer being scraped"
    assert float(prom.api("query", query="connguard_up")["result"][0]["value"][1]) == 1

    # Every dashboard query is valid PromQL against this Prometheus.
    for expr in dashboard_exprs():
        prom.api("query", query=expr.replace("$instance", ".*"))
