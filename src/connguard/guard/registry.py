"""Process-wide state per endpoint (host, port, db, user, TLS): one breaker, one budget, one rate limiter."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Any

from redis.exceptions import AuthenticationError, ConnectionError, RedisError, TimeoutError

from connguard.guard.breaker import CircuitBreaker
from connguard.guard.budget import ConnectionBudget
from connguard.guard.errors import MaxClientsError, is_maxclients_refusal
from connguard.guard.ratelimit import ConnectRateLimiter
from connguard.guard.settings import GuardSettings

log = logging.getLogger("connguard.guard")

EndpointKey = tuple[Any, ...]


def endpoint_of(connection_class: type, kwargs: dict[str, Any]) -> tuple[EndpointKey, str]:
    """The key (as `Target.endpoint_key`) and a password-free label for a pool's connection settings."""
    user = kwargs.get("username")
    db = int(kwargs.get("db") or 0)
    who = f"{user}@" if user else ""
    path = kwargs.get("path")
    if path:
        return (path, None, db, user, False), f"unix://{who}{path}?db={db}"
    tls = "SSL" in connection_class.__name__ or any("SSL" in c.__name__ for c in connection_class.__mro__)
    host = kwargs.get("host") or "localhost"
    port = int(kwargs.get("port") or 6379)
    scheme = "rediss" if tls else "redis"
    return (host, port, db, user, tls), f"{scheme}://{who}{host}:{port}/{db}"


class EndpointGuard:
    """Everything that gates opening a socket to one endpoint, plus its counters."""

    def __init__(self, key: EndpointKey, label: str, settings: GuardSettings) -> None:
        self.key = key
        self.label = label
        self.settings = settings
        self.breaker = CircuitBreaker(label, settings.breaker_settings())
        self.budget = ConnectionBudget(label, settings.budget, settings.budget_wait_s)
        self.limiter = ConnectRateLimiter(label, settings.connect_rate_per_s, settings.connect_burst, settings.connect_rate_wait_s)
        self.pools: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self.attempts_total = 0  # sockets we tried to open
        self.connects_total = 0  # ...that got admitted
        self.refusals_total = 0  # ...refused for maxclients
        self.failures_total = 0  # ...that failed otherwise (timeouts, resets, refused ports)
        self._recent: deque[float] = deque(maxlen=4096)

    # -- before the socket -------------------------------------------------------------------
    def _count_attempt(self) -> None:
        with self._lock:
            self.attempts_total += 1

    def before_connect(self, conn: object, holder: str) -> bool:
        """Breaker (fail fast), budget (wait), breaker admission, rate limit (wait). Returns True for a probe."""
        try:
            self.breaker.check()
            self.budget.acquire(conn, holder)
        except BaseException:
            self.budget.release(conn)  # gives back a slot reserved for this connection
            raise
        probe = self._admit(conn)
        try:
            self.limiter.acquire()
        except BaseException:
            self._undo(conn, probe)
            raise
        self._count_attempt()
        return probe

    async def before_connect_async(self, conn: object, holder: str) -> bool:
        try:
            self.breaker.check()
            await self.budget.acquire_async(conn, holder)
        except BaseException:
            self.budget.release(conn)
            raise
        probe = self._admit(conn)
        try:
            await self.limiter.acquire_async()
        except BaseException:
            self._undo(conn, probe)
            raise
        self._count_attempt()
        return probe

    def _admit(self, conn: object) -> bool:
        try:
            return self.breaker.admit()
        except BaseException:
            self.budget.release(conn)
            raise

    def _undo(self, conn: object, probe: bool) -> None:
        self.budget.release(conn)
        if probe:
            self.breaker.abandon_probe()

    # -- after the socket ----------------------------------------------------------------------
    def after_success(self, probe: bool) -> None:
        with self._lock:
            self.connects_total += 1
            self._recent.append(time.monotonic())
        self.breaker.success(probe)

    def after_failure(self, conn: object, probe: bool, exc: BaseException) -> BaseException:
        """Release the slot, tell the breaker, and return the error to raise (MaxClientsError for a refusal)."""
        self.budget.release(conn)
        if isinstance(exc, AuthenticationError):
            self.breaker.success(probe)  # admitted, then refused the password: not a capacity problem
            return exc
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            refusal = is_maxclients_refusal(exc)
            with self._lock:
                if refusal:
                    self.refusals_total += 1
                else:
                    self.failures_total += 1
            self.breaker.failure(probe, refusal, str(exc) or type(exc).__name__)
            return MaxClientsError(self.label, str(exc)) if refusal else exc
        if probe:
            if isinstance(exc, RedisError):
                self.breaker.success(probe)  # the server answered (a ResponseError in the handshake): it let us in
            else:
                self.breaker.abandon_probe()  # a bug, KeyboardInterrupt, CancelledError: no verdict, next caller probes
        return exc

    def after_fork_in_child(self) -> None:
        """Fresh locks (a thread of the parent may have held one at fork) and an empty budget for the child."""
        self._lock = threading.Lock()
        self.budget.after_fork_in_child()
        self.breaker.after_fork_in_child()
        self.limiter.after_fork_in_child()

    def connects_per_s(self, window_s: float = 10.0) -> float:
        cutoff = time.monotonic() - window_s
        return sum(1 for t in list(self._recent) if t >= cutoff) / window_s


class Registry:
    """The endpoints of this process. The first pool to name an endpoint sets its shared settings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._endpoints: dict[EndpointKey, EndpointGuard] = {}

    def endpoint(self, key: EndpointKey, label: str, settings: GuardSettings) -> EndpointGuard:
        with self._lock:
            guard = self._endpoints.get(key)
            if guard is None:
                guard = self._endpoints[key] = EndpointGuard(key, label, settings)
                return guard
        if guard.settings.endpoint_part() != settings.endpoint_part():
            log.warning(
                "%s is already guarded in this process with other endpoint settings (budget=%s, breaker, rate); "
                "keeping the first ones so the budget stays one budget", label, guard.settings.budget,
            )
        return guard

    def endpoints(self) -> list[EndpointGuard]:
        with self._lock:
            return list(self._endpoints.values())

    def forget(self, key: EndpointKey) -> None:
        with self._lock:
            self._endpoints.pop(key, None)

    def reset(self) -> None:
        """Drop all endpoint state (tests; or after reconfiguring). Pools created before keep their old guard."""
        with self._lock:
            self._endpoints.clear()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        for guard in self._endpoints.values():
            guard.after_fork_in_child()


REGISTRY = Registry()
os.register_at_fork(after_in_child=REGISTRY._after_fork_in_child)
