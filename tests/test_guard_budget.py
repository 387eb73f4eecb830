"""The per-endpoint budget: one cap across every pool in the process, with the holders named when it is full."""

from __future__ import annotations

import pytest
import redis

from connguard.guard import REGISTRY, BudgetExceeded, ConnectRateLimited, GuardedConnectionPool


@pytest.fixture(autouse=True)
def fresh_registry():
    REGISTRY.reset()
    yield
    REGISTRY.reset()


def connected_clients(monitor: redis.Redis) -> int:
    return monitor.info("clients")["connected_clients"]


def test_budget_holds_across_two_pools_to_the_same_endpoint(default_binary, start_server):
    server = start_server(default_binary, maxclients=100)
    monitor = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    monitor.ping()
    orders = GuardedConnectionPool(host="127.0.0.1", port=server.port, name="orders", budget=3, budget_wait_s=0.3)
    jobs = GuardedConnectionPool(host="127.0.0.1", port=server.port, name="jobs", budget=3, budget_wait_s=0.3)
    held = [orders.get_connection(), orders.get_connection(), jobs.get_connection()]

    with pytest.raises(BudgetExceeded) as exceeded:
        jobs.get_connection()
    message = str(exceeded.value)
    assert f"redis://127.0.0.1:{server.port}/0" in message
    assert "orders holds 2" in message and "jobs holds 1" in message
    assert isinstance(exceeded.value, redis.ConnectionError)
    assert connected_clients(monitor) == 1 + 3  # the fourth socket was never opened

    # A connection returned to `orders` sits idle there, still holding a slot. Under pressure the budget asks the
    # other pool to close an idle one, so `jobs` gets its connection without waiting out the timeout.
    orders.release(held.pop(0))
    held.append(jobs.get_connection())
    assert connected_clients(monitor) == 1 + 3
    assert orders.metrics().open_sockets == 3
    assert jobs.metrics().budget_exceeded_total == 1
    for conn in held:
        (orders if conn in orders._in_use_connections else jobs).release(conn)
    orders.disconnect()
    jobs.disconnect()
    assert orders.metrics().open_sockets == 0


def test_a_budget_waiter_gets_the_slot_freed_within_its_wait(default_binary, start_server):
    import threading
    import time

    server = start_server(default_binary)
    pool = GuardedConnectionPool(host="127.0.0.1", port=server.port, name="api", budget=1, budget_wait_s=3.0)
    first = pool.get_connection()

    def give_back() -> None:
        time.sleep(0.2)
        first.disconnect()  # closing the socket frees the slot
        pool.release(first)

    threading.Thread(target=give_back).start()
    started = time.monotonic()
    second = pool.get_connection()
    assert 0.1 < time.monotonic() - started < 2.5
    pool.release(second)
    pool.disconnect()


def test_new_connections_are_rate_limited_per_endpoint(default_binary, start_server):
    server = start_server(default_binary)
    pool = GuardedConnectionPool(
        host="127.0.0.1", port=server.port, name="burst", connect_rate_per_s=2.0, connect_burst=3, connect_rate_wait_s=0.1
    )
    conns = [pool.get_connection() for _ in range(3)]  # the burst
    with pytest.raises(ConnectRateLimited, match="limited to 2/s"):
        pool.get_connection()
    assert pool.metrics().rate_limited_total == 1
    assert pool.metrics().open_sockets == 3
    for conn in conns:
        pool.release(conn)
    pool.disconnect()
