"""Which client hosts of a local server are Redis's own links (a replica, a Sentinel, another cluster node),
read from /proc: the client end of each connection belongs to a Redis process on this host.

This works when the server refuses everyone (no INFO, no CLIENT LIST), which is exactly when `kill --sockets`
is the only way in and must never cut the failover path. Connections from other machines cannot be told
apart from here; for those the doctor goes by CLIENT LIST flags, INFO replication and CLUSTER NODES."""

from __future__ import annotations

import os
from pathlib import Path

from connguard.probe.census import ESTABLISHED, LISTEN, decode_address
from connguard.probe.host import PROC, socket_inodes

REDIS_PROCESSES = ("redis-server", "redis-sentinel", "valkey-server", "valkey-sentinel", "redis-check-")
CLUSTER_BUS_OFFSET = 10_000  # Redis listens for the cluster bus on its port + 10000
SENTINEL, REPLICA, CLUSTER_NODE = "Sentinel", "replica", "cluster node"


def tcp_lines(proc: Path = PROC) -> list[list[str]]:
    """The split rows of /proc/net/tcp and tcp6: read once and passed to both readers below (a busy host's tables
    are large, and `status` runs every minute)."""
    rows: list[list[str]] = []
    for name in ("tcp", "tcp6"):
        try:
            text = (proc / "net" / name).read_text()
        except OSError:
            continue
        rows += [f for f in (line.split() for line in text.splitlines()[1:]) if len(f) >= 10]
    return rows


def _redis_processes(skip: int, proc: Path) -> dict[int, str]:
    """{pid: what} for every other Redis/Valkey process here: a Sentinel by its process title."""
    found: dict[int, str] = {}
    try:
        entries = [e for e in os.listdir(proc) if e.isdigit() and int(e) != skip]
    except OSError:
        return found
    for entry in entries:
        try:
            comm = (proc / entry / "comm").read_text().strip()
        except OSError:
            continue
        if not comm.startswith(REDIS_PROCESSES):
            continue
        try:
            title = (proc / entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            title = ""
        found[int(entry)] = SENTINEL if ("sentinel" in comm or "sentinel" in title) else REPLICA
    return found


def bus_links_in(pid: int, proc: Path = PROC, rows: list[list[str]] | None = None,
                 server_inodes: set[str] | None = None) -> int | None:
    """Established connections into `pid`'s cluster-bus port (one per other known node), None without a bus."""
    server_inodes = socket_inodes(pid, proc) if server_inodes is None else server_inodes
    rows = tcp_lines(proc) if rows is None else rows
    ports = {decode_address(r[1])[1] for r in rows if r[3] == LISTEN and r[9] in server_inodes}
    bus = {p for p in ports if p - CLUSTER_BUS_OFFSET in ports}
    if not bus:
        return None
    return sum(1 for r in rows if r[3] == ESTABLISHED and r[9] in server_inodes and decode_address(r[1])[1] in bus)


def internal_peers(pid: int, proc: Path = PROC, rows: list[list[str]] | None = None,
                   server_inodes: set[str] | None = None) -> dict[str, str]:
    """{client host as the server sees it: what it is} for connections to `pid`'s listening ports whose
    client end a local Redis process holds: a Sentinel, a replica, or (to the bus port) a cluster node."""
    server_inodes = socket_inodes(pid, proc) if server_inodes is None else server_inodes
    if not server_inodes:
        return {}
    rows = tcp_lines(proc) if rows is None else rows
    ports = {decode_address(r[1])[1] for r in rows if r[3] == LISTEN and r[9] in server_inodes}
    if not ports:
        return {}
    bus = {p for p in ports if p - CLUSTER_BUS_OFFSET in ports}
    # Established connections whose far end is one of the server's ports: inode -> (client ip, server port).
    outbound: dict[str, tuple[str, int]] = {}
    for r in rows:
        if r[3] != ESTABLISHED or r[9] in server_inodes or r[9] == "0":
            continue
        try:
            far = decode_address(r[2])
        except ValueError:
            continue
        if far[1] in ports:
            outbound[r[9]] = (decode_address(r[1])[0], far[1])
    if not outbound:
        return {}
    found: dict[str, set[str]] = {}
    for other, what in _redis_processes(pid, proc).items():
        for inode in socket_inodes(other, proc) & outbound.keys():
            host, port = outbound[inode]
            found.setdefault(host, set()).add(CLUSTER_NODE if port in bus else what)
    return {host: ", ".join(sorted(kinds)) for host, kinds in sorted(found.items())}
