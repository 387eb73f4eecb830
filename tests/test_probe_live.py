"""The probe on real servers of every version: maxclients, ACL-limited users, /proc facts, one held connection."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import redis

from connguard.lab.servers import ServerProcess
from connguard.probe import take_snapshot
from connguard.probe.census import read_census
from connguard.probe.host import find_listening_pid, is_local_server
from connguard.target import open_connection, parse_target

MONITOR_RULES = ["+info", "+client|list", "+ping", "+client|setname", "+client|setinfo"]


def admin(server: ServerProcess) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, password=server.password, protocol=2)


def add_user(server: ServerProcess, name: str, password: str, rules: list[str]) -> None:
    """ACL SETUSER with only `rules`; a subcommand this version does not know (CLIENT SETINFO before 7.2) is dropped."""
    with admin(server) as r:
        r.execute_command("ACL", "SETUSER", name, "on", f">{password}", "-@all")
        for rule in rules:
            try:
                r.execute_command("ACL", "SETUSER", name, rule)
            except redis.ResponseError:
                continue


def snapshot_of(url: str, **kwargs):
    with open_connection(parse_target(url), connect_timeout_s=5) as conn:
        return conn, take_snapshot(conn, **kwargs)


def test_one_named_connection_and_maxclients_from_config(binary, start_server, crowd_for):
    server = start_server(binary, maxclients=200)
    crowd_for(server).open(3, source="127.0.0.2", name="orders-worker")
    conn, snap = snapshot_of(server.url)
    assert (snap.maxclients, snap.maxclients_source, snap.limitations) == (200, "config", ())
    assert snap.info.version == binary.version and snap.info.flavor == binary.flavor
    ours = [c for c in snap.clients if c.name == "connguard"]
    assert len(ours) == 1, "connguard holds exactly one connection"
    assert ours[0].id == snap.own_client_id == conn.client_id
    assert snap.info.connected_clients == 4 == len(snap.clients)
    if binary.flavor == "valkey" or tuple(map(int, binary.version.split(".")[:2])) >= (7, 2):
        assert ours[0].lib_name == "connguard"
    else:
        assert ours[0].lib_name is None  # no CLIENT SETINFO before 7.2; the connection still works
    assert [c.host for c in snap.clients if c.name == "orders-worker"] == ["127.0.0.2"] * 3


def test_an_acl_user_without_config_still_gets_maxclients_from_info(binary, start_server):
    server = start_server(binary, maxclients=150)
    add_user(server, "watcher", "s3cret-watch", MONITOR_RULES)
    conn, snap = snapshot_of(f"redis://watcher:s3cret-watch@127.0.0.1:{server.port}")
    assert (snap.maxclients, snap.maxclients_source) == (150, "info")
    assert any("CONFIG GET maxclients denied" in line for line in snap.limitations)
    # CLIENT ID is denied too; our own connection is still found in CLIENT LIST.
    assert conn.client_id is None and snap.clients is not None
    assert snap.own_client_id is not None
    assert [c.name for c in snap.clients if c.id == snap.own_client_id] == ["connguard"]
    assert [c.user for c in snap.clients if c.name == "connguard"] == ["watcher"]


def test_an_acl_user_without_client_list_gets_no_per_connection_view(default_binary, start_server):
    server = start_server(default_binary, maxclients=150)
    add_user(server, "counter", "s3cret-count", ["+info", "+ping", "+client|setname", "+client|id"])
    _conn, snap = snapshot_of(f"redis://counter:s3cret-count@127.0.0.1:{server.port}")
    assert snap.clients is None and snap.maxclients == 150
    assert any(line.startswith("CLIENT LIST denied") for line in snap.limitations)


def test_fd_limit_is_read_from_proc_and_explains_a_lowered_maxclients(binary, start_server):
    server = start_server(binary, nofile=128)  # asks for the default 10000 clients
    _conn, snap = snapshot_of(server.url)
    assert snap.host is not None and snap.host.pid == server.pid
    assert snap.host.fd_limit_soft == 128 == snap.host.fd_limit_hard
    assert snap.maxclients == 128 - 32 == snap.info.maxclients  # CONFIG GET reports the lowered value
    assert 0 < snap.host.open_fds < 128
    assert "maxclients has been reduced to 96" in server.log_text()


def test_a_server_is_local_only_when_its_pid_listens_on_its_port(default_binary, start_server):
    server = start_server(default_binary)
    assert is_local_server(server.pid, server.port)
    assert not is_local_server(os.getpid(), server.port)  # a pid here that does not listen there
    assert not is_local_server(server.pid, server.port + 1 if server.port < 65535 else 1024)
    assert not is_local_server(None, server.port)
    assert find_listening_pid(server.port) == server.pid


def test_socket_census_counts_connections_by_client_host(binary, start_server, crowd_for):
    server = start_server(binary)
    crowd = crowd_for(server)
    crowd.open(3, source="127.0.0.2")
    crowd.open(2, source="127.0.1.7", kind="blocked")
    _conn, snap = snapshot_of(server.url, census=True)
    assert snap.census is not None and snap.census.port == server.port
    assert snap.census.by_host["127.0.0.2"] == 3 and snap.census.by_host["127.0.1.7"] == 2
    assert snap.census.by_host["127.0.0.1"] >= 1  # our own held connection
    assert read_census(server.port).by_host["127.0.1.7"] == 2  # no Redis connection needed


def test_a_unix_socket_with_a_space_in_its_path(default_binary, start_server, crowd_for):
    with tempfile.TemporaryDirectory(prefix="connguard dir ") as tmp:
        path = str(Path(tmp, "redis.sock"))
        server = start_server(default_binary, extra_args=("--unixsocket", path, "--unixsocketperm", "700"))
        crowd_for(server).open(2, source="127.0.0.3", name="tcp-side")
        conn, snap = snapshot_of(f"unix://{path}")
        ours = next(c for c in snap.clients if c.id == conn.client_id)
        assert ours.is_unix and ours.host == "unix" and ours.name == "connguard"
        assert ours.addr.startswith(path)  # the space survived (slow path)
        assert [c.host for c in snap.clients if c.name == "tcp-side"] == ["127.0.0.3"] * 2
        assert snap.host is not None and snap.host.pid == server.pid  # local, by process_id + tcp_port


def test_idle_and_age_come_from_the_server_clock(default_binary, start_server, crowd_for):
    server = start_server(default_binary)
    crowd_for(server).open(1, source="127.0.0.4", name="sleeper")
    time.sleep(2.1)
    _conn, snap = snapshot_of(server.url)
    sleeper = next(c for c in snap.clients if c.name == "sleeper")
    assert sleeper.idle_s >= 2 and sleeper.age_s >= 2
