"""The probe's I/O: INFO, CONFIG GET maxclients and CLIENT LIST over a held connection, into a RawCapture,
and `take_snapshot` (capture, /proc facts, parse). The only probe module that needs redis-py."""

from __future__ import annotations

import time
from typing import Callable

import redis

from connguard.probe.build import RawCapture, build_snapshot
from connguard.probe.census import read_census
from connguard.probe.host import is_local_server, read_host_facts
from connguard.probe.info import parse_info
from connguard.probe.model import Snapshot
from connguard.probe.server_config import read_server_config
from connguard.target import HeldConnection

__all__ = ["capture", "take_snapshot"]


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


def take_snapshot(conn: HeldConnection, *, client_list: bool = True, census: bool = False) -> Snapshot:
    """One Snapshot over the held connection, plus /proc facts when the server runs on this host."""
    raw = capture(conn, client_list=client_list)
    info = parse_info(raw.info_all)
    host = None
    sockets = None
    if is_local_server(info.process_id, info.tcp_port):
        host = read_host_facts(info.process_id, peers=client_list, bus=bool(info.cluster_enabled))  # type: ignore[arg-type]
        if census and info.tcp_port:
            sockets = read_census(info.tcp_port)
    return build_snapshot(raw, host=host, census=sockets, own_client_id=conn.client_id, observer_connections=1)
