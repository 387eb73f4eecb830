"""connguard.guard: redis-py that cannot start a retry storm or leak connections unseen.

    from connguard.guard import guarded_client
    r = guarded_client("redis://cache:6379/0", budget=40, leak_threshold_s=10)

Every new socket to an endpoint passes a circuit breaker (fail fast while the server refuses) and a token bucket;
every pooled connection holds a slot of a process-wide budget. `max number of clients reached` becomes
MaxClientsError and opens the breaker. redis-py's own classes, repr and retry contract are left as they are.
Connections held longer than leak_threshold_s are logged with the stack that checked them out.

The Prometheus collector lives in `connguard.guard.metrics` (it needs prometheus-client, the `exporter` extra).
"""

from typing import Any

from connguard.guard.aio import AsyncGuardedBlockingConnectionPool, AsyncGuardedConnectionPool, guarded_async_client
from connguard.guard.backoff import BackoffPolicy
from connguard.guard.breaker import StateChange
from connguard.guard.errors import BudgetExceeded, CircuitOpenError, ConnectRateLimited, GuardRefusal, MaxClientsError
from connguard.guard.pool import GuardedBlockingConnectionPool, GuardedConnectionPool, guarded_client
from connguard.guard.settings import GuardSettings
from connguard.guard.snapshot import GuardMetrics, collect_all

__all__ = [
    # pools
    "AsyncGuardedBlockingConnectionPool", "AsyncGuardedConnectionPool", "GuardedBlockingConnectionPool",
    "GuardedConnectionPool",
    # client helpers
    "guarded_async_client", "guarded_client",
    # settings
    "BackoffPolicy", "GuardSettings",
    # errors
    "BudgetExceeded", "CircuitOpenError", "ConnectRateLimited", "GuardRefusal", "MaxClientsError",
    # listener type
    "StateChange",
    # metrics (the Prometheus collector: connguard.guard.metrics.GuardCollector)
    "GuardMetrics", "collect_all",
]


def __getattr__(name: str) -> Any:
    """The process registry stays reachable for the lab and the tests' fixtures, outside the public surface."""
    if name == "REGISTRY":
        from connguard.guard.registry import REGISTRY

        return REGISTRY
    raise AttributeError(f"module 'connguard.guard' has no attribute {name!r}")
