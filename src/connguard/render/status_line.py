"""`connguard status` output for one server: the connguard.status/1 object and the one line. Shared by `status`
and the fleet's status observer, and light on purpose (no rich, no analysis beyond capacity): `status` is the
check that runs every minute on every server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connguard.contract import STATUS_SCHEMA as SCHEMA  # the one home of schema names

if TYPE_CHECKING:
    from connguard.analysis.capacity import Capacity
    from connguard.probe.model import Snapshot
    from connguard.target import Target



def status_payload(target: Target, snap: Snapshot, cap: Capacity, status: str,
                   limitations: tuple[str, ...] = ()) -> dict:
    info = snap.info
    return {
        "schema": SCHEMA,
        "target": target.redacted,
        "status": status,
        "reachable": True,
        "error": None,
        "server": {"flavor": info.flavor, "version": info.version, "role": info.role},
        "used": cap.used,
        "maxclients": cap.maxclients,
        "maxclients_source": cap.maxclients_source,
        "ratio": cap.ratio,
        "headroom": cap.headroom,
        "connected_clients": cap.connected_clients,
        "connected_slaves": cap.connected_slaves,
        "cluster_connections": cap.cluster_connections,
        "blocked_clients": cap.blocked_clients,
        "rejected_connections": cap.rejected_connections,
        "fd_limit": cap.fd_limit,
        "limitations": list(dict.fromkeys(limitations + snap.limitations)),
    }


def status_line(target: Target, snap: Snapshot, cap: Capacity, status: str) -> str:
    info = snap.info
    ratio = f"{cap.ratio:.0%}" if cap.ratio is not None else "?"
    return (
        f"{status.upper()}: {target.redacted} {info.flavor} {info.version} — "
        f"{cap.used}/{cap.maxclients if cap.maxclients is not None else '?'} connections ({ratio}, "
        f"headroom {cap.headroom if cap.headroom is not None else '?'}; "
        f"{cap.connected_slaves} replicas, {cap.cluster_connections} cluster-bus), "
        f"{cap.blocked_clients} blocked, {cap.rejected_connections} rejected since start"
    )
