"""Churn and rejections: per-second rates of the INFO counters over a window of Snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from connguard.analysis.window import Window, interval_s
from connguard.probe.model import Snapshot


@dataclass(frozen=True)
class Rates:
    interval_s: float  # seconds the counters were measured over (restarts cut out)
    connections_received_per_s: float
    rejected_per_s: float
    used_delta: int
    connections_received: int  # counter deltas over the interval, the observer's own connects left out
    rejected: int
    snapshots: int = 2  # how many Snapshots the window held
    restarts: int = 0  # server restarts inside the window (their intervals are not counted)
    used_min: int | None = None  # lowest and highest `used_slots` at any Snapshot of the window (as capacity.used)
    used_max: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "interval_s": self.interval_s,
            "connections_received_per_s": self.connections_received_per_s,
            "rejected_per_s": self.rejected_per_s,
            "used_delta": self.used_delta,
            "connections_received": self.connections_received,
            "rejected": self.rejected,
            "snapshots": self.snapshots,
            "restarts": self.restarts,
            "used_min": self.used_min,
            "used_max": self.used_max,
        }


def window_rates(window: Window | Sequence[Snapshot]) -> Rates | None:
    """Counter deltas summed over every pair of consecutive Snapshots of the same server process, divided
    by the time they cover. None with one Snapshot, no pair within one process (a restart between the only
    two: the counters reset), or no time elapsed. Connections the observer itself opened (a reconnect after
    a kill) are taken out of `connections_received`, so watching never looks like churn."""
    w = window if isinstance(window, Window) else Window.of(window)
    pairs = w.pairs()
    interval = sum(interval_s(a, b) for a, b in pairs)
    if not pairs or interval <= 0:
        return None
    received = sum(max(0, (b.info.total_connections_received - a.info.total_connections_received)
                       - max(0, b.observer_connects - a.observer_connects)) for a, b in pairs)
    rejected = sum(b.info.rejected_connections - a.info.rejected_connections for a, b in pairs)
    used = w.used
    return Rates(
        interval_s=round(interval, 3),
        connections_received_per_s=round(received / interval, 2),
        rejected_per_s=round(rejected / interval, 2),
        used_delta=used[-1] - used[0],
        connections_received=received,
        rejected=rejected,
        snapshots=len(w),
        restarts=w.restarts,
        used_min=min(used),
        used_max=max(used),
    )


def rates(first: Snapshot, second: Snapshot | None) -> Rates | None:
    """The two-Snapshot form: `window_rates([first, second])`."""
    return None if second is None else window_rates((first, second))
