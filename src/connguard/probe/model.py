"""Typed records that flow from the probe to the analysis: Snapshot and its parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, NamedTuple

# CLIENT LIST flag letters (docs/redis-facts.md). Valkey adds I, i, E for import/slot-migration clients.
FLAG_NAMES: Mapping[str, str] = {
    "N": "none",
    "S": "replica",
    "M": "primary",
    "P": "pubsub",
    "O": "monitor",
    "x": "multi",
    "b": "blocked",
    "t": "tracking",
    "U": "unix_socket",
    "r": "readonly",
    "e": "no_evict",
    "T": "no_touch",
    "I": "import_source",
    "i": "slot_migration_source",
    "E": "slot_migration_target",
    "c": "close_after_reply",
    "d": "dirty_cas",
    "u": "unblocked",
    "A": "close_asap",
    "R": "tracking_redirect_broken",
}


def decode_flags(flags: str) -> tuple[str, ...]:
    """Spell out CLIENT LIST flag letters; unknown letters are kept as `flag:<letter>`."""
    return tuple(FLAG_NAMES.get(ch, f"flag:{ch}") for ch in flags)


_NO_EXTRA: Mapping[str, str] = MappingProxyType({})


def slots_used(connected_clients: int, connected_slaves: int, cluster_connections: int) -> int:
    """The one definition of usage against maxclients: INFO's connected_clients leaves out replicas, and
    the cluster bus takes slots too (docs/redis-facts.md), so a server can refuse below connected_clients."""
    return connected_clients + connected_slaves + cluster_connections


def used_of(info: Mapping[str, object]) -> int:
    """`slots_used` of an INFO mapping (redis-py's `info()` dict, or one INFO section's fields)."""
    return slots_used(*(int(info.get(f, 0) or 0) for f in  # type: ignore[call-overload]
                        ("connected_clients", "connected_slaves", "cluster_connections")))


def _int_field(extra: Mapping[str, str], key: str) -> int:
    try:
        return max(0, int(extra.get(key) or 0))
    except ValueError:
        return 0


class ClientRecord(NamedTuple):
    """One line of CLIENT LIST, typed. Fields a server version lacks are None; unknown ones go to `extra`.

    A NamedTuple rather than a frozen dataclass: immutable and built with keywords alike, but the
    parser can make 50,000 of them with one C-level `tuple.__new__` each (about 10x faster).
    Use `record._replace(...)` where a dataclass would use `dataclasses.replace`."""

    id: int
    addr: str
    fd: int
    name: str
    age_s: int
    idle_s: int
    flags: str
    db: int
    cmd: str
    sub: int = 0
    psub: int = 0
    ssub: int | None = None
    multi: int = -1
    laddr: str | None = None
    user: str | None = None
    resp: int | None = None
    lib_name: str | None = None
    lib_ver: str | None = None
    extra: Mapping[str, str] = _NO_EXTRA

    @property
    def is_unix(self) -> bool:
        return "U" in self.flags or self.addr.startswith("/") or self.addr.startswith("unix:")

    @property
    def host(self) -> str:
        """The client host: the IP of `addr` (IPv6 brackets kept off), or `unix` for a socket client."""
        if self.is_unix:
            return "unix"
        ip, _, _port = self.addr.rpartition(":")
        return ip.strip("[]") or self.addr

    @property
    def is_replica(self) -> bool:
        return "S" in self.flags

    @property
    def is_primary_link(self) -> bool:
        return "M" in self.flags

    @property
    def is_pubsub(self) -> bool:
        return "P" in self.flags or self.sub > 0 or self.psub > 0 or bool(self.ssub)

    @property
    def is_monitor(self) -> bool:
        return "O" in self.flags

    @property
    def is_blocked(self) -> bool:
        return "b" in self.flags

    @property
    def is_sentinel(self) -> bool:
        # Sentinel names its links sentinel-<id8>-cmd and sentinel-<id8>-pubsub.
        return self.name.startswith("sentinel-") and (
            self.name.endswith("-cmd") or self.name.endswith("-pubsub")
        )

    @property
    def flag_names(self) -> tuple[str, ...]:
        return decode_flags(self.flags)

    @property
    def output_buffer(self) -> int:
        """`omem`: bytes queued in the reply list for this client (0 where the server does not say)."""
        return _int_field(self.extra, "omem")

    @property
    def total_memory(self) -> int:
        """`tot-mem`: everything the client costs the server (buffers, query buffer, struct)."""
        return _int_field(self.extra, "tot-mem")

    @property
    def lib(self) -> str | None:
        if not self.lib_name:
            return None
        return f"{self.lib_name} {self.lib_ver}".strip() if self.lib_ver else self.lib_name


@dataclass(frozen=True)
class ServerInfo:
    """The INFO fields connguard relies on, typed; every section is also kept whole in `sections`."""

    flavor: str  # "redis" or "valkey"
    version: str
    role: str
    process_id: int | None
    tcp_port: int | None
    uptime_s: int | None
    cluster_enabled: bool
    connected_clients: int
    connected_slaves: int
    cluster_connections: int
    blocked_clients: int
    maxclients: int | None  # INFO has it from 6.2 on
    total_connections_received: int
    rejected_connections: int
    pubsub_clients: int | None
    executable: str | None
    config_file: str | None
    sections: Mapping[str, Mapping[str, str]]

    @property
    def used(self) -> int:
        """True usage against maxclients: replicas and cluster-bus slots count too."""
        return slots_used(self.connected_clients, self.connected_slaves, self.cluster_connections)


@dataclass(frozen=True)
class HostFacts:
    """What /proc says about the server process, when it runs on this machine."""

    pid: int
    fd_limit_soft: int | None
    fd_limit_hard: int | None
    open_fds: int | None
    # Tcp PassiveOpens from /proc/net/snmp and when it was read (monotonic): connections this host's kernel
    # accepted, refused ones included. Per network namespace, not per server.
    passive_opens: int | None = None
    passive_opens_at: float | None = None
    # Client hosts whose connections to this server belong to Redis processes on this host (a replica, a
    # Sentinel, a cluster node): {host: what}. Read from /proc, so seen even when the server refuses us.
    internal_peers: Mapping[str, str] = field(default_factory=dict)
    cluster_bus_links_in: int | None = None  # links into its cluster-bus port: known nodes - 1 (cluster mode)


Peer = tuple[str, int]  # a client's (ip, port): one connection's identity while it lives


@dataclass(frozen=True)
class SocketCensus:
    """Established TCP connections to the server's port, by remote host, read from /proc/net/tcp{,6}.

    The fields after `by_host` let two censuses be compared (who came, who went): `peers` are the
    established connections' client ends; `unaccepted` of them still wait in the accept queue (no slot
    yet); `time_wait_peers` are the client ends of connections on the port closed cleanly in the last
    ~60 s (TIME_WAIT stays with the side that closed first: the server's for kills and timeouts, the
    client's, when it runs on this host, for a client that hung up)."""

    port: int
    by_host: Mapping[str, int]
    peers: frozenset[Peer] = frozenset()
    unaccepted: int = 0
    time_wait_peers: frozenset[Peer] = frozenset()
    taken_at: float | None = None  # monotonic seconds, for the window between two censuses

    @property
    def total(self) -> int:
        return sum(self.by_host.values())

    @property
    def accepted(self) -> int:
        """Established connections the server has accepted: each holds a client slot."""
        return max(0, self.total - self.unaccepted)

    @property
    def time_wait(self) -> int:
        return len(self.time_wait_peers)


@dataclass(frozen=True)
class ServerConfig:
    """Settings the advice must not weaken, as CONFIG GET gave them (None: denied or not reported), and the
    cluster's other nodes as CLUSTER NODES names them (host: role)."""

    timeout_s: int | None = None
    tcp_keepalive_s: int | None = None
    cluster_nodes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """Everything one probe saw at one moment. Analysis reads only this."""

    taken_at: float  # wall-clock seconds (time.time()): for display only
    info: ServerInfo
    maxclients: int | None
    maxclients_source: str  # "config" | "info" | "unknown"
    clients: tuple[ClientRecord, ...] | None  # None when CLIENT LIST was denied
    own_client_id: int | None = None
    host: HostFacts | None = None
    census: SocketCensus | None = None
    limitations: tuple[str, ...] = ()  # what could not be seen, in words
    # Connections the observer itself holds inside these counts (1 for a live probe), so that
    # capacity reports the server as it is without connguard looking.
    observer_connections: int = 0
    # time.monotonic() at the sample, for intervals (None in Snapshots saved before it existed): wall
    # time can step (NTP, a VM resume) and would bend every rate.
    monotonic: float | None = None
    # Connections the observer has opened so far (cumulative): subtracted from total_connections_received
    # so the observer's own reconnects are never counted as churn.
    observer_connects: int = 0
    server_config: ServerConfig | None = None  # CONFIG GET timeout, tcp-keepalive; CLUSTER NODES (where allowed)

    @property
    def used(self) -> int:
        return self.info.used

    @property
    def clock(self) -> float:
        """The time to measure intervals with: monotonic when the probe recorded it, else wall time."""
        return self.taken_at if self.monotonic is None else self.monotonic
