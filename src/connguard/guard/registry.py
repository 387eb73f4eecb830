"""Process-wide state per endpoint (host, port, db, user, TLS): one breaker, one budget, one rate limiter."""

from __future__ import annotations

import errno

import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Any

from redis.exceptions import AuthenticationError, ConnectionError, RedisError, TimeoutError

from connguard.guard.breaker import CLOSED, OPEN, CircuitBreaker, StateChange
from connguard.guard.budget import ConnectionBudget
from connguard.guard.errors import MaxClientsError, is_maxclients_refusal
from connguard.guard.ratelimit import ConnectRateLimiter
from connguard.guard.room import RoomWatch
from connguard.guard.settings import GuardSettings
from connguard.target import Target

log = logging.getLogger("connguard.guard")

EndpointKey = tuple[Any, ...]


def endpoint_of(connection_class: type, kwargs: dict[str, Any]) -> tuple[EndpointKey, str]:
    """The key (`Target.endpoint_key`, the one definition of "same endpoint") and a password-free label."""
    path = kwargs.get("path")
    tls = any(getattr(c, "__name__", "").startswith("SSL") for c in getattr(connection_class, "__mro__", ()))
    target = Target(
        scheme="unix" if path else ("rediss" if tls else "redis"),
        host=None if path else (kwargs.get("host") or "localhost"),
        port=None if path else int(kwargs.get("port") or 6379),
        path=path or None,
        db=int(kwargs.get("db") or 0),
        username=kwargs.get("username") or None,
    )  # no password: the label is shown in errors and logs
    return target.endpoint_key, target.redacted


class EndpointGuard:
    """Everything that gates opening a socket to one endpoint, plus its counters."""

    def __init__(self, key: EndpointKey, label: str, settings: GuardSettings) -> None:
        self.key = key
        self.label = label
        self.settings = settings
        self.breaker = CircuitBreaker(label, settings.breaker_settings())
        self.room = RoomWatch()
        self.breaker.known_full = self.room.knows_full
        self.breaker.add_listener(self._on_state_change)
        self.budget = ConnectionBudget(label, settings.budget, settings.budget_wait_s)
        self.limiter = ConnectRateLimiter(label, settings.connect_rate_per_s, settings.connect_burst, settings.connect_rate_wait_s)
        self.pools: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self.attempts_total = 0  # sockets we tried to open
        self.connects_total = 0  # ...that connected (handshake done)
        self.refusals_total = 0  # ...refused for maxclients
        self.failures_total = 0  # ...that failed otherwise (timeouts, resets, refused ports)
        self._recent: deque[float] = deque(maxlen=4096)

    # -- before the socket: the decision, shared by the sync and asyncio gates -------------------
    def admit(self) -> tuple[bool, float]:
        """Breaker (fail fast, or this caller is the half-open probe), then the rate limit. Returns (probe, seconds
        the caller must wait for its token): the sync gate sleeps them, the asyncio gate awaits them."""
        probe = self.breaker.admit()
        try:
            wait = self.limiter.reserve()
        except BaseException:
            if probe:
                self.breaker.abandon_probe()  # never reached the server: the next caller probes instead
            raise
        with self._lock:
            self.attempts_total += 1
        return probe, wait

    # -- after the socket ----------------------------------------------------------------------
    def after_success(self, probe: bool) -> None:
        with self._lock:
            self.connects_total += 1
            self._recent.append(time.monotonic())
        self.breaker.success(probe)

    def after_failure(self, probe: bool, exc: BaseException, closed_here: bool = False) -> BaseException:
        """Tell the breaker, and return the error to raise (MaxClientsError for a refusal, else `exc` itself).
        `closed_here`: another thread of this process disconnected the connection while it was connecting."""
        if isinstance(exc, AuthenticationError):
            self.breaker.success(probe)  # admitted, then refused the password: not a capacity problem
            return exc
        if closed_here or _closed_by_this_process(exc):
            # pool.disconnect() closed the socket under the handshake: our own doing, no word on the server.
            if probe:
                self.breaker.abandon_probe()
            return exc
        refusal = is_maxclients_refusal(exc)
        if refusal or isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            with self._lock:
                if refusal:
                    self.refusals_total += 1
                else:
                    self.failures_total += 1
            self.breaker.failure(probe, refusal, str(exc) or type(exc).__name__)
            if refusal and not self.room.watching and self.breaker.state == OPEN:
                self.room.start()  # from now on, checkouts of held connections ask whether room has returned
            return MaxClientsError(self.label, str(exc)) if refusal else exc
        if probe:
            if isinstance(exc, RedisError):
                self.breaker.success(probe)  # the server answered (a ResponseError in the handshake): it let us in
            else:
                self.breaker.abandon_probe()  # a bug, KeyboardInterrupt, CancelledError: no verdict, next caller probes
        return exc

    def _on_state_change(self, change: StateChange) -> None:
        if change.new == CLOSED:
            self.room.stop()

    def room_seen(self, room: bool | None) -> None:
        """A reading over a held connection (guard/room.py); room makes the breaker's probe due at once."""
        if self.room.record(room):
            self.breaker.room_returned()

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


def _closed_by_this_process(exc: BaseException) -> bool:
    """EBADF: the socket was closed by this process (a racing disconnect()), not refused or dropped by the server.
    redis-py reports it as `Error 9 while writing to socket. Bad file descriptor.`"""
    return getattr(exc, "errno", None) == errno.EBADF or "Bad file descriptor" in str(exc)
