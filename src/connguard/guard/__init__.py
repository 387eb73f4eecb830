"""connguard.guard: redis-py that cannot start a retry storm or leak connections unseen.

    from connguard.guard import guarded_client
    r = guarded_client("redis://cache:6379/0", budget=40, leak_threshold_s=10)

Every new socket to an endpoint passes a circuit breaker (fail fast while the server refuses), a process-wide
connection budget, and a token bucket. `max number of clients reached` becomes MaxClientsError and is never
retried at once. Connections held longer than leak_threshold_s are logged with the stack that checked them out.
"""

from connguard.guard.aio import AsyncGuardedConnectionPool, guarded_async_client
from connguard.guard.backoff import (
    BACKOFF_KINDS,
    BackoffPolicy,
    GuardRetry,
    decorrelated_jitter,
    equal_jitter,
    full_jitter,
)
from connguard.guard.breaker import CLOSED, HALF_OPEN, OPEN, BreakerSettings, CircuitBreaker, StateChange
from connguard.guard.budget import ConnectionBudget
from connguard.guard.errors import BudgetExceeded, CircuitOpenError, ConnectRateLimited, GuardRefusal, MaxClientsError
from connguard.guard.leaks import LeakTracker
from connguard.guard.metrics import GuardMetrics, collect_all
from connguard.guard.pool import GuardedConnectionPool, guarded_client
from connguard.guard.ratelimit import ConnectRateLimiter
from connguard.guard.registry import REGISTRY, EndpointGuard
from connguard.guard.settings import GuardSettings

__all__ = [
    "AsyncGuardedConnectionPool", "BACKOFF_KINDS", "BackoffPolicy", "BreakerSettings", "BudgetExceeded",
    "CLOSED", "CircuitBreaker", "CircuitOpenError", "ConnectRateLimited", "ConnectRateLimiter", "ConnectionBudget",
    "EndpointGuard", "GuardMetrics", "GuardRefusal", "GuardRetry", "GuardSettings", "GuardedConnectionPool",
    "HALF_OPEN", "LeakTracker", "MaxClientsError", "OPEN", "REGISTRY", "StateChange", "collect_all",
    "decorrelated_jitter", "equal_jitter", "full_jitter", "guarded_async_client", "guarded_client",
]
