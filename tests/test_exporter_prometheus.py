"""A real Prometheus scrapes the exporter's /probe every second with rules.yml loaded (short `for:`):
a lab leak to 85% fires ConnguardCapacityWarning and ConnguardCause{cause="connection_leak"}; filling the
server fires ConnguardRefusing while connguard_connections_used is still scraped."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from connguard.analysis.findings import DoctorSettings
from connguard.lab.scenario_specs import LAB_IDLE_THRESHOLD_S
from connguard.lab.servers import free_port
from connguard.lab.workloads import Leaker
from exporter_running import run_exporter  # noqa: F401 (a fixture)
from test_exporter_dashboard import dashboard_exprs

PROMETHEUS = shutil.which("prometheus")
RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules.yml"
DEADLINE_S = 60.0  # for each condition to show up in Prometheus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240),
              pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian: apt-get install prometheus)")]


class Prometheus:
    """Debian's prometheus on a free loopback port, its own storage in a temp dir, stopped by its PID."""

    def __init__(self, workdir: Path, exporter_port: int, server_port: int) -> None:
        self.port = free_port()
        rules = re.sub(r"(?m)^(\s*for:\s*)\S+", r"\g<1>1s", RULES.read_text())  # short `for:` for the test
        (workdir / "rules.yml").write_text(rules)
        (workdir / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
scrape_configs:
  - job_name: connguard
    metrics_path: /probe
    static_configs:
      - targets: ["redis://127.0.0.1:{server_port}"]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:{exporter_port}
""")
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: self._ready(), "prometheus ready", 30)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            assert self.proc.poll() is None, "prometheus exited"
            return False

    def api(self, path: str, **params: str) -> Any:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def firing(self) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["state"] == "firing"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[int, int], Prometheus]]:
    started: list[Prometheus] = []

    def start(exporter_port: int, server_port: int) -> Prometheus:
        prom = Prometheus(tmp_path, exporter_port, server_port)
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
        warning = wait_for(lambda: _alert(prom.firing(), "ConnguardCapacityWarning"), "ConnguardCapacityWarning")
        assert warning["labels"]["instance"] == instance
        assert warning["annotations"]["command"] == f"connguard doctor {instance}"
        leak = wait_for(lambda: _alert(prom.firing(), "ConnguardCause", cause="connection_leak"),
                        "ConnguardCause{cause=connection_leak}")
        assert leak["labels"]["severity"] in ("warning", "critical")
    finally:
        leaker.stop()

    # Fill the server: it refuses everyone new, but the exporter's held connection keeps the numbers coming.
    crowd.open(20, source="127.0.0.6")
    refusing = wait_for(lambda: _alert(prom.firing(), "ConnguardRefusing"), "ConnguardRefusing")
    assert refusing["labels"]["instance"] == instance
    used = prom.api("query", query="connguard_connections_used")["result"]
    assert used and float(used[0]["value"][1]) == 39  # all but the exporter's own slot
    fresh = prom.api("query", query="time() - timestamp(connguard_connections_used)")["result"]
    assert float(fresh[0]["value"][1]) < 5, "connguard_connections_used is no longer being scraped"
    assert float(prom.api("query", query="connguard_up")["result"][0]["value"][1]) == 1

    # Every dashboard query is valid PromQL against this Prometheus.
    for expr in dashboard_exprs():
        prom.api("query", query=expr.replace("$instance", ".*"))
