"""The same guarantees on redis.asyncio: breaker, one probe, budget across pools, leak reports, pipelines, pub/sub."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest
from server_counters import server_attempts
import redis
import redis.asyncio as aioredis

from connguard.guard import (
    AsyncGuardedConnectionPool,
    BudgetExceeded,
    MaxClientsError,
    guarded_async_client,
)


pytestmark = pytest.mark.usefixtures("fresh_guard_registry")


def test_a_refusal_trips_the_breaker_and_no_socket_is_opened_while_open(full_server):
    server, monitor, _, _ = full_server
    before = server_attempts(monitor)

    async def scenario() -> list[str]:
        client = guarded_async_client(server.url, name="async-orders", reset_timeout_s=30.0, retries=3)
        outcomes = []
        for _ in range(20):
            try:
                await client.ping()
            except redis.ConnectionError as exc:
                outcomes.append(type(exc).__name__)
        assert client.connection_pool.metrics().circuit_state == "open"
        await client.aclose()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes == ["MaxClientsError"] + ["CircuitOpenServerFull"] * 19
    assert server_attempts(monitor) - before == 1


def test_half_open_admits_exactly_one_probe_among_concurrent_tasks(full_server):
    server, monitor, crowd, leak = full_server

    async def scenario() -> tuple[list[str], int, bool]:
        client = guarded_async_client(server.url, name="async-api", reset_timeout_s=0.3, reset_jitter=0.0)
        with pytest.raises(MaxClientsError):
            await client.ping()
        await asyncio.sleep(0.4)
        before = server_attempts(monitor)
        results = await asyncio.gather(*(client.ping() for _ in range(8)), return_exceptions=True)
        attempts = server_attempts(monitor) - before
        crowd.close_group(leak)
        await asyncio.sleep(0.75)
        recovered = await client.ping()
        await client.aclose()
        return sorted(type(r).__name__ for r in results), attempts, recovered

    outcomes, attempts, recovered = asyncio.run(scenario())
    assert attempts == 1
    assert outcomes == ["CircuitOpenServerFull"] * 7 + ["MaxClientsError"]
    assert recovered is True


def test_budget_holds_across_two_async_pools(default_binary, start_server):
    server = start_server(default_binary)

    async def scenario() -> str:
        a = AsyncGuardedConnectionPool(host="127.0.0.1", port=server.port, name="feed", budget=2, budget_wait_s=0.2)
        b = AsyncGuardedConnectionPool(host="127.0.0.1", port=server.port, name="search", budget=2, budget_wait_s=0.2)
        held = [await a.get_connection(), await b.get_connection()]
        try:
            await b.get_connection()
        except BudgetExceeded as exc:
            message = str(exc)
        else:
            raise AssertionError("the third connection should have been refused by the budget")
        await a.release(held[0])
        await b.release(held[1])
        await a.disconnect()
        await b.disconnect()
        assert a.metrics().open_sockets == 0
        return message

    message = asyncio.run(scenario())
    assert f"redis://127.0.0.1:{server.port} exhausted: 2 of 2" in message and "feed holds 1" in message and "search holds 1" in message


def test_a_connection_held_past_the_threshold_names_the_coroutine_and_task(default_binary, start_server, caplog):
    caplog.set_level(logging.WARNING, logger="connguard.guard.leaks")
    server = start_server(default_binary)

    async def hold_too_long(pool: AsyncGuardedConnectionPool) -> None:
        conn = await pool.get_connection()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any("possible connection leak" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.02)
        await pool.release(conn)

    async def scenario() -> None:
        pool = AsyncGuardedConnectionPool(host="127.0.0.1", port=server.port, name="async-reports", leak_threshold_s=0.2)
        await asyncio.create_task(hold_too_long(pool), name="report-builder")
        assert pool.metrics().leaks_reported_total == 1
        await pool.disconnect()

    asyncio.run(scenario())
    warning = next(r for r in caplog.records if "possible connection leak" in r.getMessage())
    assert "checked out in hold_too_long" in warning.getMessage()
    assert "task report-builder" in warning.getMessage()


def test_pipelines_transactions_and_pubsub(server):
    async def scenario() -> None:
        client = guarded_async_client(server.url, name="async-app", decode_responses=True)
        assert await client.set("k", "v") is True
        async with client.pipeline(transaction=True) as pipe:
            pipe.set("n", 1).incr("n")
            assert await pipe.execute() == [True, 2]
        async with client.pipeline() as pipe:
            await pipe.watch("n")
            await client.set("n", 0)  # a concurrent write
            pipe.multi()
            pipe.set("n", 42)
            with pytest.raises(redis.WatchError):
                await pipe.execute()
        pubsub = client.pubsub()
        await pubsub.subscribe("alerts")
        assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"
        await client.publish("alerts", "disk full")
        message = None
        for _ in range(20):
            message = await pubsub.get_message(timeout=0.5)
            if message:
                break
        assert message and message["data"] == "disk full"
        await pubsub.aclose()
        assert client.connection_pool.metrics().in_use == 0
        await client.aclose()

    asyncio.run(scenario())


def test_the_async_pool_plugs_into_redis_asyncio(server):
    async def scenario() -> int:
        pool = AsyncGuardedConnectionPool(host="127.0.0.1", port=server.port, name="plug", budget=3)
        client = aioredis.Redis(connection_pool=pool)
        await asyncio.gather(*(client.incr("c") for _ in range(50)))
        value = int(await client.get("c"))
        assert pool.metrics().open_sockets <= 3
        await client.aclose()
        return value

    assert asyncio.run(scenario()) == 50


def test_every_waiting_task_gives_up_within_budget_wait_s(default_binary, start_server):
    server = start_server(default_binary)

    async def scenario() -> tuple[list[str], list[float]]:
        pool = AsyncGuardedConnectionPool(host="127.0.0.1", port=server.port, name="feed", budget=1, budget_wait_s=0.4)
        held = await pool.get_connection()

        async def wait() -> tuple[str, float]:
            started = time.monotonic()
            try:
                await pool.get_connection()
                return "got one", time.monotonic() - started
            except BudgetExceeded:
                return "BudgetExceeded", time.monotonic() - started

        results = await asyncio.gather(*(wait() for _ in range(4)))
        await pool.release(held)
        await pool.disconnect()
        return [r[0] for r in results], [r[1] for r in results]

    outcomes, waited = asyncio.run(scenario())
    assert outcomes == ["BudgetExceeded"] * 4
    assert max(waited) < 0.4 + 0.5, sorted(waited)  # not 0.4, 0.8, 1.2, 1.6 s queued behind one another


def test_aclose_closes_the_sockets_and_frees_the_budget(default_binary, start_server):
    server = start_server(default_binary)
    monitor = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    monitor.ping()

    async def scenario() -> int:
        client = guarded_async_client(server.url, name="async-short-lived")
        await client.ping()
        await client.aclose()
        return client.connection_pool.metrics().open_sockets

    assert asyncio.run(scenario()) == 0
    deadline = time.monotonic() + 2
    while monitor.info("clients")["connected_clients"] != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert monitor.info("clients")["connected_clients"] == 1
    monitor.close()


def test_a_cancelled_probe_leaves_the_circuit_half_open_for_the_next_task(full_server):
    """asyncio.CancelledError says nothing about the server: no verdict, the next task probes, nothing is stuck."""
    server, monitor, crowd, leak = full_server

    async def scenario() -> tuple[str, str, bool, str]:
        client = guarded_async_client(server.url, name="async-cancel", reset_timeout_s=0.1, reset_jitter=0.0)
        breaker = client.connection_pool.endpoint.breaker
        with pytest.raises(MaxClientsError):
            await client.ping()
        crowd.close_group(leak)
        await asyncio.sleep(0.15)
        # Cancel the probe while it waits for the server's reply: freeze the server for that moment.
        os.kill(server.pid, signal.SIGSTOP)
        try:
            probe = asyncio.create_task(client.ping())
            while breaker.state != "half_open":
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            probe.cancel()
            with pytest.raises(asyncio.CancelledError):
                await probe
        finally:
            os.kill(server.pid, signal.SIGCONT)
        after_cancel = breaker.state
        sockets = client.connection_pool.metrics().open_sockets
        recovered = await client.ping()
        state = breaker.state
        await client.aclose()
        return after_cancel, str(sockets), recovered, state

    after_cancel, sockets, recovered, state = asyncio.run(scenario())
    assert (after_cancel, sockets) == ("half_open", "0")
    assert recovered is True and state == "closed"
