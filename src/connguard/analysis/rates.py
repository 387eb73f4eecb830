"""Churn and rejections: per-second rates of the INFO counters between two Snapshots."""

from __future__ import annotations

from dataclasses import dataclass

from connguard.probe.model import Snapshot


@dataclass(frozen=True)
class Rates:
    interval_s: float
    connections_received_per_s: float
    rejected_per_s: float
    used_delta: int
    connections_received: int  # counter deltas over the interval
    rejected: int

    def to_dict(self) -> dict[str, object]:
        return {
            "interval_s": self.interval_s,
            "connections_received_per_s": self.connections_received_per_s,
            "rejected_per_s": self.rejected_per_s,
            "used_delta": self.used_delta,
            "connections_received": self.connections_received,
            "rejected": self.rejected,
        }


def rates(first: Snapshot, second: Snapshot | None) -> Rates | None:
    """None with one Snapshot, a non-positive interval, or a restart between the two (counters reset)."""
    if second is None:
        return None
    interval = second.taken_at - first.taken_at
    a, b = first.info, second.info
    restarted = (a.process_id and b.process_id and a.process_id != b.process_id) or (
        b.total_connections_received < a.total_connections_received or b.rejected_connections < a.rejected_connections
    )
    if interval <= 0 or restarted:
        return None
    received = b.total_connections_received - a.total_connections_received
    rejected = b.rejected_connections - a.rejected_connections
    return Rates(
        interval_s=round(interval, 3),
        connections_received_per_s=round(received / interval, 2),
        rejected_per_s=round(rejected / interval, 2),
        used_delta=b.used - a.used,
        connections_received=received,
        rejected=rejected,
    )
