"""Kill with the server's own filters where it has them: Valkey 8.1+ kills many IDs in one CLIENT KILL ID after
re-reading them, Valkey 9.0+ filters CLIENT LIST by IDLE/IP/NAME itself; older servers take the plain path."""

from __future__ import annotations

import json
import time

import pytest
import redis

from connguard.lab.servers import find_binaries
from connguard.probe.client_list import parse_client_list
from connguard.remedy.kill import KillFilter, ServerFeatures, client_list_args, execute_kills, plan_kill
from test_kill_cli import cli

class Executes:
    """A redis-py client as the Executor kill expects (HeldConnection's `execute`)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def execute(self, *args):
        return self.client.execute_command(*args)


VALKEY = [b for b in find_binaries() if b.flavor == "valkey"]
REDIS = [b for b in find_binaries() if b.flavor == "redis"]


@pytest.mark.parametrize("flavor, version, multi, filters", [
    ("valkey", "9.1.2", True, True), ("valkey", "9.0.0", True, True), ("valkey", "8.1.0", True, False),
    ("valkey", "8.0.4", False, False), ("redis", "7.4.2", False, False), ("redis", "8.2.1", False, False),
    ("valkey", "10.0.0-rc1", True, True),
])
def test_features_follow_the_version(flavor, version, multi, filters):
    f = ServerFeatures.of(flavor, version)
    assert (f.multi_id_kill, f.list_filters) == (multi, filters)


def test_filters_only_narrow_where_the_server_has_them():
    wanted = KillFilter(sources=("127.0.0.9",), idle_min_s=30, names=("w",))
    assert client_list_args(wanted, ServerFeatures()) == ("CLIENT", "LIST")
    assert client_list_args(wanted, ServerFeatures(True, True)) == (
        "CLIENT", "LIST", "IDLE", "30", "IP", "127.0.0.9", "NAME", "w")
    two_hosts = KillFilter(sources=("127.0.0.9", "127.0.0.10"))  # IP takes one address: filter locally
    assert client_list_args(two_hosts, ServerFeatures(True, True)) == ("CLIENT", "LIST")


@pytest.mark.skipif(not VALKEY, reason="no Valkey binary")
def test_batched_kill_rechecks_each_id_and_kills_the_rest_in_one_command(start_server, crowd_for):
    server = start_server(VALKEY[0], maxclients=200)
    crowd = crowd_for(server)
    stay = crowd.open(3, source="127.0.0.41", name="keep")
    leak = crowd.open(40, source="127.0.0.42", name="leak")
    admin = redis.Redis(port=server.port)
    own = int(admin.client_id())
    plan = plan_kill(parse_client_list(admin.execute_command("CLIENT", "LIST")).records(),
                     KillFilter(sources=("127.0.0.42",)), own)
    assert len(plan.ids) == 40
    for sock in leak.sockets[:5]:  # five leave between the plan and the kill
        sock.close()
    time.sleep(0.3)
    result = execute_kills(Executes(admin), plan, batched=True)
    assert result.killed == 35 and len(result.already_gone) == 5 and result.round_trips == 2
    left = {c["addr"].rpartition(":")[0] for c in admin.client_list()}
    assert "127.0.0.42" not in left and "127.0.0.41" in left and len(stay.sockets) == 3
    admin.close()


@pytest.mark.skipif(not VALKEY, reason="no Valkey binary")
def test_the_cli_on_valkey_fetches_only_candidates_and_kills_in_a_batch(start_server, crowd_for):
    server = start_server(VALKEY[0], maxclients=200)
    crowd = crowd_for(server)
    crowd.open(20, source="127.0.0.43", name="stale")
    time.sleep(2.1)
    crowd.open(5, source="127.0.0.43", name="fresh")
    crowd.open(5, source="127.0.0.44", name="stale")
    data = json.loads(cli("kill", server.url, "--source", "127.0.0.43", "--idle", "2", "--json", "--yes").stdout)
    assert data["server_side"]["client_list"] == "CLIENT LIST IDLE 2 IP 127.0.0.43"
    assert data["server_side"]["batched_kill"] is True and data["server_side"]["round_trips"] == 2
    assert data["killed"] == 20 and {t["name"] for t in data["targets"]} == {"stale"}
    admin = redis.Redis(port=server.port)
    names = sorted(c["name"] for c in admin.client_list() if c["addr"].startswith(("127.0.0.43:", "127.0.0.44:")))
    assert names == ["fresh"] * 5 + ["stale"] * 5
    admin.close()


@pytest.mark.skipif(not REDIS, reason="no Redis binary")
def test_the_cli_on_redis_takes_the_plain_path(start_server, crowd_for):
    server = start_server(REDIS[0], maxclients=100)
    crowd_for(server).open(6, source="127.0.0.45", name="stale")
    data = json.loads(cli("kill", server.url, "--source", "127.0.0.45", "--json", "--yes").stdout)
    assert data["server_side"] == {"client_list": "CLIENT LIST", "batched_kill": False, "round_trips": 6}
    assert data["killed"] == 6
