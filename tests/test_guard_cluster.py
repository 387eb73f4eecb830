"""The guard on a real 3-node Cluster: every node pool guarded, a breaker and budget per node, made lazily on MOVED."""

from __future__ import annotations

import time

import pytest
import redis

from connguard.guard import GuardedConnectionPool, GuardRefusal, guarded_cluster_client
from connguard.guard.registry import REGISTRY
from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerProcess
from connguard.lab.topology import ClusterSet, free_cluster_port
from connguard.target import parse_target

from conftest import LAB_CLUSTER_MAXCLIENTS

MAXCLIENTS = LAB_CLUSTER_MAXCLIENTS


@pytest.fixture
def cluster(lab_cluster: ClusterSet) -> ClusterSet:
    """The session's 3-node cluster (conftest.py); each test leaves it as it found it."""
    return lab_cluster


@pytest.fixture(autouse=True)
def _fresh(fresh_guard_registry: None) -> None:
    """Each test sees only its own client's guard state."""


def endpoint_for(port: int):  # type: ignore[no-untyped-def]
    key = parse_target(f"redis://127.0.0.1:{port}").endpoint_key
    return next((e for e in REGISTRY.endpoints() if e.key == key), None)


def key_on(client: redis.cluster.RedisCluster, port: int, prefix: str) -> str:
    return next(k for k in (f"{prefix}:{i}" for i in range(10_000)) if client.get_node_from_key(k).port == port)


def test_every_node_pool_is_guarded_with_its_own_breaker_and_budget(cluster: ClusterSet) -> None:
    client = guarded_cluster_client(cluster.url, budget=7, leak_threshold_s=None)
    try:
        for i in range(60):
            client.set(f"cg:all:{i}", i)
        assert [int(client.get(f"cg:all:{i}")) for i in range(60)] == list(range(60))
        nodes = client.get_nodes()
        assert sorted(n.port for n in nodes) == sorted(n.port for n in cluster.nodes)
        pools = [n.redis_connection.connection_pool for n in nodes]
        assert all(isinstance(p, GuardedConnectionPool) for p in pools)
        guards = [endpoint_for(n.port) for n in nodes]
        assert all(g is not None and g.connects_total >= 1 for g in guards)
        assert len({id(g.breaker) for g in guards}) == 3 and len({id(g.budget) for g in guards}) == 3
        assert {g.settings.budget for g in guards} == {7}
    finally:
        client.close()


def test_a_full_node_opens_only_its_own_breaker(cluster: ClusterSet) -> None:
    seed_port = cluster.nodes[0].port
    full, other = cluster.nodes[1], cluster.nodes[2]
    client = guarded_cluster_client(cluster.url, leak_threshold_s=None, reset_timeout_s=0.3)
    crowd = Crowd("127.0.0.1", full.port)
    try:
        assert seed_port != full.port
        info = redis.Redis(port=full.port)
        free = MAXCLIENTS - info.info("clients")["connected_clients"] - 4  # 4: the bus links of a 3-node cluster
        info.close()
        crowd.open(free + 2, source="127.0.0.11")  # a leak fills the node; the extra two are refused
        hot, cold = key_on(client, full.port, "cg:full"), key_on(client, other.port, "cg:ok")
        with pytest.raises(redis.RedisError) as first:
            client.get(hot)
        guard = endpoint_for(full.port)
        assert isinstance(first.value, GuardRefusal)  # MaxClientsError, or CircuitOpenError on the cluster's retry
        assert guard is not None and guard.refusals_total >= 1 and guard.breaker.opened_total >= 1
        attempts = guard.attempts_total
        with pytest.raises(redis.RedisError) as failed:
            client.get(hot)
        assert isinstance(failed.value, GuardRefusal) or guard.attempts_total - attempts <= 2  # fail fast, not a storm
        client.set(cold, "served")  # the other nodes' breakers are their own
        assert client.get(cold) == b"served"
        assert endpoint_for(other.port).breaker.state == "closed"
        crowd.close()
        deadline = time.monotonic() + 10
        while True:  # once the leak is gone the node's breaker lets a probe through and closes
            try:
                client.set(hot, "back")
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "the full node never came back"
                time.sleep(0.1)
        assert guard.breaker.state == "closed" and client.get(hot) == b"back"
    finally:
        crowd.close()
        client.close()


def test_a_moved_to_a_node_the_client_never_saw_creates_its_guard_state_then(cluster: ClusterSet) -> None:
    client = guarded_cluster_client(cluster.url, leak_threshold_s=None)
    port = free_cluster_port(taken={n.port for n in cluster.nodes})
    new = ServerProcess(cluster.binary, port=port, maxclients=MAXCLIENTS,
                        extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")).start()
    admins = [redis.Redis(port=n.port) for n in cluster.nodes]
    newc = redis.Redis(port=port)
    try:
        key = key_on(client, cluster.nodes[0].port, "cg:moved")
        slot = client.keyslot(key)
        client.set("cg:warm", 1)  # the client knows the slot map now
        assert endpoint_for(port) is None
        admins[0].execute_command("CLUSTER", "MEET", "127.0.0.1", str(port))
        deadline = time.monotonic() + 10
        while not all(f"127.0.0.1:{port}" in str(a.execute_command("CLUSTER", "NODES")) for a in admins):
            assert time.monotonic() < deadline, "the new node never joined"
            time.sleep(0.05)
        new_id = newc.execute_command("CLUSTER", "MYID")
        new_id = new_id.decode() if isinstance(new_id, bytes) else new_id
        for conn in (newc, *admins):  # an empty slot moves with SETSLOT NODE alone
            conn.execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id)
        client.set(key, "moved")  # MOVED: the client makes the new node's pool, and the guard its state
        guard = endpoint_for(port)
        assert guard is not None and guard.connects_total >= 1
        assert client.get_node_from_key(key).port == port
        pool = client.get_node_from_key(key).redis_connection.connection_pool
        assert isinstance(pool, GuardedConnectionPool) and pool.endpoint is guard
        assert newc.get(key) == b"moved"
    finally:
        client.close()
        _give_the_slot_back_and_forget(newc, admins, slot)
        for conn in (newc, *admins):
            conn.close()
        new.stop()


def _give_the_slot_back_and_forget(newc: redis.Redis, admins: list[redis.Redis], slot: int) -> None:
    """Leave the shared cluster as it was: the slot on its first owner again, the extra node forgotten."""
    try:
        new_id = newc.execute_command("CLUSTER", "MYID")
        new_id = new_id.decode() if isinstance(new_id, bytes) else new_id
        owner = admins[0].execute_command("CLUSTER", "MYID")
        owner = owner.decode() if isinstance(owner, bytes) else owner
        for key in newc.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            newc.delete(key)  # a node cannot give away a slot that still holds keys
        for conn in (newc, *admins):
            conn.execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner)
        for conn in admins:
            conn.execute_command("CLUSTER", "FORGET", new_id)  # bans the ID for 60 s: gossip cannot bring it back
    except redis.RedisError:
        pass  # the new node never joined; nothing to undo
