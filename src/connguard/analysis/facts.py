"""What every rule reads: the window of Snapshots plus capacity, classes, sources and rates, computed once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from connguard.analysis.capacity import Capacity, Thresholds
from connguard.analysis.classify import ConnectionClasses
from connguard.analysis.shell import Commands
from connguard.analysis.findings import DoctorSettings
from connguard.analysis.rates import Rates
from connguard.analysis.sources import Source, SourceTable
from connguard.probe.model import Snapshot
from connguard.target_url import Target

PINNED_HEADROOM = 2  # slots: at or below this the server is pinned at its limit


@dataclass(frozen=True)
class Facts:
    settings: DoctorSettings
    target: Target
    window: tuple[Snapshot, ...]  # oldest first; a window of two is the classic doctor
    capacity: Capacity
    classes: ConnectionClasses
    sources: SourceTable | None
    rates: Rates | None
    cmd: Commands
    refused_us: int = 0  # connection attempts the server refused before it let the doctor in

    @property
    def first(self) -> Snapshot:
        """The oldest Snapshot of the window."""
        return self.window[0]

    @property
    def now(self) -> Snapshot:
        """The latest Snapshot (the second, or the only one)."""
        return self.window[-1]

    @property
    def maxclients(self) -> int | None:
        return self.capacity.maxclients

    @property
    def ratio(self) -> float:
        return self.capacity.ratio or 0.0

    @property
    def used(self) -> int:
        return self.capacity.used

    @property
    def server_used(self) -> int:
        """Slots as the server counts them at admission, this doctor's own connection included."""
        return self.now.info.used

    @property
    def full(self) -> bool:
        """No slot left for a new connection: the server counts ours too, even where capacity leaves it out."""
        return self.maxclients is not None and self.server_used >= self.maxclients

    def pinned(self, snap: Snapshot | None = None) -> bool:
        snap = snap or self.now
        if snap.maxclients is None:
            return False
        return snap.maxclients - snap.used <= max(PINNED_HEADROOM, int(0.02 * snap.maxclients))

    @property
    def fd_limit(self) -> int | None:
        return self.now.host.fd_limit_soft if self.now.host else None

    @property
    def idle_threshold(self) -> int:
        return max(1, int(round(self.settings.idle_threshold_s)))

    @cached_property
    def app_sources(self) -> tuple[Source, ...]:
        """Sources holding application connections (plain, blocked or pub/sub), not only internal links."""
        if self.sources is None:
            return ()
        return tuple(s for s in self.sources.all if s.normal + s.blocked + s.pubsub > 0)

    def ratio_severity(self, floor: str = "info") -> str:
        if self.full:
            return "critical"
        status = Thresholds(self.settings.warning_ratio, self.settings.critical_ratio).status(self.ratio)
        return status if status in ("warning", "critical") else floor
