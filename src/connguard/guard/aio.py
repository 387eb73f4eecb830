"""The guard for redis.asyncio: the same decisions as the sync pools (see _core.py), awaited instead of slept."""

from __future__ import annotations

import asyncio
import time
from asyncio import current_task
from sys import _getframe
from threading import get_ident
from time import monotonic
from typing import Any, Awaitable, Callable

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry as AsyncRetry

from connguard.guard import _core
from connguard.guard._core import NoRoom, creation_site
from connguard.guard.backoff import gives_up_at_once, retry_pause
from connguard.guard.breaker import StateChange
from connguard.guard.budget import DEADLINE
from connguard.guard.settings import GuardSettings
from connguard.guard.snapshot import GuardMetrics, collect


class AsyncGuardRetry(AsyncRetry):
    """redis.asyncio's Retry, except refusals propagate at once (the opt-in `retries=`; see backoff.GuardRetry)."""

    async def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):  # type: ignore[override]
        self._backoff.reset()
        failures = 0
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                if gives_up_at_once(error, is_retryable):
                    raise
                failures += 1
                await (fail(error, failures) if with_failure_count else fail(error))
                pause = retry_pause(self, error, failures, is_retryable)
                if pause is None:
                    raise error
                if pause > 0:
                    await asyncio.sleep(pause)


class _AsyncGuard:
    """The hooks, shared by both asyncio pools. It sits before the redis-py class in the MRO.

    Shares the process-wide endpoint state with sync pools to the same endpoint. Never blocks the event loop: waits
    are asyncio sleeps, and the thread locks shared with sync pools are only held for a few operations.
    """

    _cg_redis_base: type
    _budget: Any
    _track: bool
    _cg_loop_thread: int | None = None

    def make_connection(self) -> Any:
        if self._budget.full():
            raise NoRoom  # redis.asyncio counts connections by its sets: nothing to undo
        # Made, and then connected, on the event loop's thread: the thread that may close it (see _cg_shed_one).
        # Noted here rather than at every checkout, which is the hot path.
        self._cg_loop_thread = get_ident()
        conn = super().make_connection()  # type: ignore[misc]
        if not _core.adopt(self, conn, asynchronous=True):
            raise NoRoom
        return conn

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            conn = await super().get_connection(*args, **kwargs)  # type: ignore[misc]
        except NoRoom:
            conn = await self._wait_and_get(args, kwargs)
        if self._room.watching:  # see the sync pool
            await _core.ask_room_async(self, conn)
        if self._track:  # the checkout record (guard/leaks.py has the tuple), written here: the hot path
            caller = _getframe(1)
            conn._cg_out = (monotonic(), caller, caller.f_lasti, current_task())
        return conn

    async def _wait_and_get(self, args: Any, kwargs: Any) -> Any:
        """One waiter per pool at a time, within one budget_wait_s; never a lock across a connect (see the sync pool)."""
        budget = self._budget
        reset = DEADLINE.set(time.monotonic() + budget.wait_s)
        try:
            try:
                await asyncio.wait_for(self._open_lock.acquire(), budget.wait_s)
            except asyncio.TimeoutError:
                raise budget.exceeded(budget.wait_s) from None
            try:
                while True:
                    try:
                        return await super().get_connection(*args, **kwargs)  # type: ignore[misc]
                    except NoRoom:
                        await budget.wait_for_room_async(self._cg_has_idle, self)
            finally:
                self._open_lock.release()
        finally:
            DEADLINE.reset(reset)

    def release(self, connection: Any) -> Awaitable[None]:
        """A plain function that hands back redis-py's own release coroutine: the caller awaits it directly, with no
        coroutine of ours in between (one layer fewer on every command; redis-py awaits release at once)."""
        if self._track:  # the checkout record cleared (a reported leak is logged as returned)
            out = getattr(connection, "_cg_out", None)
            if out is not None:
                connection._cg_out = None
                if self._reported and id(connection) in self._reported:
                    self.leaks.report_return(connection, out)
        if self._orphaned and connection in self._orphans:
            self._orphans.discard(connection)  # checked out before reset(): close it rather than raise KeyError
            _core.let_go(self, connection)
            return _released()
        return super().release(connection)  # type: ignore[misc]

    def reset(self) -> None:
        """redis-py's reset, minus the orphaned sockets and budget slots (idle ones are closed now)."""
        idle = list(getattr(self, "_available_connections", ()))
        in_use = list(getattr(self, "_in_use_connections", ()))
        super().reset()  # type: ignore[misc]
        self._open_lock = asyncio.Lock()
        self._orphans.clear()
        self._orphans.update(in_use)
        self._orphaned = bool(in_use)
        for conn in idle:
            _core.let_go(self, conn)

    def __repr__(self) -> str:
        return _core.redis_repr(self, super().__repr__(), self._cg_redis_base)

    def metrics(self) -> GuardMetrics:
        return collect(self)

    def _cg_idle(self) -> list[Any]:
        return list(self._available_connections)  # type: ignore[attr-defined]

    def _cg_in_use(self) -> list[Any]:
        return list(self._in_use_connections)  # type: ignore[attr-defined]

    def _cg_has_idle(self) -> bool:
        return bool(self._available_connections)  # type: ignore[attr-defined]

    def _cg_shed_one(self) -> bool:
        """Let go of one idle connection for another pool of the endpoint. A socketless one is let go from any
        thread; an open one only from this pool's own event-loop thread (closing a transport is not thread-safe)."""
        idle = self._available_connections  # type: ignore[attr-defined]
        own_thread = get_ident() == self._cg_loop_thread
        for conn in list(idle):
            if conn.is_connected and not own_thread:
                continue
            try:
                idle.remove(conn)  # atomic: if the loop took it first, it is not ours to close
            except ValueError:
                continue
            _core.let_go(self, conn)
            return True
        return False


