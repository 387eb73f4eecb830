"""GuardedConnectionPool: a redis-py ConnectionPool whose connects pass the breaker, budget and rate limit."""

from __future__ import annotations

import sys
import weakref
from sys import _getframe
from threading import Lock, get_ident
from time import monotonic
from typing import Any, Callable

import redis
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection

from connguard.guard.backoff import GuardRetry, guard_retry
from connguard.guard.breaker import StateChange
from connguard.guard.leaks import LeakTracker
from connguard.guard.metrics import GuardMetrics, collect
from connguard.guard.registry import REGISTRY, EndpointGuard, endpoint_of
from connguard.guard.settings import GuardSettings, split_settings


class GuardedConnectionMixin:
    """Wraps one socket open: gates before it, verdict after it. Commands on an open socket pay nothing."""

    _cg_endpoint: EndpointGuard | None = None
    _cg_holder = "unguarded"
    _cg_out: tuple[Any, ...] | None = None  # the checkout record (see leaks.py) while checked out

    def connect(self) -> None:
        if self._sock:  # type: ignore[attr-defined]
            return  # the pool calls connect() on every checkout: skip redis-py's retry machinery when already open
        super().connect()  # type: ignore[misc]

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock:  # type: ignore[attr-defined]
            return
        ep = self._cg_endpoint
        if ep is None:
            return super().connect_check_health(check_health, retry_socket_connect)  # type: ignore[misc]
        probe = ep.before_connect(self, self._cg_holder)
        try:
            # One socket per attempt: redis-py's nested socket-level retry would multiply attempts.
            super().connect_check_health(check_health=check_health, retry_socket_connect=False)  # type: ignore[misc]
        except BaseException as exc:
            err = ep.after_failure(self, probe, exc)
            if err is exc:
                raise
            raise err from exc
        ep.after_success(probe)

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().disconnect(*args, **kwargs)  # type: ignore[misc]
        finally:
            if self._cg_endpoint is not None:
                self._cg_endpoint.budget.release(self)


class GuardedConnection(GuardedConnectionMixin, Connection):
    pass


class GuardedSSLConnection(GuardedConnectionMixin, SSLConnection):
    pass


class GuardedUnixDomainSocketConnection(GuardedConnectionMixin, UnixDomainSocketConnection):
    pass


_GUARDED: dict[type, type] = {
    Connection: GuardedConnection,
    SSLConnection: GuardedSSLConnection,
    UnixDomainSocketConnection: GuardedUnixDomainSocketConnection,
}


def guarded_class(cls: type, mixin: type = GuardedConnectionMixin, table: dict[type, type] = _GUARDED) -> type:
    """The guarded twin of a connection class (made once for custom subclasses)."""
    if issubclass(cls, mixin):
        return cls
    if cls not in table:
        table[cls] = type(f"Guarded{cls.__name__}", (mixin, cls), {})
    return table[cls]


def guarded_retry(retry: Any, settings: GuardSettings, retry_class: type = GuardRetry) -> Any:
    """Keep a caller's backoff and count, but never retry a refusal at once."""
    if isinstance(retry, retry_class):
        return retry
    if retry is None:
        return guard_retry(settings.backoff, settings.retries) if retry_class is GuardRetry else retry_class(settings.backoff.build(), settings.retries)
    return retry_class(retry._backoff, retry._retries, retry._supported_errors)


def _in_use_of(pool_ref: "weakref.ref[Any]") -> Any:
    """What the leak watchdog scans; a weak reference so tracking never keeps a pool alive."""

    def in_use() -> list[Any]:
        pool = pool_ref()
        return list(pool._in_use_connections) if pool is not None else []

    return in_use


def creation_site(depth: int = 3) -> str:
    """`file.py:line` of the code that built the pool: the default pool name, so holders are recognisable."""
    frame = sys._getframe(depth)
    while frame is not None and ("/redis/" in frame.f_code.co_filename or "/connguard/guard/" in frame.f_code.co_filename):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"


