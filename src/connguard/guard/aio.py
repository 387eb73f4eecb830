"""The guard for redis.asyncio: the same breaker, budget, rate limit and leak detection, awaiting instead of blocking."""

from __future__ import annotations

import asyncio
import sys
import time
import weakref
from typing import Any, Callable

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry as AsyncRetry

from connguard.guard.errors import NOT_RETRIED
from connguard.guard.breaker import StateChange
from connguard.guard.budget import DEADLINE
from connguard.guard.leaks import LeakTracker
from connguard.guard.metrics import GuardMetrics, collect
from connguard.guard.pool import NoRoom, _in_use_of, creation_site, guarded_class, guarded_retry, reserve_slot
from connguard.guard.registry import REGISTRY, EndpointGuard, endpoint_of
from connguard.guard.settings import GuardSettings, split_settings


class AsyncGuardRetry(AsyncRetry):
    """redis.asyncio's Retry, except refusals propagate at once."""

    async def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):  # type: ignore[override]
        self._backoff.reset()
        failures = 0
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                if isinstance(error, NOT_RETRIED) or (is_retryable and not is_retryable(error)):
                    raise
                failures += 1
                if with_failure_count:
                    await fail(error, failures)
                else:
                    await fail(error)
                if self._retries >= 0 and failures > self._retries:
                    raise error
                backoff = self._backoff.compute(failures)
                if backoff > 0:
                    await asyncio.sleep(backoff)


