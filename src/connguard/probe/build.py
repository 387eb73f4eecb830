"""From what the server said to a Snapshot: `RawCapture` (the replies verbatim) and `build_snapshot` (parsing).

Pure: no redis-py, so the analysis, recordings and replays import it without a driver."""

from __future__ import annotations

from dataclasses import dataclass

from connguard.probe.client_list import parse_client_list
from connguard.probe.info import parse_info
from connguard.probe.model import ClientRecord, HostFacts, ServerConfig, ServerInfo, Snapshot, SocketCensus
from connguard.wire import CLIENT_NAME

__all__ = ["RawCapture", "build_snapshot"]


@dataclass(frozen=True)
class RawCapture:
    """What the server said, verbatim, before any parsing: the unit saved to tests/testdata."""

    taken_at: float
    info_all: str
    config_maxclients: int | None
    client_list: str | None
    limitations: tuple[str, ...] = ()
    server_config: ServerConfig | None = None  # timeout, tcp-keepalive, cluster nodes (probe/server_config.py)


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
