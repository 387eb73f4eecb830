"""What every guarded pool shares (sync or asyncio, plain or blocking): setup, slots, the connect gate, repr.

The guard never substitutes redis-py's classes. The pool keeps the `connection_class` the caller passed; its hooks
are in the pool (`make_connection`, `get_connection`, `release`, `reset`) and in one per-connection attribute set
when the pool makes the connection: `connect_check_health`, redis-py's single entry for opening a socket (used by
`connect()` and by the lazy reconnect inside a command), wrapped with the breaker and the rate limit. Decisions live
here and in EndpointGuard/ConnectionBudget; sync and asyncio differ only in how they wait.
"""

from __future__ import annotations

import functools
import inspect
import sys
import weakref
from threading import get_ident
from typing import Any, Callable

from redis.exceptions import RedisError

from connguard.guard.backoff import guard_retry
from connguard.guard.breaker import StateChange
from connguard.guard.leaks import LeakTracker
from connguard.guard.registry import REGISTRY, EndpointGuard, endpoint_of
from connguard.guard.room import ask_async as ask_room_aio, ask_sync as ask_room
from connguard.guard.settings import GuardSettings, split_settings


class NoRoom(Exception):
    """Internal: the pool needs a new connection and the budget has no slot for it (never escapes the pool)."""


# -- construction ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _keywords_of(connection_class: type, pool_class: type) -> frozenset[str]:
    """Every keyword the connection class and the redis-py pool classes name in their __init__ signatures."""
    names: set[str] = set()
    for cls in (*getattr(connection_class, "__mro__", ()), *pool_class.__mro__[1:]):
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        try:
            names.update(inspect.signature(init).parameters)
        except (TypeError, ValueError):
            continue
    return frozenset(names)


def setup(
    pool: Any, connection_class: type, connection_kwargs: dict[str, Any], settings: GuardSettings | None,
    name: str | None, default_name: str, retry_class: type, endpoint: tuple[Any, str] | None = None,
) -> dict[str, Any]:
    """Before redis-py's __init__ (which calls reset()): split the guard's settings from redis-py's keywords, opt-in
    retry, endpoint, leak tracker. Returns the keywords for redis-py, nothing added unless `retries=` was asked for.
    `endpoint` (key, label) names the endpoint when the keywords do not (a Sentinel pool's primary is found later)."""
    known = _keywords_of(connection_class, type(pool))
    settings, connection_kwargs = split_settings(settings, connection_kwargs, known.__contains__)
    if settings.retries is not None:
        if connection_kwargs.get("retry") is not None:
            raise ValueError("pass either redis-py's retry= or the guard's retries=, not both")
        connection_kwargs["retry"] = guard_retry(settings.backoff, settings.retries, retry_class)
    pool.settings = settings
    pool.name = name or f"{default_name}@{creation_site()}"
    key, label = endpoint or endpoint_of(connection_class, connection_kwargs)
    pool.endpoint = endpoint_guard = REGISTRY.endpoint(key, label, settings)
    pool._budget = endpoint_guard.budget
    pool._room = endpoint_guard.room  # read on every checkout: one attribute, `watching`, while all is well
    pool.leaks = LeakTracker(label, pool.name, settings.leak_threshold_s, settings.leak_include_pubsub, _in_use_of(weakref.ref(pool)))
    pool._track = settings.leak_threshold_s is not None
    pool._reported = pool.leaks.reported
    pool._orphans = weakref.WeakSet()  # checked out before reset(): closed when they come back
    pool._orphaned = False  # a plain flag keeps release() at one attribute read in the common case
    return connection_kwargs


def register(pool: Any, on_state_change: Callable[[StateChange], None] | None) -> None:
    """After redis-py's __init__: join the endpoint (metrics, shedding) and the breaker's listeners."""
    pool.endpoint.pools.add(pool)
    pool._budget.add_shedder(pool)
    if on_state_change is not None:
        pool.endpoint.breaker.add_listener(on_state_change)


def _in_use_of(pool_ref: "weakref.ref[Any]") -> Callable[[], list[Any]]:
    """What the leak watchdog scans; a weak reference so tracking never keeps a pool alive."""

    def in_use() -> list[Any]:
        pool = pool_ref()
        return pool._cg_in_use() if pool is not None else []

    return in_use


def creation_site(depth: int = 3) -> str:
    """`file.py:line` of the code that built the pool: the default pool name, so holders are recognisable."""
    frame = sys._getframe(depth)
    while frame is not None and ("/redis/" in frame.f_code.co_filename or "/connguard/guard/" in frame.f_code.co_filename):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"


def redis_repr(pool: Any, text: str, redis_base: type) -> str:
    """redis-py's repr under redis-py's class name: code (and tests) that read it see the pool it replaces."""
    ours = f"<{type(pool).__module__}.{type(pool).__name__}("
    if text.startswith(ours):
        return f"<{redis_base.__module__}.{redis_base.__name__}(" + text[len(ours):]
    return text


# -- room over a held connection (guard/room.py) ------------------------------------------------------------------
_ASK_FAILED = (RedisError, OSError)


