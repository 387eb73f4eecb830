"""The per-endpoint budget: one cap across every pool in the process, with the holders named when it is full."""

from __future__ import annotations

import pytest
import redis

from connguard.guard import BudgetExceeded, ConnectRateLimited, GuardedConnectionPool, guarded_client


pytestmark = pytest.mark.usefixtures("fresh_guard_registry")


def connected_clients(monitor: redis.Redis, expected: int | None = None, timeout_s: float = 2.0) -> int:
    """INFO connected_clients; given `expected`, wait briefly for it (a close reaches the server a moment later)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        seen = monitor.info("clients")["connected_clients"]
        if expected is None or seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.01)


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
    assert f"redis://127.0.0.1:{server.port} exhausted: 3 of 3" in message
    assert "orders holds 2" in message and "jobs holds 1" in message
    assert isinstance(exceeded.value, redis.ConnectionError)
    assert connected_clients(monitor) == 1 + 3  # the fourth socket was never opened

    # A connection returned to `orders` sits idle there, still holding a slot. Under pressure the budget asks the
    # other pool to close an idle one, so `jobs` gets its connection without waiting out the timeout.
    orders.release(held.pop(0))
    held.append(jobs.get_connection())
    assert connected_clients(monitor, 1 + 3) == 1 + 3
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

    giving_back = threading.Event()

    def give_back() -> None:
        time.sleep(0.2)
        giving_back.set()
        first.disconnect()  # closing the socket frees the slot
        pool.release(first)

    threading.Thread(target=give_back).start()
    second = pool.get_connection()  # within its 3 s wait, else BudgetExceeded
    assert giving_back.is_set()  # it waited for the freed slot, not over the budget of 1
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


def test_every_waiter_gives_up_within_budget_wait_s_not_one_after_another(default_binary, start_server):
    """Four threads wait on a full budget of one: each is told BudgetExceeded after budget_wait_s, not after
    queueing behind the waiters ahead of it (0.4 s, 0.8 s, 1.2 s, 1.6 s)."""
    import threading
    import time

    server = start_server(default_binary)
    pool = GuardedConnectionPool(host="127.0.0.1", port=server.port, name="api", budget=1, budget_wait_s=0.4)
    held = pool.get_connection()
    waited: list[float] = []
    outcomes: list[str] = []

    def wait() -> None:
        started = time.monotonic()
        try:
            pool.get_connection()
            outcomes.append("got one")
        except BudgetExceeded:
            outcomes.append("BudgetExceeded")
        waited.append(time.monotonic() - started)

    threads = [threading.Thread(target=wait) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcomes == ["BudgetExceeded"] * 4
    assert max(waited) < 0.4 + 0.5, sorted(waited)
    pool.release(held)
    pool.disconnect()


def test_closing_a_guarded_client_closes_its_sockets_and_frees_the_budget(default_binary, start_server):
    server = start_server(default_binary)
    monitor = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    monitor.ping()
    client = guarded_client(server.url, name="short-lived")
    with client:
        client.ping()
        assert connected_clients(monitor) == 2
    # Like redis.Redis.from_url, the client owns its pool: close() is not left to the garbage collector.
    assert client.connection_pool.metrics().open_sockets == 0
    assert connected_clients(monitor, 1) == 1
    monitor.close()


def test_reset_closes_idle_sockets_and_a_connection_returned_after_it(default_binary, start_server):
    server = start_server(default_binary)
    monitor = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    monitor.ping()
    pool = GuardedConnectionPool(host="127.0.0.1", port=server.port, name="resetting", budget=3, budget_wait_s=0.2)
    busy, idle = pool.get_connection(), pool.get_connection()
    pool.release(idle)
    pool.reset()  # redis-py forgets both; their sockets (and budget slots) must not wait for garbage collection
    assert pool.metrics().budget_used == 1 and connected_clients(monitor, 2) == 2  # the orphan keeps its slot till it is back
    pool.release(busy)  # checked out before the reset: redis-py would drop it with its socket open
    assert pool.metrics().budget_used == 0 and connected_clients(monitor, 1) == 1
    assert not busy.is_connected and not idle.is_connected  # both references are still alive here
    conns = [pool.get_connection() for _ in range(3)]  # the whole budget is usable again
    for conn in conns:
        pool.release(conn)
    pool.disconnect()
    monitor.close()


def test_a_forked_child_gets_its_own_budget_even_if_a_lock_was_held_at_fork(default_binary, start_server):
    """The parent's sockets are the parent's: redis-py reopens its own in the child, which must not find the
    budget already full of the parent's connections, nor a lock that some parent thread held at fork."""
    import os

    server = start_server(default_binary)
    pool = GuardedConnectionPool(host="127.0.0.1", port=server.port, name="prefork", budget=2, budget_wait_s=0.3)
    client = redis.Redis(connection_pool=pool)
    held = [pool.get_connection(), pool.get_connection()]  # e.g. a subscriber and a WATCH in the parent
    read_end, write_end = os.pipe()
    with pool.endpoint.budget._cond:  # as if another thread were inside the budget at the moment of fork
        pid = os.fork()
        if pid == 0:  # the child: report in one line and leave without running pytest's teardown
            try:
                os.close(read_end)
                client.set("child", "ran")
                line = f"ok {pool.metrics().open_sockets}"
            except BaseException as exc:  # noqa: BLE001 - the outcome is reported to the parent
                line = f"{type(exc).__name__}: {exc}"
            os.write(write_end, line.encode()[:500])
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        reported = pipe.read()
    os.waitpid(pid, 0)
    assert reported == "ok 1", reported
    assert pool.metrics().open_sockets == 2  # the parent's budget still counts the parent's two connections
    for conn in held:
        pool.release(conn)
    assert client.get("child") == b"ran"
    pool.disconnect()
