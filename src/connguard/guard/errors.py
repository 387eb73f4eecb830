"""Errors the guard raises: each is a redis-py ConnectionError, so existing `except ConnectionError` code still works."""

from __future__ import annotations

from typing import Mapping

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, ResponseError

try:  # redis-py 7.1+: RedisCluster neither refreshes its topology nor recycles the node's connections for it
    from redis.exceptions import MaxClientsReachedError

    _SERVER_FULL: tuple[type[Exception], ...] = (MaxClientsReachedError,)
except ImportError:  # older redis-py: a plain ConnectionError, as before
    _SERVER_FULL = ()

from connguard.wire import MAXCLIENTS_MESSAGE as MAXCLIENTS_MARKER


class GuardRefusal(RedisConnectionError):
    """Base of the errors that must never be retried at once: retrying only adds load to a server that said no."""


class MaxClientsError(GuardRefusal, *_SERVER_FULL):  # type: ignore[misc]
    """The server refused a new connection because it is at maxclients (server-side, unlike MaxConnectionsError)."""

    def __init__(self, endpoint: str, detail: str = f"{MAXCLIENTS_MARKER} reached") -> None:
        super().__init__(f"{endpoint} refused a new connection: {detail} (the server is at maxclients)")
        self.endpoint = endpoint


class CircuitOpenError(GuardRefusal):
    """The endpoint's circuit breaker is open: no socket was opened."""

    def __init__(self, endpoint: str, retry_in_s: float, last_error: str | None) -> None:
        cause = f"; last failure: {last_error}" if last_error else ""
        super().__init__(
            f"circuit open for {endpoint}: not opening a new connection for another {retry_in_s:.1f}s{cause}"
        )
        self.endpoint = endpoint
        self.retry_in_s = retry_in_s


class CircuitOpenServerFull(CircuitOpenError, *_SERVER_FULL):  # type: ignore[misc]
    """The breaker is open because the server refused for maxclients: like the refusal itself, capacity and not a
    node failure (RedisCluster keeps its topology and the node's live connections)."""


class BudgetExceeded(GuardRefusal):
    """The process-wide connection budget for an endpoint stayed full for the whole wait."""

    def __init__(self, endpoint: str, cap: int, waited_s: float, holders: Mapping[str, int], used: int | None = None) -> None:
        who = ", ".join(f"{name} holds {n}" for name, n in sorted(holders.items(), key=lambda kv: -kv[1])) or "none"
        used = cap if used is None else used
        super().__init__(
            f"connection budget for {endpoint} exhausted: {used} of {cap} connections held after waiting "
            f"{waited_s:.1f}s; holders: {who}"
        )
        self.endpoint = endpoint
        self.cap = cap
        self.used = used
        self.holders = dict(holders)


class ConnectRateLimited(GuardRefusal):
    """New connections to the endpoint are arriving faster than its token bucket allows."""

    def __init__(self, endpoint: str, rate_per_s: float, wait_s: float) -> None:
        super().__init__(
            f"new connections to {endpoint} limited to {rate_per_s:g}/s; the next slot is {wait_s:.2f}s away"
        )
        self.endpoint = endpoint


# Never retried by the guard's retry policy: server-side refusals, guard refusals, and client-side pool exhaustion
# (MaxConnectionsError says nothing about server health; retrying it just spins).
NOT_RETRIED: tuple[type[BaseException], ...] = (GuardRefusal, MaxConnectionsError)


def is_maxclients_refusal(exc: BaseException) -> bool:
    """True for the server's `max number of clients reached` line: redis-py's ConnectionError for it, or the
    ResponseError it raises for a cluster node's `max number of clients + cluster connections reached` (redis-py
    maps only the exact first wording to ConnectionError)."""
    return isinstance(exc, (RedisConnectionError, ResponseError)) and MAXCLIENTS_MARKER in str(exc)
