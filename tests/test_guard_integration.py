"""Everything redis-py users rely on still works through the guarded pool: pipelines, transactions, pub/sub."""

from __future__ import annotations

import threading

import pytest
import redis

from connguard.guard import GuardedConnectionPool, guarded_client


pytestmark = pytest.mark.usefixtures("fresh_guard_registry")


@pytest.fixture
def client(server):
    """A guarded client against every server version on this machine."""
    c = guarded_client(server.url, name="app", decode_responses=True, leak_threshold_s=5.0)
    yield c
    c.close()


def test_commands_and_pipelines(client):
    assert client.set("greeting", "hello") is True
    assert client.get("greeting") == "hello"
    pipe = client.pipeline(transaction=False)
    pipe.incr("hits").incr("hits").get("hits")
    assert pipe.execute() == [1, 2, "2"]


def test_transactions_with_multi_exec_and_watch(client):
    with client.pipeline() as pipe:  # MULTI/EXEC
        pipe.set("balance", 10).incrby("balance", 5)
        assert pipe.execute() == [True, 15]

    with client.pipeline() as pipe:  # WATCH holds one connection until EXEC
        pipe.watch("balance")
        current = int(pipe.get("balance"))
        pipe.multi()
        pipe.set("balance", current - 3)
        assert pipe.execute() == [True]
    assert client.get("balance") == "12"

    with client.pipeline() as pipe:  # a concurrent write aborts the transaction
        pipe.watch("balance")
        client.set("balance", 0)
        pipe.multi()
        pipe.set("balance", 99)
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert client.get("balance") == "0"
    assert client.connection_pool.metrics().in_use == 0


def test_pubsub(client):
    pubsub = client.pubsub()
    pubsub.subscribe("alerts")
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    assert client.publish("alerts", "disk full") == 1
    message = pubsub.get_message(timeout=2)
    assert (message["channel"], message["data"]) == ("alerts", "disk full")
    pubsub.close()


def test_pool_passed_to_redis_and_shared_by_threads(server):
    monitor = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    before = monitor.info("stats")["total_connections_received"]
    pool = GuardedConnectionPool(host="127.0.0.1", port=server.port, name="workers", budget=4, budget_wait_s=10)
    client = redis.Redis(connection_pool=pool)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                client.incr("shared")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert int(client.get("shared")) == 400
    metrics = pool.metrics()
    assert metrics.open_sockets <= 4 and metrics.in_use == 0 and metrics.circuit_state == "closed"
    # Eight threads over a budget of four reuse the pool's connections instead of churning new ones.
    assert monitor.info("stats")["total_connections_received"] - before <= 4 + 1
    monitor.close()
    pool.disconnect()