class AsyncGuardedConnectionMixin:
    _cg_endpoint: EndpointGuard | None = None
    _cg_holder = "unguarded"
    _cg_out: tuple[Any, ...] | None = None
    _cg_slot: list[Any] | None = None

    async def connect(self) -> None:
        if self.is_connected:  # type: ignore[attr-defined]
            return  # checked on every checkout: skip the retry machinery when already open
        await super().connect()  # type: ignore[misc]

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self.is_connected:  # type: ignore[attr-defined]
            return
        ep = self._cg_endpoint
        if ep is None:
            return await super().connect_check_health(check_health, retry_socket_connect)  # type: ignore[misc]
        probe = await ep.before_connect_async(self, self._cg_holder)
        try:
            await super().connect_check_health(check_health=check_health, retry_socket_connect=False)  # type: ignore[misc]
        except BaseException as exc:
            if self.is_connected:  # type: ignore[attr-defined]
                self._close()  # cancelled or crashed mid-handshake: close the socket with its slot (see the sync mixin)
            err = ep.after_failure(self, probe, exc)
            if err is exc:
                raise
            raise err from exc
        ep.after_success(probe)

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().disconnect(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._cg_release()

    def _close(self) -> None:
        super()._close()  # type: ignore[misc]
        self._cg_release()

    def _cg_release(self) -> None:
        if self._cg_endpoint is not None:
            self._cg_endpoint.budget.release(self)


class AsyncGuardedConnection(AsyncGuardedConnectionMixin, Connection):
    pass


class AsyncGuardedSSLConnection(AsyncGuardedConnectionMixin, SSLConnection):
    pass


class AsyncGuardedUnixDomainSocketConnection(AsyncGuardedConnectionMixin, UnixDomainSocketConnection):
    pass


_GUARDED: dict[type, type] = {
    Connection: AsyncGuardedConnection,
    SSLConnection: AsyncGuardedSSLConnection,
    UnixDomainSocketConnection: AsyncGuardedUnixDomainSocketConnection,
}


class AsyncGuardedConnectionPool(aioredis.ConnectionPool):
    """Use as `redis.asyncio.Redis(connection_pool=AsyncGuardedConnectionPool(host=..., budget=20))`.

    Shares the process-wide endpoint state with sync pools to the same endpoint. It does not volunteer idle
    connections to other pools' budget pressure: closing them safely needs its own event loop.
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
        connection_kwargs["retry"] = guarded_retry(connection_kwargs.get("retry"), settings, AsyncGuardRetry)
        connection_class = guarded_class(connection_class, AsyncGuardedConnectionMixin, _GUARDED)
        super().__init__(connection_class=connection_class, max_connections=max_connections, **connection_kwargs)
        self.settings = settings
        self.name = name or f"asyncpool@{creation_site()}"
        key, label = endpoint_of(connection_class, self.connection_kwargs)
        self.endpoint = REGISTRY.endpoint(key, label, settings)
        self.endpoint.pools.add(self)
        if on_state_change is not None:
            self.endpoint.breaker.add_listener(on_state_change)
        self.leaks = LeakTracker(
            label, self.name, settings.leak_threshold_s, settings.leak_include_pubsub, _in_use_of(weakref.ref(self))
        )
        self._track = settings.leak_threshold_s is not None
        self._open_lock = asyncio.Lock()
        self._orphans: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._orphaned = False

    def make_connection(self) -> Any:
        if self.endpoint.budget.full():
            raise NoRoom  # redis.asyncio counts connections by its sets: nothing to undo
        conn = super().make_connection()
        conn._cg_endpoint = self.endpoint
        conn._cg_holder = self.name
        reserve_slot(conn, self.endpoint)
        return conn

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            conn = await super().get_connection(*args, **kwargs)
        except NoRoom:
            conn = await self._wait_and_get(args, kwargs)
        if self._track:
            self.leaks.checkout(conn, sys._getframe(1), _current_task())
        return conn

    async def _wait_and_get(self, args: Any, kwargs: Any) -> Any:
        """One waiter per pool at a time, within one budget_wait_s; never a lock across a connect (see the sync pool)."""
        budget = self.endpoint.budget
        reset = DEADLINE.set(time.monotonic() + budget.wait_s)
        try:
            try:
                await asyncio.wait_for(self._open_lock.acquire(), budget.wait_s)
            except asyncio.TimeoutError:
                raise budget.exceeded(budget.wait_s) from None
            try:
                while True:
                    try:
                        return await super().get_connection(*args, **kwargs)
                    except NoRoom:
                        await budget.wait_for_room_async(lambda: bool(self._available_connections))
            finally:
                self._open_lock.release()
        finally:
            DEADLINE.reset(reset)

    async def release(self, connection: Any) -> None:
        if self._track:
            self.leaks.checkin(connection)
        if self._orphaned and connection in self._orphans:
            self._orphans.discard(connection)  # checked out before reset(): close it rather than raise KeyError
            await connection.disconnect()
            return
        await super().release(connection)

    def reset(self) -> None:
        """redis-py's reset, minus the orphaned sockets and budget slots (idle ones are closed now)."""
        idle = list(getattr(self, "_available_connections", ()))
        in_use = list(getattr(self, "_in_use_connections", ()))
        super().reset()
        self._open_lock = asyncio.Lock()
        self._orphans: "weakref.WeakSet[Any]" = weakref.WeakSet(in_use)
        self._orphaned = bool(in_use)
        for conn in idle:
            conn._close()  # synchronous: closes the transport and frees the budget slot

    def metrics(self) -> GuardMetrics:
        return collect(self)


def _current_task() -> Any:
    try:
        return asyncio.current_task() or "no task"
    except RuntimeError:
        return "no event loop"


def guarded_async_client(
    url: str, *, settings: GuardSettings | None = None, name: str | None = None, single_connection_client: bool = False,
    **kwargs: Any,
) -> aioredis.Redis:
    """`redis.asyncio.Redis` for `url` over an AsyncGuardedConnectionPool; `aclose()` closes the pool's sockets too."""
    pool = AsyncGuardedConnectionPool.from_url(url, settings=settings, name=name or f"asyncclient@{creation_site(2)}", **kwargs)
    client = aioredis.Redis(connection_pool=pool, single_connection_client=single_connection_client)
    client.auto_close_connection_pool = True
    return client


