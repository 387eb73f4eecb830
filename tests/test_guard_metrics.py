"""The guard's Prometheus collector, scraped through prometheus_client's own exposition (generate_latest)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connguard.guard import MaxClientsError, guarded_client
from connguard.guard.metrics import GuardCollector, register

pytestmark = pytest.mark.usefixtures("fresh_guard_registry")


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_breaker_refusals_connections_and_leaks_are_scraped(full_server, default_binary, start_server, caplog):
    caplog.set_level(logging.ERROR, logger="connguard.guard")
    full, _monitor, _crowd, _leak = full_server
    healthy = start_server(default_binary)
    registry = CollectorRegistry()
    register(registry)

    refused = guarded_client(full.url, name="checkout", reset_timeout_s=30.0)
    with pytest.raises(MaxClientsError):
        refused.ping()
    orders = guarded_client(healthy.url, name="orders", budget=7, leak_threshold_s=0.2)
    orders.ping()
    held = orders.connection_pool.get_connection()  # forgotten: becomes a leak after 0.2 s
    orders.ping()  # needs a second connection, idle afterwards
    deadline = time.monotonic() + 3
    while orders.connection_pool.leaks.reported_total == 0 and time.monotonic() < deadline:
        time.sleep(0.05)

    seen = scrape(registry)
    full_ep, healthy_ep = f"redis://127.0.0.1:{full.port}", f"redis://127.0.0.1:{healthy.port}"
    assert seen[("connguard_guard_circuit_state", (("endpoint", full_ep), ("state", "open")))] == 1
    assert seen[("connguard_guard_circuit_state", (("endpoint", full_ep), ("state", "closed")))] == 0
    assert seen[("connguard_guard_maxclients_refusals_total", (("endpoint", full_ep),))] == 1
    assert seen[("connguard_guard_circuit_opened_total", (("endpoint", full_ep),))] == 1
    assert seen[("connguard_guard_circuit_state", (("endpoint", healthy_ep), ("state", "closed")))] == 1
    assert seen[("connguard_guard_connects_total", (("endpoint", healthy_ep),))] == 2
    assert seen[("connguard_guard_budget", (("endpoint", healthy_ep),))] == 7
    assert seen[("connguard_guard_budget_used", (("endpoint", healthy_ep),))] == 2
    pool_labels = (("endpoint", healthy_ep), ("pool", "orders"))
    assert seen[("connguard_guard_connections", pool_labels + (("state", "in_use"),))] == 1
    assert seen[("connguard_guard_connections", pool_labels + (("state", "idle"),))] == 1
    assert seen[("connguard_guard_leaks_detected_total", pool_labels)] == 1
    assert seen[("connguard_guard_budget_waiters", (("endpoint", healthy_ep),))] == 0

    orders.connection_pool.release(held)
    assert scrape(registry)[("connguard_guard_connections", pool_labels + (("state", "in_use"),))] == 0
    orders.close()
    refused.close()


def test_the_guard_imports_without_prometheus_client_and_the_collector_says_what_it_needs():
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import connguard.guard as g\n"
        "assert 'prometheus_client' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "g.GuardedConnectionPool(host='127.0.0.1', port=1)\n"
        "try:\n    import connguard.guard.metrics\nexcept ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "needs prometheus-client: pip install 'connguard[exporter]'" in out.stdout


def test_an_app_mounts_the_collector_on_its_own_registry():
    registry = CollectorRegistry()
    collector = register(registry)
    assert isinstance(collector, GuardCollector)
    text = generate_latest(registry).decode()  # no endpoint yet: families with no samples, and no error
    assert "# TYPE connguard_guard_circuit_state gauge" in text and "connguard_guard_circuit_state{" not in text
