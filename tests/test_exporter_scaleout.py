"""Scale-out: two exporter replicas share a fleet through Prometheus `hashmod` relabelling (docs/exporter.md),
so every target is probed by exactly one replica: one held connection per server, whichever replica holds it.
Two real exporters, four real servers, one real Prometheus."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from alert_path_running import PROMETHEUS, Prometheus, probe_job, wait_for
from exporter_running import run_exporter  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120),
              pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian: apt-get install prometheus)")]

REPLICAS = 2


def replica_job(replica: int, fleet: list[str], exporter: str) -> dict:
    """docs/exporter.md's scale-out job for replica `replica` of REPLICAS: keep the targets whose hashmod is
    `replica`, then the usual /probe relabelling toward that replica's exporter."""
    job = probe_job(f"connguard-{replica}", fleet, exporter)
    job["relabel_configs"] = [
        {"source_labels": ["__address__"], "modulus": REPLICAS, "target_label": "__tmp_hashmod", "action": "hashmod"},
        {"source_labels": ["__tmp_hashmod"], "regex": str(replica), "action": "keep"},
    ] + job["relabel_configs"]
    return job


def prometheus_hashmod(value: str, modulus: int) -> int:
    """Prometheus's hashmod: the low 8 bytes of the MD5 of the value, big-endian, modulo `modulus`."""
    return int.from_bytes(hashlib.md5(value.encode()).digest()[8:], "big") % modulus


def test_two_replicas_split_a_fleet_and_each_target_is_probed_once(default_binary, start_server, run_exporter,
                                                                   tmp_path: Path):
    servers = [start_server(default_binary, maxclients=20) for _ in range(4)]
    fleet = [f"redis://127.0.0.1:{s.port}" for s in servers]
    replicas = [run_exporter() for _ in range(REPLICAS)]
    prom = Prometheus(tmp_path, [replica_job(i, fleet, f"127.0.0.1:{r.port}") for i, r in enumerate(replicas)])
    try:
        def scraped() -> list[dict]:
            active = prom.api("targets", state="active")["activeTargets"]
            return active if len(active) == len(fleet) and all(t["health"] == "up" for t in active) else []

        active = wait_for(scraped, "every target scraped once", 30)
        wait_for(lambda: len(prom.query("connguard_up == 1")) == len(fleet), "connguard_up for the fleet", 30)
        by_instance = {t["labels"]["instance"]: t["labels"]["job"] for t in active}
        assert sorted(by_instance) == sorted(fleet)  # every target exactly once across both jobs
        for url, job in by_instance.items():
            assert job == f"connguard-{prometheus_hashmod(url, REPLICAS)}"
        counts = prom.query("count by (instance) (connguard_up)")
        assert sorted(c["metric"]["instance"] for c in counts) == sorted(fleet)
        assert all(c["value"][1] == "1" for c in counts)
        # Each replica holds connections to its share only: one held connection per server in all.
        for i, running in enumerate(replicas):
            mine = sorted(u for u, job in by_instance.items() if job == f"connguard-{i}")
            assert running.registry.targets() == mine
        assert sum(r.registry.held() for r in replicas) == len(fleet)
    finally:
        prom.stop()
