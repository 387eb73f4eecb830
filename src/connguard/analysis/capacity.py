"""Capacity: true usage against maxclients, the ratio, headroom and the status it implies."""

from __future__ import annotations

from dataclasses import dataclass

from connguard.analysis.slots import observer_slots, used_slots
from connguard.probe.model import Snapshot

WARNING_RATIO = 0.8  # the runbook's alert line
CRITICAL_RATIO = 0.9  # the runbook's danger zone
RESERVED_FDS = 32  # Redis keeps 32 descriptors for itself beyond maxclients (docs/redis-facts.md)


@dataclass(frozen=True)
class Thresholds:
    warning: float = WARNING_RATIO
    critical: float = CRITICAL_RATIO

    def __post_init__(self) -> None:
        if not (0 < self.warning <= self.critical <= 1.0):
            raise ValueError(
                f"thresholds must satisfy 0 < warning <= critical <= 1 (got warning={self.warning}, critical={self.critical})"
            )

    def status(self, ratio: float | None) -> str:
        """The one ratio -> status mapping: ok | warning | critical, unknown without a ratio."""
        if ratio is None:
            return "unknown"
        if ratio >= self.critical:
            return "critical"
        if ratio >= self.warning:
            return "warning"
        return "ok"


@dataclass(frozen=True)
class Capacity:
    maxclients: int | None
    connected_clients: int
    connected_slaves: int
    cluster_connections: int
    blocked_clients: int
    used: int
    ratio: float | None
    headroom: int | None
    fd_limit: int | None
    maxclients_source: str
    rejected_connections: int
    observer_connections: int = 0

    def status(self, thresholds: Thresholds = Thresholds()) -> str:
        return thresholds.status(self.ratio)


def capacity(snapshot: Snapshot) -> Capacity:
    """Usage as the server would count it without connguard's own probe connection (`used_slots`)."""
    info = snapshot.info
    observer = observer_slots(snapshot)
    connected_clients = info.connected_clients - observer
    used = used_slots(snapshot)
    maxclients = snapshot.maxclients
    ratio = round(used / maxclients, 4) if maxclients else None
    return Capacity(
        maxclients=maxclients,
        connected_clients=connected_clients,
        connected_slaves=info.connected_slaves,
        cluster_connections=info.cluster_connections,
        blocked_clients=info.blocked_clients,
        used=used,
        ratio=ratio,
        headroom=(maxclients - used) if maxclients is not None else None,
        fd_limit=snapshot.host.fd_limit_soft if snapshot.host else None,
        maxclients_source=snapshot.maxclients_source,
        rejected_connections=info.rejected_connections,
        observer_connections=observer,
    )
