"""Dropped sockets give their budget slots back and the pool reconnects (issue 8): CLIENT KILL and server timeouts."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from connguard.guard import GuardedBlockingConnectionPool, GuardRefusal, guarded_async_client, guarded_client

from conftest import eventually

pytestmark = pytest.mark.usefixtures("fresh_guard_registry")

BUDGET = 4
CONCURRENCY = 8
KILLS = 20


def _objects(pool) -> int:
    """Connection objects the pool holds (in use + idle), whatever the pool class."""
    if hasattr(pool, "_in_use_connections"):
        return len(pool._in_use_connections) + len(pool._available_connections)
    return len(pool._connections)  # BlockingConnectionPool


def _kill_all(admin: redis.Redis) -> int:
    return admin.client_kill_filter(_type="normal", skipme=True)


def _admin(server) -> redis.Redis:
    admin = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    admin.ping()
    return admin


async def _async_round(client, pool, ok: list[int]) -> list[BaseException]:
    results = await asyncio.gather(*(client.incr("n") for _ in range(CONCURRENCY)), return_exceptions=True)
    ok[0] += sum(1 for r in results if not isinstance(r, BaseException))
    ok[1] = max(ok[1], _objects(pool), pool.endpoint.budget.used)
    return [r for r in results if isinstance(r, BaseException)]


def _only_dropped_sockets(failures: list[BaseException], killed: int) -> None:
    """redis.asyncio notices a socket the server closed only when it uses it (no retry by default): as in plain
    redis-py, those commands fail once with "Connection closed by server". Never a guard refusal."""
    assert len(failures) <= killed
    for exc in failures:
        assert isinstance(exc, redis.ConnectionError) and not isinstance(exc, GuardRefusal), f"{type(exc).__name__}: {exc}"


def test_async_pool_recovers_every_time_its_connections_are_killed(default_binary, start_server):
    server = start_server(default_binary)
    admin = _admin(server)

    async def scenario() -> tuple[int, int, int]:
        client = guarded_async_client(server.url, budget=BUDGET, budget_wait_s=1.0, leak_threshold_s=None, name="killed")
        pool = client.connection_pool
        ok = [0, 0]  # successes, peak objects/slots
        assert await _async_round(client, pool, ok) == []
        for kill in range(KILLS):
            killed = _kill_all(admin)
            assert killed >= 1  # the kill really dropped the pool's sockets
            _only_dropped_sockets(await _async_round(client, pool, ok), killed)
            failures = await _async_round(client, pool, ok)  # reconnected: every command succeeds
            assert failures == [], f"kill {kill}: {[f'{type(r).__name__}: {r}' for r in failures]}"
            assert _objects(pool) <= BUDGET
        total = int(await client.get("n"))
        await client.aclose()
        return total, ok[0], ok[1]

    total, successes, peak = asyncio.run(scenario())
    assert total == successes  # nothing lost, nothing counted twice
    assert peak <= BUDGET


def _sync_rounds(client: redis.Redis, admin: redis.Redis, rounds: int, between) -> int:
    pool = client.connection_pool
    peak = 0
    with ThreadPoolExecutor(CONCURRENCY) as workers:
        for round_ in range(rounds + 1):
            futures = [workers.submit(client.incr, "n") for _ in range(CONCURRENCY)]
            failures = [f"{type(f.exception()).__name__}: {f.exception()}" for f in futures if f.exception() is not None]
            assert failures == [], f"round {round_}: {failures}"
            peak = max(peak, _objects(pool), pool.endpoint.budget.used)
            if round_ < rounds:
                between()
    return peak


@pytest.mark.parametrize("blocking", [False, True], ids=["pool", "blocking-pool"])
def test_sync_pools_recover_every_time_their_connections_are_killed(default_binary, start_server, blocking):
    server = start_server(default_binary)
    admin = _admin(server)
    if blocking:
        pool = GuardedBlockingConnectionPool.from_url(
            server.url, max_connections=CONCURRENCY, timeout=5, budget=BUDGET, budget_wait_s=1.0, leak_threshold_s=None
        )
        client = redis.Redis(connection_pool=pool)
    else:
        client = guarded_client(server.url, budget=BUDGET, budget_wait_s=1.0, leak_threshold_s=None)
    peak = _sync_rounds(client, admin, KILLS, lambda: _kill_all(admin))
    assert int(client.get("n")) == CONCURRENCY * (KILLS + 1)
    assert peak <= BUDGET
    client.close()
    client.connection_pool.disconnect()


def test_both_pools_recover_when_the_server_times_idle_clients_out(default_binary, start_server):
    """`CONFIG SET timeout 1`, the safety net the doctor recommends, closes idle pooled sockets between rounds."""
    server = start_server(default_binary)
    admin = _admin(server)
    admin.config_set("timeout", 1)

    def wait_out() -> None:  # idle > 1 s, closed by serverCron: until only the admin's own connection is left
        eventually(lambda: admin.info("clients")["connected_clients"], lambda n: n <= 1, timeout_s=5)

    client = guarded_client(server.url, budget=BUDGET, budget_wait_s=1.0, leak_threshold_s=None)
    assert _sync_rounds(client, admin, 2, wait_out) <= BUDGET
    client.close()

    async def scenario() -> None:
        aclient = guarded_async_client(server.url, budget=BUDGET, budget_wait_s=1.0, leak_threshold_s=None)
        pool, ok = aclient.connection_pool, [0, 0]
        assert await _async_round(aclient, pool, ok) == []
        for _ in range(2):
            await asyncio.to_thread(wait_out)
            _only_dropped_sockets(await _async_round(aclient, pool, ok), BUDGET)
            assert await _async_round(aclient, pool, ok) == []
        assert ok[1] <= BUDGET
        await aclient.aclose()

    asyncio.run(scenario())