def ask_room_sync(pool: Any, conn: Any) -> None:
    """At checkout, while the breaker is open for refusals: ask over this live connection whether room returned.
    A failure here is the connection's, not the caller's: it is closed, and the caller's command reconnects."""
    if not pool._room.claim():
        return
    try:
        room = ask_room(conn)
    except _ASK_FAILED:
        _close_quietly(conn)
        return
    pool.endpoint.room_seen(room)


async def ask_room_async(pool: Any, conn: Any) -> None:
    if not pool._room.claim():
        return
    try:
        room = await ask_room_aio(conn)
    except _ASK_FAILED:
        await conn.disconnect()
        return
    pool.endpoint.room_seen(room)


# -- a connection joins the pool: its slot and its gate ------------------------------------------------------------
def adopt(pool: Any, conn: Any, asynchronous: bool) -> bool:
    """Give a freshly made connection its budget slot and its connect gate; False (nothing changed) if no room."""
    if not pool._budget.take(conn, pool.name):
        return False
    inner = getattr(conn, "_conn", conn)  # redis-py's client-side cache wraps the real connection
    if getattr(type(inner), "connect_check_health", None) is None:
        inner = conn
    if getattr(type(inner), "connect_check_health", None) is None:
        return True  # a connection class of the caller's own that opens sockets some other way: budget only
    if asynchronous:
        inner.connect_check_health = _async_gate(inner, pool.endpoint)
    else:
        inner._cg_connecting = None  # the thread inside connect_check_health, if any
        inner._cg_closed_under = False
        inner.connect_check_health = _sync_gate(inner, pool.endpoint)
        inner.disconnect = _sync_disconnect(inner)
    return True


def _sync_disconnect(conn: Any) -> Callable[..., Any]:
    """Mark a connection closed by another thread (pool.disconnect()) while its connect is under way. redis-py >= 8.2
    reports a socket closed under a read as `Connection closed by server.`, the very words of a server that dropped
    us; only the connection can tell the two apart. The thread that connects also disconnects on its own errors:
    that is not marked."""
    original = type(conn).disconnect
    ref = weakref.ref(conn)

    def disconnect(*args: Any, **kwargs: Any) -> Any:
        c = ref()
        if c is None:
            return None
        connecting = c._cg_connecting
        if connecting is not None and connecting != get_ident():
            c._cg_closed_under = True
        return original(c, *args, **kwargs)

    return disconnect


def _sync_gate(conn: Any, endpoint: EndpointGuard) -> Callable[..., None]:
    original = type(conn).connect_check_health
    ref = weakref.ref(conn)  # a closure over the connection itself would keep it alive in a cycle

    def connect_check_health(check_health: bool = True, retry_socket_connect: bool = True) -> None:
        c = ref()
        if c is None or c._sock:
            return
        probe, wait = endpoint.admit()
        try:
            if wait:
                endpoint.limiter.sleep(wait)
            c._cg_closed_under = False
            c._cg_connecting = get_ident()
            try:
                original(c, check_health, retry_socket_connect)
            finally:
                c._cg_connecting = None
        except BaseException as exc:
            if c._sock is not None:
                # redis-py closes the socket only for a RedisError in the handshake; after a KeyboardInterrupt or a
                # bug it would stay open outside any count.
                _close_quietly(c)
            err = endpoint.after_failure(probe, exc, closed_here=c._cg_closed_under)
            if err is exc:
                raise
            raise err from exc
        endpoint.after_success(probe)

    return connect_check_health


def _async_gate(conn: Any, endpoint: EndpointGuard) -> Callable[..., Any]:
    original = type(conn).connect_check_health
    ref = weakref.ref(conn)

    async def connect_check_health(check_health: bool = True, retry_socket_connect: bool = True) -> None:
        c = ref()
        if c is None or c.is_connected:
            return
        probe, wait = endpoint.admit()
        try:
            if wait:
                await endpoint.limiter.sleep_async(wait)
            await original(c, check_health, retry_socket_connect)
        except BaseException as exc:
            if c.is_connected:
                c._close()  # cancelled or crashed mid-handshake: close the socket (see the sync gate)
            err = endpoint.after_failure(probe, exc)
            if err is exc:
                raise
            raise err from exc
        endpoint.after_success(probe)

    return connect_check_health


def _close_quietly(conn: Any) -> None:
    try:
        conn.disconnect()
    except Exception:  # closing is best effort; the original error is the one to raise
        pass


def let_go(pool: Any, conn: Any) -> None:
    """A connection leaves the pool for good: close its socket and free its slot now, not at garbage collection."""
    close = getattr(conn, "_close", None)
    if close is not None and not hasattr(conn, "_sock"):
        close()  # redis.asyncio: synchronous close of the transport
    else:
        _close_quietly(conn)
    pool._budget.release(conn)


def has_socket(conn: Any) -> bool:
    if hasattr(conn, "_sock"):
        return conn._sock is not None
    inner = getattr(conn, "_conn", None)
    if inner is not None:
        return has_socket(inner)
    return bool(getattr(conn, "is_connected", False))
