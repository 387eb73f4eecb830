"""GuardedConnectionPool and GuardedBlockingConnectionPool: redis-py's sync pools whose connects pass the guard."""

from __future__ import annotations

import functools
import os
import queue
from sys import _getframe
from threading import Lock, get_ident
from time import monotonic
from typing import Any, Callable

import redis
from redis.connection import Connection

from connguard.guard import _core
from connguard.guard._core import NoRoom, creation_site
from connguard.guard.backoff import GuardRetry
from connguard.guard.breaker import StateChange
from connguard.guard.budget import DEADLINE
from connguard.guard.settings import GuardSettings
from connguard.guard.snapshot import GuardMetrics, collect

class _SyncGuard:
    """The hooks, shared by both sync pools. It sits before the redis-py class in the MRO."""

    _cg_redis_base: type
    _budget: Any
    _track: bool

    # -- making a connection: a slot, or NoRoom (the checkout then waits outside every lock) ----------------------
    def make_connection(self) -> Any:
        if self._budget.full():  # a lock-free look first: no connection object made in vain
            self._cg_unmake(None)
            raise NoRoom
        conn = super().make_connection()  # type: ignore[misc]
        if not _core.adopt(self, conn, asynchronous=False):
            self._cg_unmake(conn)
            raise NoRoom
        return conn

    # The hot path: one attribute write per checkout and per release (the checkout record; guard/leaks.py has its tuple).
    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            conn = super().get_connection(*args, **kwargs)  # type: ignore[misc]
        except NoRoom:  # the pool had no idle connection and the budget no slot: wait for one or the other
            self._cg_no_room()
            conn = self._wait_and_get(args, kwargs)
        if self._room.watching:  # the server refused us for maxclients: has it room again? (guard/room.py)
            _core.ask_room_sync(self, conn)
        if self._track:
            caller = _getframe(1)
            # f_lasti, not f_lineno: a line number is a scan of the caller's line table (0.7 us in redis-py's
            # _execute_command, most of the guard's cost per GET); the report turns the offset into a line.
            conn._cg_out = (monotonic(), caller, caller.f_lasti, get_ident())
        return conn

    def _wait_and_get(self, args: Any, kwargs: Any) -> Any:
        """One waiter per pool at a time, so a connection returned here goes to one waiter instead of every waiter
        making (or shedding) one. All of it within one budget_wait_s. No lock is held across a connect."""
        budget = self._budget
        reset = DEADLINE.set(monotonic() + budget.wait_s)
        try:
            if not self._open_lock.acquire(timeout=budget.wait_s):
                raise budget.exceeded(budget.wait_s)
            try:
                while True:
                    try:
                        return super().get_connection(*args, **kwargs)  # type: ignore[misc]
                    except NoRoom:
                        self._cg_no_room()
                        budget.wait_for_room(self._cg_has_idle, self)  # BudgetExceeded at the deadline
            finally:
                self._open_lock.release()
        finally:
            DEADLINE.reset(reset)

    def release(self, connection: Any) -> None:
        if self._track:
            out = getattr(connection, "_cg_out", None)  # getattr: a foreign object may have no such attribute
            if out is not None:
                connection._cg_out = None
                if self._reported and id(connection) in self._reported:
                    self.leaks.report_return(connection, out)
        if self._orphaned and connection in self._orphans:
            # Checked out before reset(): redis-py would drop it with its socket open until garbage collection.
            self._orphans.discard(connection)
            _core.let_go(self, connection)
            return
        super().release(connection)  # type: ignore[misc]
        # redis-py's owns_connection, inlined (one call fewer per command)
        if getattr(connection, "pid", None) != self.pid and getattr(connection, "_cg_slot", None) is not None:  # type: ignore[attr-defined]
            self._budget.release(connection)  # redis-py disconnected it and will not reuse it (another process's)
        elif self._budget.waiters:
            self._budget.wake()
        if self._room.watching and not _core.has_socket(connection):
            # A connect the breaker refused gives back a socketless object, on top of the LIFO pile: the next checkout
            # would take it and be refused again, while a live connection below it could serve. Put it underneath.
            self._cg_sink(connection)

    def reset(self) -> None:
        """redis-py's reset (also run by _checkpid after fork), minus the orphaned sockets and budget slots."""
        same_process = getattr(self, "pid", None) == os.getpid()
        guarded = hasattr(self, "_budget")  # redis-py's __init__ calls reset() too
        idle = self._cg_idle() if guarded and same_process else []
        in_use = self._cg_in_use() if guarded and same_process else []
        super().reset()  # type: ignore[misc]
        self._open_lock = Lock()  # another thread may have held it at fork
        if not guarded:
            return
        self._orphans.clear()
        self._orphans.update(in_use)  # after fork the parent's sockets are the parent's: leave them alone
        self._orphaned = bool(in_use)
        for conn in idle:
            _core.let_go(self, conn)

    def __repr__(self) -> str:
        return _core.redis_repr(self, super().__repr__(), self._cg_redis_base)

    def metrics(self) -> GuardMetrics:
        return collect(self)

    # per-class views of the pool's connections
    def _cg_unmake(self, conn: Any | None) -> None: ...
    def _cg_idle(self) -> list[Any]: ...
    def _cg_in_use(self) -> list[Any]: ...
    def _cg_has_idle(self) -> bool: ...
    def _cg_shed_one(self) -> bool: ...
    def _cg_sink(self, conn: Any) -> None: ...
    def _cg_no_room(self) -> None:  # NoRoom has just left redis-py's get_connection
        pass


