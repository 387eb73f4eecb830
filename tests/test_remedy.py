"""Fixing safely: kill touches only what it may, by ID; CONFIG SET respects the fd limit; both dry-run by default."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import redis

from connguard.remedy.kill import KillFilter, plan_kill
from connguard.remedy.limits import check_maxclients, check_timeout, max_clients_for_fd_limit
from connguard.probe.client_list import parse_client_list

import pytest


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connguard", *args], capture_output=True, text=True, timeout=timeout)


def _ids_by_source(port: int) -> dict[str, int]:
    r = redis.Redis(port=port, protocol=2)
    try:
        counts: dict[str, int] = {}
        for c in r.client_list():
            host = c["addr"].rpartition(":")[0]
            counts[host] = counts.get(host, 0) + 1
        return counts
    finally:
        r.close()


def test_kill_is_a_dry_run_until_yes_and_never_touches_replicas_or_pubsub(default_binary, start_server, crowd_for):
    primary = start_server(default_binary, maxclients=100)
    start_server(default_binary, replicaof=("127.0.0.1", primary.port))
    crowd = crowd_for(primary)
    crowd.open(12, source="127.0.0.66", name="orders-worker")
    crowd.open(3, source="127.0.0.66", kind="pubsub")
    crowd.open(4, source="127.0.0.7", kind="active")
    r = redis.Redis(port=primary.port)
    deadline = time.time() + 15
    while r.info("replication")["connected_slaves"] < 1 and time.time() < deadline:
        time.sleep(0.1)
    r.close()

    dry = cli("kill", primary.url, "--source", "127.0.0.66", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["would_kill"] == 12 and plan["killed"] == 0
    assert sum(1 for s in plan["skipped"] if s["reason"] == "pub/sub subscriber") == 3
    assert _ids_by_source(primary.port)["127.0.0.66"] == 15  # nothing changed

    real = cli("kill", primary.url, "--source", "127.0.0.66", "--yes", "--json")
    assert real.returncode == 0, real.stderr
    assert json.loads(real.stdout)["killed"] == 12
    left = _ids_by_source(primary.port)
    assert left["127.0.0.66"] == 3  # the subscribers
    assert left["127.0.0.7"] == 4
    r = redis.Redis(port=primary.port)
    assert r.info("replication")["connected_slaves"] == 1
    r.close()


def test_kill_without_a_selector_is_refused(default_binary, start_server):
    server = start_server(default_binary, maxclients=20)
    result = cli("kill", server.url, "--yes")
    assert result.returncode == 3
    assert "needs a selector" in result.stderr and "Traceback" not in result.stderr


def test_kill_by_idle_spares_active_clients(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=100)
    crowd = crowd_for(server)
    crowd.open(6, source="127.0.0.20")
    time.sleep(2.2)
    crowd.open(5, source="127.0.0.21", kind="active")
    result = cli("kill", server.url, "--idle", "2", "--yes", "--json")
    assert json.loads(result.stdout)["killed"] == 6
    assert _ids_by_source(server.port).get("127.0.0.20", 0) == 0
    assert _ids_by_source(server.port)["127.0.0.21"] == 5


def test_plan_kill_protects_own_connection_and_connguard_tools():
    text = (
        "id=1 addr=127.0.0.9:1 fd=8 name=connguard age=9 idle=9 flags=N db=0 sub=0 psub=0 multi=-1 cmd=client|list\n"
        "id=2 addr=127.0.0.9:2 fd=9 name= age=9 idle=9 flags=N db=0 sub=0 psub=0 multi=-1 cmd=get\n"
        "id=3 addr=127.0.0.9:3 fd=10 name=sentinel-1a2b3c4d-cmd age=9 idle=9 flags=N db=0 sub=0 psub=0 multi=-1 cmd=ping\n"
        "id=4 addr=127.0.0.9:4 fd=11 name= age=9 idle=9 flags=b db=0 sub=0 psub=0 multi=-1 cmd=blpop\n"
        "id=5 addr=127.0.0.9:5 fd=12 name= age=9 idle=9 flags=O db=0 sub=0 psub=0 multi=-1 cmd=monitor\n"
        "id=6 addr=127.0.0.9:6 fd=13 name= age=9 idle=9 flags=N db=0 sub=0 psub=0 multi=-1 cmd=get"
    )
    clients = parse_client_list(text).records()
    plan = plan_kill(clients, KillFilter(sources=("127.0.0.9",), max_kills=1), own_client_id=6)
    assert plan.ids == (2,)
    reasons = {s.client.id: s.reason for s in plan.skipped}
    assert reasons[1] == "another connguard tool"
    assert reasons[3] == "Sentinel link"
    assert reasons[4].startswith("blocked")
    assert reasons[5] == "MONITOR client"
    assert reasons[6] == "our own connection"


def test_settings_that_make_no_sense_are_refused():
    with pytest.raises(ValueError, match="selector"):
        KillFilter()
    with pytest.raises(ValueError, match="--idle"):
        KillFilter(idle_min_s=-1)


def test_maxclients_above_the_fd_limit_is_refused_with_the_number_computed():
    assert max_clients_for_fd_limit(1024) == 992
    check = check_maxclients(15000, used=10, fd_limit=1024)
    assert not check.allowed and "992" in check.reason
    assert check_maxclients(900, used=10, fd_limit=1024).allowed
    assert not check_timeout(-1).allowed
    assert "pub/sub" in check_timeout(300).reason


def test_config_maxclients_checks_the_servers_fd_limit(default_binary, start_server):
    server = start_server(default_binary, maxclients=10000, nofile=256)  # lowered to 224 at start
    refused = cli("config", server.url, "--maxclients", "5000", "--yes")
    assert refused.returncode == 3 and "224" in refused.stderr
    dry = cli("config", server.url, "--maxclients", "200", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["applied"] is False
    r = redis.Redis(port=server.port)
    assert r.config_get("maxclients")["maxclients"] == "224"
    done = cli("config", server.url, "--maxclients", "200", "--yes", "--json")
    assert json.loads(done.stdout)["applied"] is True
    assert r.config_get("maxclients")["maxclients"] == "200"
    timeout = cli("config", server.url, "--timeout", "300", "--yes")
    assert timeout.returncode == 0, timeout.stderr
    assert r.config_get("timeout")["timeout"] == "300"
    r.close()


def test_config_dry_run_without_config_says_it_cannot_read_and_that_yes_will_fail(default_binary, start_server):
    server = start_server(default_binary, maxclients=50)
    admin = redis.Redis(port=server.port)
    admin.execute_command("ACL", "SETUSER", "noconfig", "on", ">pw1", "~*", "+@all", "-config")
    url = f"redis://noconfig:pw1@127.0.0.1:{server.port}"
    dry = cli("config", url, "--timeout", "300")
    assert dry.returncode == 3 and "None" not in dry.stdout
    assert "cannot read the current timeout" in dry.stdout and "--yes will fail" in dry.stdout
    data = json.loads(cli("config", url, "--timeout", "300", "--json").stdout)
    assert (data["current"], data["current_readable"], data["applied"]) == (None, False, False)
    real = cli("config", url, "--timeout", "300", "--yes")
    assert real.returncode == 3 and "refused CONFIG SET timeout 300" in real.stderr and "Traceback" not in real.stderr
    assert admin.config_get("timeout")["timeout"] == "0"
    admin.close()


def test_config_refuses_a_maxclients_that_would_lock_everyone_out_unless_forced(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=50)
    crowd_for(server).open(6, source="127.0.0.50")
    refused = cli("config", server.url, "--maxclients", "3", "--yes")
    assert refused.returncode == 3 and "6 connections are in use" in refused.stderr and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    r = redis.Redis(port=server.port)
    assert r.config_get("maxclients")["maxclients"] == "50"
    assert cli("config", server.url, "--maxclients", "15", "--yes").returncode == 3  # 6 + 10 reserve > 15
    forced = cli("config", server.url, "--maxclients", "3", "--yes", "--force")
    assert forced.returncode == 0, forced.stderr
    assert r.config_get("maxclients")["maxclients"] == "3"
    r.close()


@pytest.mark.parametrize("args", [("--timeout", "nan"), ("--maxclients", "inf"), ("--maxclients", "0"),
                                  ("--timeout", "-5"), ("--maxclients", "1e30")])
def test_config_numbers_are_checked_at_the_edge(args):
    proc = cli("config", "redis://127.0.0.1:1", *args)
    assert proc.returncode == 3 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
