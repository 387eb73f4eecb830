"""The guard as a drop-in: redis-py's blocking pool semantics, pub/sub that dies raises as in redis-py, foreign
connections ignored on release, and max-clients refusals handled without redis-py's retry being changed."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis
import redis.asyncio as aioredis
from server_counters import server_attempts

from connguard.guard import (
    AsyncGuardedBlockingConnectionPool,
    BudgetExceeded,
    GuardedBlockingConnectionPool,
    GuardedConnectionPool,
)

pytestmark = pytest.mark.usefixtures("fresh_guard_registry")


def test_the_blocking_pool_behaves_as_redis_py_plus_the_guard(default_binary, start_server):
    server = start_server(default_binary)
    pool = GuardedBlockingConnectionPool.from_url(server.url, max_connections=50, timeout=20, name="blocking")
    r = redis.Redis(connection_pool=pool)
    assert r.set("k", "v") and r.get("k") == b"v"
    with r.pipeline() as pipe:
        assert pipe.incr("n").incr("n").execute() == [1, 2]
    assert repr(pool).startswith("<redis.connection.BlockingConnectionPool(<redis.connection.Connection(")
    assert pool.connection_class is redis.Connection and pool.max_connections == 50 and pool.timeout == 20
    assert pool.metrics().budget_used == len(pool._connections) == 1
    pool.disconnect()

    # redis-py's blocking contract: all max_connections out -> wait `timeout`, then "No connection available."
    small = GuardedBlockingConnectionPool.from_url(server.url, max_connections=2, timeout=0.3, name="small")
    a, b = small.get_connection(), small.get_connection()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError, match="No connection available"):
        small.get_connection()
    assert time.monotonic() - started >= 0.25  # it waited out its timeout (a lower bound, which cannot flake)
    handed = []
    waiter = threading.Thread(target=lambda: handed.append(small.get_connection()))
    waiter.start()
    time.sleep(0.1)
    small.release(a)  # the waiter gets exactly this one
    waiter.join(5)
    assert handed == [a]
    small.release(b)
    small.release(a)
    small.disconnect()


def test_the_budget_is_shared_by_a_blocking_pool_and_a_plain_pool(default_binary, start_server):
    server = start_server(default_binary)
    blocking = GuardedBlockingConnectionPool.from_url(server.url, max_connections=10, timeout=5, budget=3, budget_wait_s=0.3, name="blocking")
    plain = GuardedConnectionPool.from_url(server.url, budget=3, budget_wait_s=0.3, name="plain")
    held = [blocking.get_connection(), blocking.get_connection(), plain.get_connection()]
    with pytest.raises(BudgetExceeded, match="blocking holds 2, plain holds 1"):
        blocking.get_connection()
    assert len(blocking._connections) == 2 and blocking.pool.qsize() == 8  # the token for the 3rd came back
    blocking.release(held[0])  # idle in `blocking`: `plain` may shed it to make room
    held.append(plain.get_connection())
    assert blocking.metrics().budget_used == 3 and len(blocking._connections) == 1
    assert blocking.pool.qsize() == 9  # nothing lost: the shed connection's place is an empty token again
    for conn in held[1:]:
        (blocking if conn in blocking._connections else plain).release(conn)
    blocking.disconnect()
    plain.disconnect()


def test_a_full_server_trips_the_breaker_through_the_blocking_pools(full_server):
    server, monitor, _, _ = full_server
    before = server_attempts(monitor)
    pool = GuardedBlockingConnectionPool.from_url(server.url, max_connections=5, timeout=1, reset_timeout_s=30.0)
    r = redis.Redis(connection_pool=pool)
    outcomes = []
    for _ in range(5):
        try:
            r.ping()
        except redis.ConnectionError as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes == ["MaxClientsError"] + ["CircuitOpenServerFull"] * 4
    assert pool.pool.qsize() == 5  # every failed checkout gave its place back

    async def scenario() -> list[str]:
        apool = AsyncGuardedBlockingConnectionPool.from_url(server.url, max_connections=5, timeout=1)
        ar = aioredis.Redis(connection_pool=apool)
        seen = []
        for _ in range(3):
            try:
                await ar.ping()
            except redis.ConnectionError as exc:
                seen.append(type(exc).__name__)
        await apool.aclose()
        return seen

    assert asyncio.run(scenario()) == ["CircuitOpenServerFull"] * 3  # the same endpoint's breaker, shared
    assert server_attempts(monitor) - before == 1


def _kill_subscriber(monitor: redis.Redis) -> None:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for client in monitor.client_list():
            if "subscribe" in client.get("cmd", "") or int(client.get("sub", 0)):
                monitor.client_kill_filter(_id=client["id"])
                return
        time.sleep(0.02)
    raise AssertionError("no subscriber found")


def test_a_pubsub_connection_that_dies_raises_exactly_as_in_redis_py(default_binary, start_server):
    """redis-py (no retry configured) raises ConnectionError on the next read; the guard adds no retry that would
    silently reconnect and resubscribe."""
    server = start_server(default_binary)
    monitor = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    outcomes = {}
    for label, pool in (("redis-py", redis.ConnectionPool.from_url(server.url)), ("guard", GuardedConnectionPool.from_url(server.url))):
        p = redis.Redis(connection_pool=pool).pubsub()
        p.subscribe("news")
        assert p.get_message(timeout=1)["type"] == "subscribe"
        _kill_subscriber(monitor)
        try:
            p.get_message(timeout=1)
            outcomes[label] = "no error"
        except redis.ConnectionError as exc:
            outcomes[label] = type(exc).__name__
        p.close()
        pool.disconnect()

    async def async_outcome(pool: aioredis.ConnectionPool) -> str:
        p = aioredis.Redis(connection_pool=pool).pubsub()
        await p.subscribe("news")
        assert (await p.get_message(timeout=1))["type"] == "subscribe"
        _kill_subscriber(monitor)
        try:
            await p.get_message(timeout=1)
            return "no error"
        except redis.ConnectionError as exc:
            return type(exc).__name__
        finally:
            await p.aclose()
            await pool.aclose()

    from connguard.guard import AsyncGuardedConnectionPool

    outcomes["async redis-py"] = asyncio.run(async_outcome(aioredis.ConnectionPool.from_url(server.url)))
    outcomes["async guard"] = asyncio.run(async_outcome(AsyncGuardedConnectionPool.from_url(server.url)))
    assert outcomes["guard"] == outcomes["redis-py"] == "ConnectionError"
    assert outcomes["async guard"] == outcomes["async redis-py"] == "ConnectionError"


def test_release_of_a_connection_the_pool_did_not_make_is_ignored(default_binary, start_server):
    server = start_server(default_binary)
    pool = GuardedConnectionPool.from_url(server.url, budget=2)

    class DummyConnection:
        pid = 0

    pool.release(DummyConnection())  # redis-py ignores it; so does the guard
    other = GuardedConnectionPool.from_url(server.url)  # same endpoint, same budget
    theirs = other.get_connection()
    pool.release(theirs)  # not ours: no slot freed, nothing closed
    assert pool.metrics().budget_used == 1 and theirs.is_connected
    other.release(theirs)
    other.disconnect()
