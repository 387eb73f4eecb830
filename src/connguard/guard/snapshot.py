"""A point-in-time snapshot of a guarded pool and its endpoint, for logs, tests and the Prometheus collector."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from connguard.guard._core import has_socket


@dataclass(frozen=True)
class GuardMetrics:
    """Pool counts (in use, idle) beside the shared endpoint state (budget, breaker, rates, refusals, leaks)."""

    pool: str
    endpoint: str
    in_use: int
    idle: int  # pooled connection objects not checked out (with or without a socket)
    budget_used: int  # this endpoint's budget slots held across the process (one per pooled connection object)
    open_sockets: int  # of those, the ones with a socket open right now
    budget: int | None
    waiters: int  # callers waiting for a budget slot or a rate-limit token
    attempts_total: int
    connects_total: int
    connects_per_s: float  # over the last 10 s
    refusals_total: int  # max-clients refusals
    failures_total: int
    circuit_state: str  # closed | open | half_open
    circuit_opened_total: int
    circuit_rejected_total: int
    circuit_retry_in_s: float
    budget_exceeded_total: int
    rate_limited_total: int
    suspected_leaks: int
    leaks_reported_total: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_sockets(endpoint: Any) -> int:
    """Sockets open right now across every guarded pool of the endpoint (a moment stale: no pool lock is taken)."""
    total = 0
    for pool in list(endpoint.pools):
        total += sum(1 for conn in pool._cg_idle() + pool._cg_in_use() if has_socket(conn))
    return total


def collect(pool: Any) -> GuardMetrics:
    """Read a guarded pool (sync or asyncio, plain or blocking) without taking its lock."""
    ep = pool.endpoint
    return GuardMetrics(
        pool=pool.name,
        endpoint=ep.label,
        in_use=len(pool._cg_in_use()),
        idle=len(pool._cg_idle()),
        budget_used=ep.budget.used,
        open_sockets=open_sockets(ep),
        budget=ep.budget.cap,
        waiters=ep.budget.waiters + ep.limiter.waiters,
        attempts_total=ep.attempts_total,
        connects_total=ep.connects_total,
        connects_per_s=round(ep.connects_per_s(), 3),
        refusals_total=ep.refusals_total,
        failures_total=ep.failures_total,
        circuit_state=ep.breaker.state,
        circuit_opened_total=ep.breaker.opened_total,
        circuit_rejected_total=ep.breaker.rejected_total,
        circuit_retry_in_s=round(ep.breaker.retry_in_s(), 3),
        budget_exceeded_total=ep.budget.exceeded_total,
        rate_limited_total=ep.limiter.limited_total,
        suspected_leaks=pool.leaks.suspected,
        leaks_reported_total=pool.leaks.reported_total,
    )


def collect_all() -> list[GuardMetrics]:
    """Every live guarded pool in the process."""
    from connguard.guard.registry import REGISTRY

    return [collect(pool) for ep in REGISTRY.endpoints() for pool in list(ep.pools)]