class GuardedConnectionPool(_SyncGuard, redis.ConnectionPool):
    """Use as `redis.Redis(connection_pool=GuardedConnectionPool(host=..., budget=20, leak_threshold_s=5))`.

    Guard settings (see GuardSettings) may be given as keyword arguments beside redis-py's own; the rest go to
    redis-py unchanged. `name` labels this pool in budget errors and leak reports.
    """

    _cg_redis_base = redis.ConnectionPool

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
        connection_kwargs = _core.setup(self, connection_class, connection_kwargs, settings, name, "pool", GuardRetry)
        super().__init__(connection_class=connection_class, max_connections=max_connections, **connection_kwargs)
        _core.register(self, on_state_change)

    def _cg_unmake(self, conn: Any) -> None:
        if conn is not None:
            self._created_connections -= 1  # redis-py counted it; it will never be used

    def _cg_idle(self) -> list[Any]:
        return list(self._available_connections)

    def _cg_in_use(self) -> list[Any]:
        return list(self._in_use_connections)

    def _cg_has_idle(self) -> bool:
        return bool(self._available_connections)

    def _cg_sink(self, conn: Any) -> None:
        with self._lock:
            idle = self._available_connections
            if idle and idle[-1] is conn:
                idle.insert(0, idle.pop())

    def _cg_shed_one(self) -> bool:
        """Let go of the least recently used idle connection (another pool of the endpoint needs room)."""
        with self._lock:
            if not self._available_connections:
                return False
            conn = self._available_connections.pop(0)
            self._created_connections -= 1
        _core.let_go(self, conn)
        return True


class _ProbeFailure(Exception):
    pass


@functools.lru_cache(maxsize=1)
def _redis_returns_token() -> bool:
    """Does redis-py's BlockingConnectionPool.get_connection put the None token back into the queue itself when
    make_connection raises? redis-py 8.2 does; earlier versions lose the token (the guard gives it back). Asked of
    redis-py's behaviour once, on a pool that never connects, rather than of its version number."""

    class Probe(redis.BlockingConnectionPool):
        def make_connection(self) -> Any:
            raise _ProbeFailure

    probe = Probe(max_connections=1, timeout=0)
    for args in ((), ("PING",)):  # redis-py < 5.1 requires a command name
        try:
            probe.get_connection(*args)
        except _ProbeFailure:
            return probe.pool.qsize() == 1
        except TypeError:
            continue
        except Exception:  # an unexpected redis-py: assume the older behaviour, as the guard always did
            return False
    return False


class GuardedBlockingConnectionPool(_SyncGuard, redis.BlockingConnectionPool):
    """redis-py's BlockingConnectionPool (wait up to `timeout` for one of `max_connections`) plus the guard:
    `redis.Redis(connection_pool=GuardedBlockingConnectionPool.from_url(url, max_connections=50, timeout=20))`."""

    _cg_redis_base = redis.BlockingConnectionPool

    def __init__(
        self,
        max_connections: int = 50,
        timeout: float | None = 20,
        connection_class: type = Connection,
        queue_class: type = queue.LifoQueue,
        *,
        settings: GuardSettings | None = None,
        name: str | None = None,
        on_state_change: Callable[[StateChange], None] | None = None,
        **connection_kwargs: Any,
    ) -> None:
        connection_kwargs = _core.setup(self, connection_class, connection_kwargs, settings, name, "pool", GuardRetry)
        super().__init__(
            max_connections=max_connections, timeout=timeout, connection_class=connection_class,
            queue_class=queue_class, **connection_kwargs,
        )
        _core.register(self, on_state_change)

    def _cg_unmake(self, conn: Any) -> None:
        """redis-py took a None token from the queue to make this connection: give the token back, at the bottom,
        so that a connection returned meanwhile is found first. redis-py >= 8.2 gives it back itself (on top of the
        LIFO queue, `put_nowait(None)` when make_connection raises): then _cg_no_room moves it underneath, once
        NoRoom has left redis-py's get_connection. Two tokens for one would overfill the queue, and a
        connection released into a full queue is dropped by redis-py with its slot still held."""
        if conn is not None:
            try:
                self._connections.remove(conn)
            except ValueError:
                pass
        if _redis_returns_token():
            return
        q = self.pool
        with q.mutex:
            q.queue.insert(0, None)
            q.unfinished_tasks += 1
            q.not_empty.notify()

    def _cg_no_room(self) -> None:
        """After NoRoom (redis-py >= 8.2 put the token back on top): move a None on top of the queue to the bottom, so
        the next checkout takes an idle connection if there is one instead of making one (and meeting NoRoom again).
        Any None will do: tokens are interchangeable. A connection returned meanwhile is on top already."""
        q = self.pool
        with q.mutex:
            if len(q.queue) > 1 and q.queue[-1] is None:
                q.queue.insert(0, q.queue.pop())

    def _cg_idle(self) -> list[Any]:
        return [c for c in list(self.pool.queue) if c is not None]

    def _cg_in_use(self) -> list[Any]:
        idle = {id(c) for c in self._cg_idle()}
        return [c for c in list(self._connections) if id(c) not in idle]

    def _cg_has_idle(self) -> bool:
        return any(c is not None for c in list(self.pool.queue))

    def _cg_sink(self, conn: Any) -> None:
        q = self.pool
        with q.mutex:
            if q.queue and q.queue[-1] is conn:
                q.queue.insert(0, q.queue.pop())

    def _cg_shed_one(self) -> bool:
        q = self.pool
        with q.mutex:
            for i, conn in enumerate(q.queue):
                if conn is not None:
                    q.queue[i] = None  # the token stays: this pool may make a connection again later
                    break
            else:
                return False
        try:
            self._connections.remove(conn)
        except ValueError:
            pass
        _core.let_go(self, conn)
        return True


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


__all__ = ["GuardedBlockingConnectionPool", "GuardedConnectionPool", "guarded_client"]
