"""What "used" means: the one definition of the slots a server has given out, and the limit they run into.

Its own module, apart from the window (analysis/window.py), so that a one-line `status` reads it without importing
the window's forecast and classification."""

from __future__ import annotations

from connguard.probe.model import Snapshot, slots_used


def observer_slots(snapshot: Snapshot) -> int:
    """Connections connguard itself holds inside the server's counts (never more than it reports)."""
    return min(snapshot.observer_connections, snapshot.info.connected_clients)


def used_slots(snapshot: Snapshot) -> int:
    """THE definition of used: slots held by clients, replicas and cluster links, connguard's own left out."""
    info = snapshot.info
    return slots_used(info.connected_clients - observer_slots(snapshot), info.connected_slaves,
                      info.cluster_connections)


def slots_left(snapshot: Snapshot) -> int | None:
    """The limit `used_slots` runs into: maxclients less the slots connguard holds (the server counts them)."""
    return None if snapshot.maxclients is None else snapshot.maxclients - observer_slots(snapshot)
