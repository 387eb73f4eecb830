"""Room over a held connection (guard/room.py): while the breaker is open for maxclients refusals, a checkout of a
live pooled connection asks INFO whether the server has room, so the guard neither probes a server it knows is
full nor waits out its timer once room returns. Real servers; no timing asserts (events and counters only)."""

from __future__ import annotations

import threading

import pytest
import redis

from connguard.guard import CircuitOpenError, GuardedConnectionPool
from connguard.guard.room import room_of

pytestmark = pytest.mark.usefixtures("fresh_guard_registry")

INFO_CLIENTS = b"# Clients\r\nconnected_clients:9\r\ncluster_connections:0\r\nmaxclients:10\r\nblocked_clients:0\r\n"


def test_room_is_read_from_info_with_replicas_counted() -> None:
    assert room_of([INFO_CLIENTS, b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"]) is True
    assert room_of([INFO_CLIENTS, b"# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"]) is False
    assert room_of([b"# Clients\r\nconnected_clients:3\r\n", None]) is None  # no maxclients field (before 6.2)


def _fill(server_port: int, crowd, count: int):
    return crowd.open(count, source="127.0.0.6")


def test_a_held_connection_tells_the_breaker_the_server_is_still_full_then_that_room_returned(
        default_binary, start_server, crowd_for) -> None:
    server = start_server(default_binary, maxclients=6)
    reached_server: list[int] = []
    pool = GuardedConnectionPool(host="127.0.0.1", port=server.port, leak_threshold_s=None, reset_timeout_s=0.2,
                                 reset_jitter=0.0)
    client = redis.Redis(connection_pool=pool)
    client.set("k", "v")  # the pool now holds one live connection
    held = pool.get_connection()  # ...kept checked out while a second one is needed
    crowd = crowd_for(server)
    info = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    info.ping()
    leak = crowd.open(6 - int(info.info("clients")["connected_clients"]), source="127.0.0.6")
    refused_before = int(info.info("stats")["rejected_connections"])
    with pytest.raises(redis.ConnectionError):  # a second connection: refused, the breaker opens
        client.get("k")
    assert pool.endpoint.breaker.state == "open" and pool.endpoint.room.watching
    pool.release(held)
    # Past the open period, with the server still full: each checkout of the held connection reads INFO, and the
    # due probe is skipped because the reading says full.
    threading.Event().wait(0.3)
    assert client.get("k") == b"v"  # served over the held connection; this checkout read INFO: still full
    assert pool.endpoint.room.room is False
    held = pool.get_connection()
    with pytest.raises(CircuitOpenError, match="still full"):
        client.get("k")  # needs a new connection: not attempted
    pool.release(held)
    assert int(info.info("stats")["rejected_connections"]) == refused_before + 1  # only the first refusal
    crowd.close_group(leak)
    threading.Event().wait(0.05)  # past ROOM_CHECK_EVERY_S, so the next checkout asks again
    assert client.get("k") == b"v"  # this checkout saw room: the breaker closes without a probe
    assert pool.endpoint.room.room_seen_total >= 1
    assert pool.endpoint.breaker.state == "closed" and not pool.endpoint.room.watching
    held = pool.get_connection()
    assert client.get("k") == b"v"  # a new connection, admitted at once
    pool.release(held)
    assert int(info.info("stats")["rejected_connections"]) == refused_before + 1
    info.close()
    client.close()
    pool.disconnect()


def test_asyncio_pools_learn_room_over_their_held_connection_too(default_binary, start_server, crowd_for) -> None:
    import asyncio

    from connguard.guard import guarded_async_client

    server = start_server(default_binary, maxclients=6)
    info = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    info.ping()
    crowd = crowd_for(server)

    async def scenario() -> tuple[list[bool | None], str, int]:
        client = guarded_async_client(server.url, leak_threshold_s=None, reset_timeout_s=0.2, reset_jitter=0.0)
        pool = client.connection_pool
        await client.set("k", "v")  # one live pooled connection
        held = await pool.get_connection()
        leak = crowd.open(6 - int(info.info("clients")["connected_clients"]), source="127.0.0.6")
        with pytest.raises(redis.ConnectionError):
            await client.get("k")  # a second connection: refused, the breaker opens
        await pool.release(held)
        seen = []
        await client.get("k")  # served over the held connection, which read INFO: still full
        seen.append(pool.endpoint.room.room)
        crowd.close_group(leak)
        await asyncio.sleep(0.05)  # past ROOM_CHECK_EVERY_S
        await client.get("k")  # this checkout saw room and closed the breaker
        seen.append(pool.endpoint.room.room_seen_total >= 1)
        state = pool.endpoint.breaker.state
        await client.aclose()
        return seen, state, int(info.info("stats")["rejected_connections"])

    seen, state, rejected = asyncio.run(scenario())
    assert seen == [False, True] and state == "closed"
    assert rejected == 1  # the refusal that opened the breaker, nothing after it
    info.close()