class AsyncGuardedConnectionPool(_AsyncGuard, aioredis.ConnectionPool):
    """Use as `redis.asyncio.Redis(connection_pool=AsyncGuardedConnectionPool(host=..., budget=20))`."""

    _cg_redis_base = aioredis.ConnectionPool

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
        connection_kwargs = _core.setup(self, connection_class, connection_kwargs, settings, name, "asyncpool", AsyncGuardRetry)
        self._open_lock = asyncio.Lock()
        super().__init__(connection_class=connection_class, max_connections=max_connections, **connection_kwargs)
        _core.register(self, on_state_change)


class AsyncGuardedBlockingConnectionPool(_AsyncGuard, aioredis.BlockingConnectionPool):
    """redis.asyncio's BlockingConnectionPool plus the guard."""

    _cg_redis_base = aioredis.BlockingConnectionPool

    def __init__(
        self,
        max_connections: int = 50,
        timeout: float | None = 20,
        connection_class: type = Connection,
        queue_class: type = asyncio.LifoQueue,
        *,
        settings: GuardSettings | None = None,
        name: str | None = None,
        on_state_change: Callable[[StateChange], None] | None = None,
        **connection_kwargs: Any,
    ) -> None:
        connection_kwargs = _core.setup(self, connection_class, connection_kwargs, settings, name, "asyncpool", AsyncGuardRetry)
        self._open_lock = asyncio.Lock()
        super().__init__(
            max_connections=max_connections, timeout=timeout, connection_class=connection_class,
            queue_class=queue_class, **connection_kwargs,
        )
        _core.register(self, on_state_change)


async def _released() -> None:
    """The awaitable release() returns when there is nothing left for redis-py to do."""


def guarded_async_client(
    url: str, *, settings: GuardSettings | None = None, name: str | None = None, single_connection_client: bool = False,
    **kwargs: Any,
) -> aioredis.Redis:
    """`redis.asyncio.Redis` for `url` over an AsyncGuardedConnectionPool; `aclose()` closes the pool's sockets too."""
    pool = AsyncGuardedConnectionPool.from_url(url, settings=settings, name=name or f"asyncclient@{creation_site(2)}", **kwargs)
    client = aioredis.Redis(connection_pool=pool, single_connection_client=single_connection_client)
    client.auto_close_connection_pool = True
    return client
