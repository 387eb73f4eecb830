"""Snapshot <-> JSON-ready dicts, for golden files under tests/testdata and for saved probes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from connguard.contract import SNAPSHOT_SCHEMA
from connguard.probe.model import ClientRecord, HostFacts, ServerInfo, Snapshot, SocketCensus

if TYPE_CHECKING:  # the probe package imports its submodules; import RawCapture lazily at run time
    from connguard.probe.build import RawCapture

SCHEMA = SNAPSHOT_SCHEMA
_INFO_TYPED = tuple(f for f in ServerInfo.__dataclass_fields__ if f != "sections")


def client_to_dict(rec: ClientRecord) -> dict[str, Any]:
    out = rec._asdict()
    out["extra"] = dict(rec.extra)
    return out


def client_from_dict(data: Mapping[str, Any]) -> ClientRecord:
    fields = dict(data)
    fields["extra"] = dict(fields.get("extra") or {})
    return ClientRecord(**fields)


def _peers(peers: frozenset[tuple[str, int]]) -> list[list[object]]:
    return [[ip, port] for ip, port in sorted(peers)]


def census_to_dict(census: SocketCensus | None) -> dict[str, Any] | None:
    """Every field of a SocketCensus, peers sorted so that equal censuses write equal JSON."""
    if census is None:
        return None
    return {"port": census.port, "by_host": dict(census.by_host), "peers": _peers(census.peers),
            "unaccepted": census.unaccepted, "time_wait_peers": _peers(census.time_wait_peers),
            "taken_at": census.taken_at}


def census_from_dict(data: Mapping[str, Any] | None) -> SocketCensus | None:
    if data is None:
        return None
    return SocketCensus(
        port=data["port"], by_host=dict(data["by_host"]),
        peers=frozenset((ip, int(port)) for ip, port in data.get("peers", ())),
        unaccepted=data.get("unaccepted", 0),
        time_wait_peers=frozenset((ip, int(port)) for ip, port in data.get("time_wait_peers", ())),
        taken_at=data.get("taken_at"),
    )


def snapshot_to_dict(snap: Snapshot) -> dict[str, Any]:
    """Everything in a Snapshot, typed INFO fields first, then every INFO section verbatim."""
    info = snap.info
    return {
        "schema": SCHEMA,
        "taken_at": snap.taken_at,
        "maxclients": snap.maxclients,
        "maxclients_source": snap.maxclients_source,
        "own_client_id": snap.own_client_id,
        "limitations": list(snap.limitations),
        "host": None if snap.host is None else vars(snap.host).copy(),
        "census": census_to_dict(snap.census),
        "observer_connections": snap.observer_connections,
        "monotonic": snap.monotonic,
        "observer_connects": snap.observer_connects,
        "info": {f: getattr(info, f) for f in _INFO_TYPED},
        "info_sections": {name: dict(fields) for name, fields in info.sections.items()},
        "clients": None if snap.clients is None else [client_to_dict(c) for c in snap.clients],
    }


def snapshot_from_dict(data: Mapping[str, Any]) -> Snapshot:
    if data.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} document (schema={data.get('schema')!r})")
    sections = {name: dict(fields) for name, fields in data["info_sections"].items()}
    info = ServerInfo(**data["info"], sections=sections)
    clients = data.get("clients")
    census = data.get("census")
    return Snapshot(
        taken_at=data["taken_at"],
        info=info,
        maxclients=data["maxclients"],
        maxclients_source=data["maxclients_source"],
        clients=None if clients is None else tuple(client_from_dict(c) for c in clients),
        own_client_id=data.get("own_client_id"),
        host=None if data.get("host") is None else HostFacts(**data["host"]),
        census=census_from_dict(census),
        limitations=tuple(data.get("limitations") or ()),
        observer_connections=data.get("observer_connections", 0),
        monotonic=data.get("monotonic"),
        observer_connects=data.get("observer_connects", 0),
    )


def dump_snapshot(snap: Snapshot, path: str | Path) -> None:
    Path(path).write_text(json.dumps(snapshot_to_dict(snap), indent=1) + "\n")


def load_snapshot(path: str | Path) -> Snapshot:
    return snapshot_from_dict(json.loads(Path(path).read_text()))


# -- raw captures on disk: tests/testdata/<label>/{info_all,client_list,config_maxclients}.txt ----------
INFO_FILE, CLIENT_LIST_FILE, CONFIG_FILE, SNAPSHOT_FILE = (
    "info_all.txt", "client_list.txt", "config_maxclients.txt", "snapshot.json")


def write_raw_capture(raw: RawCapture, folder: str | Path) -> None:
    """Write what the server said verbatim; a denied CONFIG GET is written as `denied`, a denied CLIENT LIST as no file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INFO_FILE).write_text(raw.info_all)
    config = "denied" if raw.config_maxclients is None else str(raw.config_maxclients)
    (folder / CONFIG_FILE).write_text(config + "\n")
    if raw.client_list is not None:
        (folder / CLIENT_LIST_FILE).write_text(raw.client_list)


def read_raw_capture(folder: str | Path, *, taken_at: float = 0.0, limitations: tuple[str, ...] = ()) -> RawCapture:
    """The RawCapture saved by write_raw_capture (clock and limitations come from the caller)."""
    from connguard.probe.build import RawCapture

    folder = Path(folder)
    config_path = folder / CONFIG_FILE
    config_text = config_path.read_text().strip() if config_path.exists() else "denied"
    listing = folder / CLIENT_LIST_FILE
    return RawCapture(
        taken_at=taken_at,
        info_all=(folder / INFO_FILE).read_bytes().decode("utf-8", "replace"),  # verbatim, CRLF kept
        config_maxclients=int(config_text) if config_text.isdigit() else None,
        client_list=listing.read_bytes().decode("utf-8", "replace") if listing.exists() else None,
        limitations=tuple(limitations),
    )
