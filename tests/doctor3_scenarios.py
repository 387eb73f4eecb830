"""Live shapes for the doctor's third round (issue 20): subscriber piles, a leak under a storm, a leak on a
server with `timeout` set, full primaries with Sentinels and replicas, a full cluster node, MONITOR piles,
and a healthy Sentinel primary. Each is a context manager yielding a `Live` (doctor_scenarios.py); every
load is bounded in count and time and stops on exit; all on loopback."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Iterator

import redis

from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerBinary, resp_command
from connguard.lab.topology import ClusterSet, SentinelSet
from doctor_scenarios import PRODUCTION_IDLE, Live, _live, _storm_thread

SUBSCRIBER_HOST = "127.0.0.91"
LEAK_HOST = "127.0.0.5"
MONITOR_HOST = "127.0.0.95"
PILE_HOST = "127.0.0.44"


@contextlib.contextmanager
def subscriber_pile(binary: ServerBinary) -> Iterator[Live]:
    """127.0.0.91 opens one SUBSCRIBE connection per session and never closes it: 26 over ~4 s, and still
    one every 0.3 s while the doctor watches (bounded: 10 more); a web host works beside it."""
    with _live("subscriber_pile", binary, ("connection_leak",), (SUBSCRIBER_HOST,), maxclients=80) as live:
        live.crowd.open(6, source="127.0.0.92", kind="active", name="web")
        for _ in range(13):
            live.crowd.open(2, source=SUBSCRIBER_HOST, kind="pubsub", name="session-events")
            time.sleep(0.3)

        def keep_subscribing() -> None:
            for _ in range(10):
                if live.stop.wait(0.3):
                    return
                live.crowd.open(1, source=SUBSCRIBER_HOST, kind="pubsub", name="session-events")

        live.background(keep_subscribing)
        yield live


def _leak_pile(live: Live, count: int, batches: int = 6) -> None:
    """A named pile from LEAK_HOST opened over time (ages spread), used once and left."""
    for _ in range(batches):
        live.crowd.open(count // batches, source=LEAK_HOST, name="orders-worker", lib_name="redis-py")
        time.sleep(0.35)


@contextlib.contextmanager
def leak_under_storm(binary: ServerBinary, *, hold: bool = True, seconds: float = 9.0) -> Iterator[Live]:
    """A leak holds 54 of 60 slots; then three hosts retry without backoff (bounded: `seconds`, 4000 tries
    each). `hold`: the doctor holds its slot from the start; else it is refused and judges from /proc."""
    with _live("leak_under_storm", binary, ("connection_leak", "retry_storm", "exhausted"), (LEAK_HOST,),
               hold=hold, maxclients=60) as live:
        live.crowd.open(2, source="127.0.0.6", kind="active", name="web")
        _leak_pile(live, 54)
        time.sleep(1.0)
        deadline = time.monotonic() + seconds
        for i in range(6):
            live.background(_storm_thread(live, f"127.0.0.{21 + i % 3}", 0.05, deadline, 4000))
        time.sleep(0.8)
        yield live


@contextlib.contextmanager
def leak_with_timeout(binary: ServerBinary) -> Iterator[Live]:
    """The leak shape on a server that already runs `timeout 90`: the advice must not weaken it."""
    with _live("leak_with_timeout", binary, ("connection_leak",), (LEAK_HOST,), maxclients=100,
               extra_args=("--timeout", "90", "--tcp-keepalive", "0")) as live:
        live.crowd.open(10, source="127.0.0.6", kind="active", name="web")
        _leak_pile(live, 48)

        def keep_leaking() -> None:
            for _ in range(6):
                if live.stop.wait(0.4):
                    return
                live.crowd.open(3, source=LEAK_HOST, name="orders-worker", lib_name="redis-py")

        time.sleep(0.8)
        live.background(keep_leaking)
        yield live


def _fill(crowd: Crowd, port: int, source: str, name: str) -> int:
    """Open connections from `source` until the server refuses one; how many it admitted."""
    admitted = 0
    while True:
        group = crowd.open(5, source=source, name=name)
        admitted += len(group.sockets)
        if group.refused:
            return admitted


@contextlib.contextmanager
def sentinel_primary(binary: ServerBinary, *, full: bool, hold: bool = False) -> Iterator[tuple[Live, SentinelSet]]:
    """A primary with 2 replicas and 3 Sentinels (all from 127.0.0.1). `full`: an app pile from 127.0.0.44
    fills every slot left; else a few web clients only (a healthy primary, about 13% used)."""
    with SentinelSet(binary, replicas=2, sentinels=3, maxclients=40 if full else 100).start() as topo:
        assert topo.primary is not None
        live = Live("sentinel_primary", topo.primary, Crowd("127.0.0.1", topo.primary.port),
                    ("exhausted",) if full else (), (PILE_HOST,) if full else ())
        try:
            if hold:
                from connguard.target import open_connection, parse_target

                live.conn = open_connection(parse_target(topo.primary.url), connect_timeout_s=5)
            if full:
                _fill(live.crowd, topo.primary.port, PILE_HOST, "report-pool")
            else:
                live.crowd.open(5, source="127.0.0.45", kind="active", name="web")
            time.sleep(0.5)
            yield live, topo
        finally:
            if live.conn is not None:
                live.conn.close()
            live.crowd.close()


@contextlib.contextmanager
def full_cluster_node(binary: ServerBinary) -> Iterator[tuple[Live, ClusterSet]]:
    """Three primaries with a replica each (6 nodes); node 0 is filled by an app pile from 127.0.0.44."""
    with ClusterSet(binary, primaries=3, replicas_per_primary=1, maxclients=40).start() as cluster:
        node = cluster.nodes[0]
        live = Live("full_cluster_node", node, Crowd("127.0.0.1", node.port), ("exhausted",), (PILE_HOST,))
        try:
            live.crowd.open(3, source="127.0.0.45", kind="active", name="web")
            _fill(live.crowd, node.port, PILE_HOST, "report-pool")
            time.sleep(0.3)
            yield live, cluster
        finally:
            live.crowd.close()


def open_monitors(port: int, source: str, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        sock.sendall(resp_command("CLIENT", "SETNAME", "debug-monitor") + resp_command("MONITOR"))
        data = b""
        while data.count(b"\r\n") < 2:
            data += sock.recv(4096)
        socks.append(sock)
    return socks


@contextlib.contextmanager
def monitor_pile(binary: ServerBinary) -> Iterator[Live]:
    """Six forgotten `redis-cli monitor` sessions from 127.0.0.95 on a server at about 85%, whose other
    clients are busy and spread over ten hosts (no leak, no pool block)."""
    with _live("monitor_pile", binary, ("monitor_sessions",), (MONITOR_HOST,), maxclients=40) as live:
        for i in range(10):
            live.crowd.open(3, source=f"127.0.4.{i + 1}", kind="active", name="web")
        socks = open_monitors(live.server.port, MONITOR_HOST, 4)
        live.settings = PRODUCTION_IDLE
        try:
            time.sleep(0.5)
            yield live
        finally:
            for s in socks:
                s.close()


def client_ids(port: int, kind_flag: str) -> list[int]:
    """IDs of the clients whose flags contain `kind_flag`, read with a plain client (the server has room)."""
    r = redis.Redis(port=port, socket_timeout=5)
    try:
        return [int(c["id"]) for c in r.client_list() if kind_flag in c["flags"]]
    finally:
        r.close()