_base_get = redis.ConnectionPool.get_connection  # bound once: no super() lookup on the hot path
_base_release = redis.ConnectionPool.release


class GuardedConnectionPool(redis.ConnectionPool):
    """Use as `redis.Redis(connection_pool=GuardedConnectionPool(host=..., budget=20, leak_threshold_s=5))`.

    Guard settings (see GuardSettings) may be given as keyword arguments beside redis-py's own; the rest go to
    redis-py unchanged. `name` labels this pool in budget errors and leak reports.
    """

    def __init__(
        self,
        connection_class: type = Connection,
        max_connections: int | None = None,
        *,
        settings: GuardSettings | None = None,
        name: str | None = None,
        on_state_change: Callable[[StateChange], None] | None = None,
        **connection_kwargs: Any,
    ) -> None:
        settings, connection_kwargs = split_settings(settings, connection_kwargs)
        connection_kwargs["retry"] = guarded_retry(connection_kwargs.get("retry"), settings)
        connection_class = guarded_class(connection_class)
        super().__init__(connection_class=connection_class, max_connections=max_connections, **connection_kwargs)
        self.settings = settings
        self.name = name or f"pool@{creation_site()}"
        key, label = endpoint_of(connection_class, self.connection_kwargs)
        self.endpoint = REGISTRY.endpoint(key, label, settings)
        self.endpoint.pools.add(self)
        if on_state_change is not None:
            self.endpoint.breaker.add_listener(on_state_change)
        self.endpoint.budget.add_shedder(self)
        self.leaks = LeakTracker(
            label, self.name, settings.leak_threshold_s, settings.leak_include_pubsub, _in_use_of(weakref.ref(self))
        )
        self._track = settings.leak_threshold_s is not None
        self._reported = self.leaks.reported
        self._budget = self.endpoint.budget
        self._open_lock = Lock()

    def make_connection(self) -> Any:
        conn = super().make_connection()
        conn._cg_endpoint = self.endpoint
        conn._cg_holder = self.name
        return conn

    # The hot path: one attribute write per checkout and per release (LeakTracker.checkout/checkin, inlined).
    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._available_connections or self._budget.cap is None:
            conn = _base_get(self, *args, **kwargs)
        else:
            # A new socket may be needed. One opener at a time per pool, so threads that arrive together do not
            # all open sockets (or close this pool's idle ones to make room) when one returned connection will do.
            with self._open_lock:
                if not self._available_connections and self._budget.full():
                    self._budget.wait_for_room(self._has_idle, self.name)
                conn = _base_get(self, *args, **kwargs)
        if self._track:
            caller = _getframe(1)
            conn._cg_out = (monotonic(), caller, caller.f_lineno, get_ident())
        return conn

    def release(self, connection: Any) -> None:
        if self._track:
            out, connection._cg_out = connection._cg_out, None
            if self._reported and id(connection) in self._reported:
                self.leaks.report_return(connection, out)
        _base_release(self, connection)

    def _has_idle(self) -> bool:
        return bool(self._available_connections)

    def shed_idle(self) -> bool:
        """Close the socket of one idle pooled connection (the budget asks when another pool needs room)."""
        with self._lock:
            for conn in self._available_connections:
                if conn._sock is not None:
                    conn.disconnect()
                    return True
        return False

    def metrics(self) -> GuardMetrics:
        return collect(self)


def guarded_client(url: str, *, settings: GuardSettings | None = None, name: str | None = None, **kwargs: Any) -> redis.Redis:
    """`redis.Redis` for `url` over a GuardedConnectionPool. Guard settings and redis-py options may be mixed."""
    pool = GuardedConnectionPool.from_url(url, settings=settings, name=name or f"client@{creation_site(2)}", **kwargs)
    return redis.Redis(connection_pool=pool)


__all__ = ["GuardedConnectionPool", "GuardedConnection", "guarded_client"]
