"""The guard's counters as a prometheus-client Collector, for the application's own /metrics.

    from connguard.guard.metrics import register
    register()                      # into prometheus_client's default registry; returns the collector

Needs prometheus-client (the `exporter` extra). Nothing else in connguard.guard imports this module, so the guard
itself works without it. Every scrape reads the live state of every guarded endpoint and pool in the process; no
lock is held across the scrape, so a value may be a moment stale.
"""

from __future__ import annotations

from typing import Any, Iterator

try:
    from prometheus_client import REGISTRY as DEFAULT_REGISTRY
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "connguard.guard.metrics needs prometheus-client: pip install 'connguard[exporter]' (the guard itself does not)"
    ) from exc

from connguard.guard.breaker import CLOSED, HALF_OPEN, OPEN
from connguard.guard.registry import REGISTRY as ENDPOINTS
from connguard.guard.registry import Registry

PREFIX = "connguard_guard"
STATES = (CLOSED, OPEN, HALF_OPEN)


class GuardCollector(Collector):
    """Breaker state per endpoint, connections in use/idle per pool, budget and waiters, connects, max-clients
    refusals, leaks. Series are bounded by endpoints x pools (pools with the same name are summed)."""

    def __init__(self, endpoints: Registry = ENDPOINTS) -> None:
        self._endpoints = endpoints

    def describe(self) -> list[Metric]:
        return []  # dynamic label values: nothing to check at registration time

    def collect(self) -> Iterator[Metric]:
        ep_labels = ["endpoint"]
        circuit = GaugeMetricFamily(f"{PREFIX}_circuit_state", "1 for the breaker's current state (closed, open, half_open), else 0", labels=ep_labels + ["state"])
        retry_in = GaugeMetricFamily(f"{PREFIX}_circuit_retry_in_seconds", "Seconds until an open breaker admits its next probe (0 unless open)", labels=ep_labels)
        opened = CounterMetricFamily(f"{PREFIX}_circuit_opened", "Times the breaker opened", labels=ep_labels)
        rejected = CounterMetricFamily(f"{PREFIX}_circuit_rejected", "Connects refused by an open breaker (no socket opened)", labels=ep_labels)
        budget = GaugeMetricFamily(f"{PREFIX}_budget", "The process-wide connection budget for the endpoint (absent when uncapped)", labels=ep_labels)
        budget_used = GaugeMetricFamily(f"{PREFIX}_budget_used", "Budget slots held: pooled connection objects of every guarded pool", labels=ep_labels)
        waiters = GaugeMetricFamily(f"{PREFIX}_budget_waiters", "Checkouts waiting for a budget slot right now", labels=ep_labels)
        rate_waiters = GaugeMetricFamily(f"{PREFIX}_rate_limit_waiters", "Connects waiting for a rate-limit token right now", labels=ep_labels)
        exceeded = CounterMetricFamily(f"{PREFIX}_budget_exceeded", "Checkouts that gave up with BudgetExceeded", labels=ep_labels)
        limited = CounterMetricFamily(f"{PREFIX}_rate_limited", "Connects refused with ConnectRateLimited", labels=ep_labels)
        attempts = CounterMetricFamily(f"{PREFIX}_connect_attempts", "Sockets the guard let a pool try to open", labels=ep_labels)
        connects = CounterMetricFamily(f"{PREFIX}_connects", "Connects that completed the handshake", labels=ep_labels)
        refusals = CounterMetricFamily(f"{PREFIX}_maxclients_refusals", "Connects the server refused with 'max number of clients reached'", labels=ep_labels)
        room_checks = CounterMetricFamily(f"{PREFIX}_room_checks", "INFO round trips over held connections asking a full server whether room has returned (no new socket)", labels=ep_labels)
        probes_skipped = CounterMetricFamily(f"{PREFIX}_probes_skipped", "Breaker probes not made because a fresh reading over a held connection said the server was still full", labels=ep_labels)
        failures = CounterMetricFamily(f"{PREFIX}_connect_failures", "Connects that failed otherwise (timeouts, resets, refused ports)", labels=ep_labels)
        pool_labels = ["endpoint", "pool"]
        connections = GaugeMetricFamily(f"{PREFIX}_connections", "Pooled connections by state (in_use, idle)", labels=pool_labels + ["state"])
        leaks = CounterMetricFamily(f"{PREFIX}_leaks_detected", "Checkouts held longer than leak_threshold_s (each reported once)", labels=pool_labels)
        suspected = GaugeMetricFamily(f"{PREFIX}_suspected_leaks", "Reported leaks not yet returned", labels=pool_labels)

        for ep in self._endpoints.endpoints():
            e = [ep.label]
            for state in STATES:
                circuit.add_metric(e + [state], 1.0 if ep.breaker.state == state else 0.0)
            retry_in.add_metric(e, ep.breaker.retry_in_s())
            opened.add_metric(e, ep.breaker.opened_total)
            rejected.add_metric(e, ep.breaker.rejected_total)
            if ep.budget.cap is not None:
                budget.add_metric(e, ep.budget.cap)
            budget_used.add_metric(e, ep.budget.used)
            waiters.add_metric(e, ep.budget.waiters)
            rate_waiters.add_metric(e, ep.limiter.waiters)
            exceeded.add_metric(e, ep.budget.exceeded_total)
            limited.add_metric(e, ep.limiter.limited_total)
            attempts.add_metric(e, ep.attempts_total)
            connects.add_metric(e, ep.connects_total)
            refusals.add_metric(e, ep.refusals_total)
            failures.add_metric(e, ep.failures_total)
            room_checks.add_metric(e, ep.room.checks_total)
            probes_skipped.add_metric(e, ep.breaker.held_total)
            per_pool: dict[str, list[float]] = {}
            for pool in list(ep.pools):
                row = per_pool.setdefault(pool.name, [0, 0, 0, 0])
                row[0] += len(pool._cg_in_use())
                row[1] += len(pool._cg_idle())
                row[2] += pool.leaks.reported_total
                row[3] += pool.leaks.suspected
            for name, (in_use, idle, reported, open_leaks) in sorted(per_pool.items()):
                p = e + [name]
                connections.add_metric(p + ["in_use"], in_use)
                connections.add_metric(p + ["idle"], idle)
                leaks.add_metric(p, reported)
                suspected.add_metric(p, open_leaks)
        yield from (
            circuit, retry_in, opened, rejected, budget, budget_used, waiters, rate_waiters, exceeded, limited,
            attempts, connects, refusals, failures, room_checks, probes_skipped, connections, leaks, suspected,
        )


def register(registry: CollectorRegistry | Any = DEFAULT_REGISTRY) -> GuardCollector:
    """Register one GuardCollector (the default: prometheus_client's global registry) and return it."""
    collector = GuardCollector()
    registry.register(collector)
    return collector


__all__ = ["GuardCollector", "register"]
