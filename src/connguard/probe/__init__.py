"""The probe: the only layer that talks to a server or reads /proc. It turns a held connection into a Snapshot
(and, through `connguard.probe.sampler.Sampler`, a stream of Observations)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import redis

from connguard.probe.census import read_census
from connguard.probe.client_list import parse_client_list
from connguard.probe.host import is_local_server, read_host_facts
from connguard.probe.info import parse_info
from connguard.probe.model import ClientRecord, HostFacts, ServerConfig, ServerInfo, Snapshot, SocketCensus
from connguard.probe.server_config import read_server_config
from connguard.target import HeldConnection
from connguard.wire import CLIENT_NAME

__all__ = ["RawCapture", "Snapshot", "build_snapshot", "capture", "take_snapshot"]


@dataclass(frozen=True)
class RawCapture:
    """What the server said, verbatim, before any parsing: the unit saved to tests/testdata."""

    taken_at: float
    info_all: str
    config_maxclients: int | None
    client_list: str | None
    limitations: tuple[str, ...] = ()
    server_config: ServerConfig | None = None  # timeout, tcp-keepalive, cluster nodes (probe/server_config.py)


def _text(reply: object) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _denied(exc: redis.exceptions.ResponseError) -> str:
    return " ".join(str(exc).split())[:100]


def capture(conn: HeldConnection, *, client_list: bool = True, clock: Callable[[], float] = time.time) -> RawCapture:
    """INFO all, CONFIG GET maxclients and (once) CLIENT LIST, each allowed to be denied."""
    limitations: list[str] = []
    taken_at = clock()
    info_all = _text(conn.execute("INFO", "all"))
    config_maxclients: int | None = None
    try:
        reply = conn.execute("CONFIG", "GET", "maxclients")
        if isinstance(reply, (list, tuple)) and len(reply) >= 2:
            config_maxclients = int(reply[1])
        else:
            limitations.append("CONFIG GET maxclients returned nothing; maxclients is from INFO")
    except redis.exceptions.ResponseError as exc:
        limitations.append(f"CONFIG GET maxclients denied ({_denied(exc)}); maxclients is from INFO")
    server_config = read_server_config(conn, cluster="cluster_enabled:1" in info_all)
    listing: str | None = None
    if client_list:
        try:
            listing = _text(conn.execute("CLIENT", "LIST"))
        except redis.exceptions.ResponseError as exc:
            limitations.append(
                f"CLIENT LIST denied ({_denied(exc)}); no per-connection view: sources, idle times and names are unknown"
            )
    return RawCapture(taken_at, info_all, config_maxclients, listing, tuple(limitations), server_config)


def build_snapshot(
    raw: RawCapture,
    *,
    host: HostFacts | None = None,
    census: SocketCensus | None = None,
    own_client_id: int | None = None,
    observer_connections: int = 0,
    monotonic: float | None = None,
    observer_connects: int = 0,
) -> Snapshot:
    """Pure: parse a RawCapture (and optional host facts) into a Snapshot."""
    info: ServerInfo = parse_info(raw.info_all)
    if raw.config_maxclients is not None:
        maxclients, source = raw.config_maxclients, "config"
    elif info.maxclients is not None:
        maxclients, source = info.maxclients, "info"
    else:
        maxclients, source = None, "unknown"
    clients: tuple[ClientRecord, ...] | None = None
    if raw.client_list is not None:
        clients = parse_client_list(raw.client_list).records()
        if own_client_id is None and observer_connections:
            own_client_id = _find_own_client(clients)
    return Snapshot(
        taken_at=raw.taken_at,
        info=info,
        maxclients=maxclients,
        maxclients_source=source,
        clients=clients,
        own_client_id=own_client_id,
        host=host,
        census=census,
        limitations=raw.limitations,
        observer_connections=observer_connections,
        monotonic=monotonic,
        observer_connects=observer_connects,
        server_config=raw.server_config,
    )


def _find_own_client(clients: tuple[ClientRecord, ...]) -> int | None:
    """When an ACL denies CLIENT ID: ours is the connguard-named client whose last command was CLIENT LIST."""
    mine = [c.id for c in clients if c.name == CLIENT_NAME and c.cmd in ("client|list", "client")]  # 6.2 says "client"
    return mine[0] if len(mine) == 1 else None


def take_snapshot(conn: HeldConnection, *, client_list: bool = True, census: bool = False) -> Snapshot:
    """One Snapshot over the held connection, plus /proc facts when the server runs on this host."""
    raw = capture(conn, client_list=client_list)
    info = parse_info(raw.info_all)
    host = None
    sockets = None
    if is_local_server(info.process_id, info.tcp_port):
        host = read_host_facts(info.process_id)  # type: ignore[arg-type]
        if census and info.tcp_port:
            sockets = read_census(info.tcp_port)
    return build_snapshot(raw, host=host, census=sockets, own_client_id=conn.client_id, observer_connections=1)
