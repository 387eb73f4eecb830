"""The public surface of connguard.guard, pinned: adding or removing a name is a decision, not an accident."""

from __future__ import annotations

import connguard.guard as guard

PUBLIC = {
    # pools
    "AsyncGuardedBlockingConnectionPool", "AsyncGuardedConnectionPool", "GuardedBlockingConnectionPool",
    "GuardedConnectionPool", "GuardedSentinelConnectionPool",  # Sentinel: per service and role
    # client helpers (cluster: a RedisCluster whose node pools are guarded, per node endpoint)
    "guarded_async_client", "guarded_client", "guarded_cluster_client", "guarded_sentinel_client",
    # settings
    "BackoffPolicy", "GuardSettings",
    # errors
    "BudgetExceeded", "CircuitOpenError", "ConnectRateLimited", "GuardRefusal", "MaxClientsError",
    # listener type
    "StateChange",
    # metrics (the Prometheus collector is connguard.guard.metrics.GuardCollector: it needs prometheus-client)
    "GuardMetrics", "collect_all",
}


def test_all_is_pinned():
    assert set(guard.__all__) == PUBLIC
    assert len(guard.__all__) == len(PUBLIC)  # no duplicates


def test_every_public_name_is_importable_and_documented():
    for name in guard.__all__:
        obj = getattr(guard, name)
        assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_internals_are_not_exported():
    for name in ("EndpointGuard", "REGISTRY", "LeakTracker", "ConnectionBudget", "CircuitBreaker", "CLOSED", "OPEN",
                 "HALF_OPEN", "GuardRetry", "ConnectRateLimiter", "BreakerSettings", "NoRoom"):
        assert name not in guard.__all__
    exported = {name for name in vars(guard) if not name.startswith("_")}
    submodules = {"aio", "backoff", "breaker", "budget", "errors", "leaks", "pool", "ratelimit", "registry", "settings", "snapshot", "metrics", "topology", "room",
                  "integrations"}  # a subpackage is an attribute once any test imported it
    assert exported - submodules - {"Any"} == PUBLIC


def test_the_collector_module_pins_its_own_surface():
    from connguard.guard import metrics

    assert set(metrics.__all__) == {"GuardCollector", "register"}
