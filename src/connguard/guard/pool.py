"""GuardedConnectionPool: a redis-py ConnectionPool whose connects pass the breaker, budget and rate limit."""

from __future__ import annotations

import os
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
from connguard.guard.budget import DEADLINE
from connguard.guard.leaks import LeakTracker
from connguard.guard.metrics import GuardMetrics, collect
from connguard.guard.registry import REGISTRY, EndpointGuard, endpoint_of
from connguard.guard.settings import GuardSettings, split_settings


class GuardedConnectionMixin:
    """Wraps one socket open: gates before it, verdict after it. Commands on an open socket pay nothing."""

    _cg_endpoint: EndpointGuard | None = None
    _cg_holder = "unguarded"
    _cg_out: tuple[Any, ...] | None = None  # the checkout record (see leaks.py) while checked out
    _cg_slot: list[Any] | None = None  # a budget slot its pool reserved when making it, until the first connect

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
            if self._sock is not None:  # type: ignore[attr-defined]
                # redis-py closes the socket only for a RedisError in the handshake; after a KeyboardInterrupt or a
                # bug it stays open, and a socket open with its budget slot released is a socket nobody counts.
                _close_quietly(self)
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


def _close_quietly(conn: Any) -> None:
    try:
        conn.disconnect()
    except Exception:  # closing is best effort; the original error is the one to raise
        pass


class NoRoom(Exception):
    """Internal: the pool needs a new connection and the budget has no slot for it (never escapes the pool)."""


def reserve_slot(conn: Any, endpoint: EndpointGuard) -> None:
    """Called under the pool's lock as a connection object is made: take its budget slot now, or NoRoom."""
    budget = endpoint.budget
    if budget.cap is not None:
        token = budget.reserve()
        if token is None:
            raise NoRoom
        conn._cg_slot = token


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

    def make_connection(self) -> Any:
        if self._budget.full():
            raise NoRoom  # before redis-py counts it against max_connections
        conn = super().make_connection()
        conn._cg_endpoint = self.endpoint
        conn._cg_holder = self.name
        try:
            reserve_slot(conn, self.endpoint)
        except NoRoom:
            self._created_connections -= 1  # redis-py counted it; it will never exist
            raise
        return conn

    # The hot path: one attribute write per checkout and per release (LeakTracker.checkout/checkin, inlined).
    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            conn = _base_get(self, *args, **kwargs)
        except NoRoom:  # the pool had no idle connection and the budget no slot: wait for one or the other
            conn = self._wait_and_get(args, kwargs)
        if self._track:
            caller = _getframe(1)
            conn._cg_out = (monotonic(), caller, caller.f_lineno, get_ident())
        return conn

    def _wait_and_get(self, args: Any, kwargs: Any) -> Any:
        """One waiter per pool at a time, so a connection returned here goes to one waiter instead of every waiter
        opening (or shedding) a socket. All of it within one budget_wait_s. No lock is held across a connect that
        has its slot, so a slow connect or a half-open probe queues no one."""
        budget = self._budget
        reset = DEADLINE.set(monotonic() + budget.wait_s)
        try:
            if not self._open_lock.acquire(timeout=budget.wait_s):
                raise budget.exceeded(budget.wait_s)
            try:
                while True:
                    try:
                        return _base_get(self, *args, **kwargs)
                    except NoRoom:
                        budget.wait_for_room(self._has_idle, self.name, self)  # BudgetExceeded at the deadline
            finally:
                self._open_lock.release()
        finally:
            DEADLINE.reset(reset)

    def release(self, connection: Any) -> None:
        if self._track:
            out, connection._cg_out = connection._cg_out, None
            if self._reported and id(connection) in self._reported:
                self.leaks.report_return(connection, out)
        if self._orphaned and connection in self._orphans:
            # Checked out before reset(): redis-py would drop it with its socket open until garbage collection.
            self._orphans.discard(connection)
            connection.disconnect()
            return
        _base_release(self, connection)

    def reset(self) -> None:
        """redis-py's reset (also run by _checkpid after fork), minus the orphaned sockets and budget slots."""
        same_process = getattr(self, "pid", None) == os.getpid()
        idle = list(getattr(self, "_available_connections", ()))
        in_use = list(getattr(self, "_in_use_connections", ()))
        super().reset()
        self._open_lock = Lock()  # another thread may have held it at fork
        self._orphans: "weakref.WeakSet[Any]" = weakref.WeakSet()  # weak: a dropped orphan is closed by its __del__
        self._orphaned = False  # a plain flag keeps release() at one attribute read in the common case
        if same_process:  # after fork the parent's sockets are the parent's: leave them alone
            self._orphans.update(in_use)
            self._orphaned = bool(in_use)
            for conn in idle:
                conn.disconnect()

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


def guarded_client(
    url: str, *, settings: GuardSettings | None = None, name: str | None = None, single_connection_client: bool = False,
    **kwargs: Any,
) -> redis.Redis:
    """`redis.Redis` for `url` over a GuardedConnectionPool. Guard settings and redis-py options may be mixed.
    The client owns its pool, as with `redis.Redis.from_url`: `close()` closes the pool's sockets too."""
    pool = GuardedConnectionPool.from_url(url, settings=settings, name=name or f"client@{creation_site(2)}", **kwargs)
    client = redis.Redis(connection_pool=pool, single_connection_client=single_connection_client)
    client.auto_close_connection_pool = True
    return client


__all__ = ["GuardedConnectionPool", "GuardedConnection", "guarded_client"]
