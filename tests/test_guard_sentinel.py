"""The guard on a real Sentinel set: the primary the Sentinels name is reached through a guarded pool."""

from __future__ import annotations

import time
from typing import Iterator

import pytest
import redis

from connguard.guard import BudgetExceeded, CircuitOpenError, GuardedSentinelConnectionPool, MaxClientsError
from connguard.guard import guarded_sentinel_client
from connguard.lab.crowd import Crowd
from connguard.lab.topology import SentinelSet

from conftest import BINARIES

REDIS7 = [b for b in BINARIES if b.flavor == "redis" and b.version.startswith("7.")] or BINARIES
PASSWORD = "guard-s3nt"
MAXCLIENTS = 30


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelSet]:
    if not REDIS7:
        pytest.skip("no server binary found")
    with SentinelSet(REDIS7[0], replicas=1, sentinels=1, maxclients=MAXCLIENTS, password=PASSWORD) as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(fresh_guard_registry: None) -> None:
    """Each test sees only its own client's guard state."""


def client_for(s: SentinelSet, **kwargs):  # type: ignore[no-untyped-def]
    return guarded_sentinel_client([("127.0.0.1", x.port) for x in s.sentinel_servers], s.master_name,
                                   password=PASSWORD, leak_threshold_s=None, **kwargs)


def test_the_primary_is_reached_through_a_guarded_pool_with_its_budget(sentinels: SentinelSet) -> None:
    client = client_for(sentinels, budget=3, budget_wait_s=0.2)
    try:
        client.set("cg:sentinel", "yes")
        assert client.get("cg:sentinel") == b"yes"
        pool = client.connection_pool
        assert isinstance(pool, GuardedSentinelConnectionPool)
        assert pool.endpoint.label == f"sentinel:{sentinels.master_name} (primary)"
        assert pool.endpoint.connects_total == 1
        held = [pool.get_connection() for _ in range(3)]
        assert {(c.host, c.port) for c in held} == {("127.0.0.1", sentinels.primary.port)}
        with pytest.raises(BudgetExceeded):
            pool.get_connection()  # the fourth: the budget of 3 for this service's primary
        for c in held:
            pool.release(c)
        assert PASSWORD not in repr(pool) and PASSWORD not in pool.endpoint.label
    finally:
        client.close()


def test_a_full_primary_opens_the_primary_breaker_and_the_replicas_still_answer(sentinels: SentinelSet) -> None:
    primary = sentinels.primary
    client, replica = client_for(sentinels, reset_timeout_s=5), client_for(sentinels, replica=True)
    crowd = Crowd("127.0.0.1", primary.port, password=PASSWORD)
    try:
        admin = redis.Redis(port=primary.port, password=PASSWORD)
        free = MAXCLIENTS - admin.info("clients")["connected_clients"]
        admin.close()
        crowd.open(free + 1, source="127.0.0.12")
        with pytest.raises(MaxClientsError):
            client.get("cg:sentinel")
        with pytest.raises(CircuitOpenError):
            client.get("cg:sentinel")  # fail fast: no second socket to the full primary
        guard = client.connection_pool.endpoint
        assert guard.attempts_total == 1 and guard.refusals_total == 1 and guard.breaker.state == "open"
        replica.ping()  # the replicas are another endpoint with their own breaker
        assert replica.connection_pool.endpoint.breaker.state == "closed"
    finally:
        crowd.close()
        client.close()
        replica.close()


def test_a_failover_away_from_a_full_primary_closes_the_breaker_and_the_pool_follows(sentinels: SentinelSet) -> None:
    """Last in the module: it moves the primary. The old primary is full and the breaker open for 30 s; once the
    Sentinels name the replica, the next connect goes there at once."""
    old, new = sentinels.primary.port, sentinels.replica_servers[0].port
    client = client_for(sentinels, reset_timeout_s=30)
    sentinel = redis.Redis(port=sentinels.sentinel_servers[0].port, decode_responses=True)
    crowd = Crowd("127.0.0.1", old, password=PASSWORD)
    try:
        admin = redis.Redis(port=old, password=PASSWORD)
        free = MAXCLIENTS - admin.info("clients")["connected_clients"]
        admin.close()
        crowd.open(free + 1, source="127.0.0.12")
        with pytest.raises(MaxClientsError):
            client.set("cg:failover", "before")
        guard = client.connection_pool.endpoint
        assert guard.breaker.state == "open"
        sentinel.execute_command("SENTINEL", "FAILOVER", sentinels.master_name)
        deadline = time.monotonic() + 20
        # redis-py reads SENTINEL MASTERS, which names the promoted replica only at the end of the failover
        # (GET-MASTER-ADDR-BY-NAME does earlier): until then it still answers the old, full primary.
        while sentinel.sentinel_master(sentinels.master_name)["port"] != new:
            assert time.monotonic() < deadline, "the Sentinel never promoted the replica"
            time.sleep(0.1)
        while True:  # the promoted replica may refuse writes for a moment; the breaker no longer stands in the way
            try:
                client.set("cg:failover", "after")
                break
            except (redis.ResponseError, CircuitOpenError):  # well before the breaker's own 30 s
                assert time.monotonic() < deadline, "the new primary never took a write"
                time.sleep(0.1)
        assert guard.breaker.state == "closed" and client.connection_pool.endpoint is guard
        assert guard.attempts_total - guard.refusals_total >= 1  # the connect to the new primary passed the gate
        conn = client.connection_pool.get_connection()
        try:
            assert conn.port == new != old
        finally:
            client.connection_pool.release(conn)
        newc = redis.Redis(port=new, password=PASSWORD)
        assert newc.get("cg:failover") == b"after"
        newc.close()
    finally:
        crowd.close()
        sentinel.close()
        client.close()
