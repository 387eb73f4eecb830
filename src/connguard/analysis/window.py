"""A window of Snapshots: in time order, cut at restarts, and who came and went across all of it.

Pure. Everything that compares Snapshots (rates, per-host growth, churn by client ID) reads a Window, so a
window of two is today's doctor and a window of a hundred is `watch`, with the same meaning.

`Window` is one frozen look (what the doctor's rules read); `LiveWindow` is the incremental one that `watch`
and the exporter feed every tick: bounded in time and count, it owns restart detection, per-tick rates, the
forecast's lifecycle and per-host growth, and hands the rules a `Window` of what it kept.

"Used" has one definition here, `used_slots`: the slots the server's clients hold, connguard's own
connection left out. The slot connguard holds is taken off the limit instead (`slots_left`), so the ratio,
the forecast and the doctor all say how much room the application has (docs/forecast.md)."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Sequence

from connguard.analysis.classify import NORMAL, client_records, kind_of
from connguard.analysis.forecast import Forecast, ForecastTracker
from connguard.analysis.slots import observer_slots, slots_left, used_slots  # noqa: F401 (the window's vocabulary)
from connguard.probe.model import ClientRecord, Snapshot
from connguard.settings import (
    FORECAST_WINDOW_S, NAMES_LISTED, WINDOW_MAX_POINTS, WINDOW_MAX_SNAPSHOTS, WINDOW_SPAN_S,
)

DEFAULT_SAMPLES = 2  # the classic doctor's window: two Snapshots an interval apart
GROWTH_WINDOW_S = 60.0  # a host's growth per minute is measured over about the last minute
MIN_GROWTH_SPAN_S = 5.0  # ... and never over less than this


def restarted(a: Snapshot, b: Snapshot) -> bool:
    """The server between two Snapshots is not the same process: counters, client IDs and ages started over."""
    x, y = a.info, b.info
    if x.process_id and y.process_id and x.process_id != y.process_id:
        return True
    if x.uptime_s is not None and y.uptime_s is not None and y.uptime_s + 1 < x.uptime_s:
        return True
    return y.total_connections_received < x.total_connections_received or y.rejected_connections < x.rejected_connections


def interval_s(a: Snapshot, b: Snapshot) -> float:
    """Seconds from `a` to `b`: on the monotonic clock when both were taken with it, else on wall time."""
    if a.monotonic is not None and b.monotonic is not None:
        return b.monotonic - a.monotonic
    return b.taken_at - a.taken_at


@dataclass(frozen=True)
class HostChurn:
    """One client host across a window, by client ID (an address can be reused; an ID never is)."""

    host: str
    first: int  # connections in the first listed Snapshot
    last: int  # connections in the last listed Snapshot
    opened: int  # IDs seen after the first listed Snapshot and not in it (short-lived ones included)
    closed: int  # IDs seen before the last listed Snapshot and not in it

    @property
    def growth(self) -> int:
        return self.last - self.first


@dataclass(frozen=True)
class Window:
    """Snapshots of one target, oldest first."""

    snapshots: tuple[Snapshot, ...]

    def __post_init__(self) -> None:
        if not self.snapshots:
            raise ValueError("a window needs at least one Snapshot")

    @classmethod
    def of(cls, snapshots: Sequence[Snapshot]) -> "Window":
        """In the order taken (the caller's order: a Sampler's ticks, a recording's lines)."""
        return cls(tuple(snapshots))

    @property
    def first(self) -> Snapshot:
        return self.snapshots[0]

    @property
    def now(self) -> Snapshot:
        return self.snapshots[-1]

    def __len__(self) -> int:
        return len(self.snapshots)

    @property
    def span_s(self) -> float:
        return interval_s(self.first, self.now)

    @cached_property
    def segments(self) -> tuple[tuple[Snapshot, ...], ...]:
        """Runs of Snapshots of one server process, split wherever it restarted."""
        runs: list[list[Snapshot]] = [[self.snapshots[0]]]
        for a, b in zip(self.snapshots, self.snapshots[1:]):
            if restarted(a, b):
                runs.append([])
            runs[-1].append(b)
        return tuple(tuple(r) for r in runs)

    @property
    def restarts(self) -> int:
        return len(self.segments) - 1

    @property
    def current(self) -> tuple[Snapshot, ...]:
        """The Snapshots since the last restart: the only ones whose client IDs compare with the latest."""
        return self.segments[-1]

    @cached_property
    def listed(self) -> tuple[Snapshot, ...]:
        """The current process's Snapshots that carry CLIENT LIST (INFO-only ticks have no per-client view)."""
        return tuple(s for s in self.current if s.clients is not None)

    @property
    def used(self) -> tuple[int, ...]:
        """`used_slots` at every Snapshot, oldest first."""
        return tuple(used_slots(s) for s in self.snapshots)

    def forecast(self, window_s: float = FORECAST_WINDOW_S) -> Forecast:
        """The forecast over this window's Snapshots, by the same ForecastTracker as watch and the exporter
        (a restart inside the window resets it, as live)."""
        tracker = ForecastTracker(window_s)
        fc = tracker.unobserved()
        for a, b in zip((None, *self.snapshots), self.snapshots):
            if a is not None and restarted(a, b):
                tracker.reset()
            fc = tracker.observe(b.clock, float(used_slots(b)), slots_left(b))
        return fc

    def pairs(self) -> list[tuple[Snapshot, Snapshot]]:
        """Consecutive Snapshots of the same process: the intervals counter deltas are valid over."""
        return [(a, b) for seg in self.segments for a, b in zip(seg, seg[1:])]

    @cached_property
    def churn(self) -> dict[str, HostChurn] | None:
        """Per host: connections at both ends and turnover by client ID over every listed Snapshot in
        between. None with fewer than two listed Snapshots of the current process (nothing to compare)."""
        listed = self.listed
        if len(listed) < 2:
            return None
        ids: list[dict[str, set[int]]] = []
        for snap in listed:
            by_host: dict[str, set[int]] = defaultdict(set)
            for rec in client_records(snap):
                by_host[rec.host].add(rec.id)
            ids.append(by_host)
        first, last = ids[0], ids[-1]
        hosts = set().union(*ids)
        out: dict[str, HostChurn] = {}
        for host in hosts:
            seen_after = set().union(*(m.get(host, set()) for m in ids[1:]))
            seen_before = set().union(*(m.get(host, set()) for m in ids[:-1]))
            begin, end = first.get(host, set()), last.get(host, set())
            out[host] = HostChurn(host, len(begin), len(end), len(seen_after - begin), len(seen_before - end))
        return out


# -- per-host grouping --------------------------------------------------------------------------------------
@dataclass
class HostGroup:
    """One client host in one CLIENT LIST."""

    connections: int = 0
    idle: int = 0  # plain connections idle over the threshold (the kind `kill` may touch)
    names: list[str] = field(default_factory=list)
    libs: list[str] = field(default_factory=list)


def group_by_host(records: Iterable[ClientRecord], idle_threshold_s: float) -> dict[str, HostGroup]:
    """Per client host: connections, plain connections idle over the threshold, a few names and libraries.
    One pass and no percentiles: this runs on every CLIENT LIST, which at 10k clients is 10k records."""
    groups: dict[str, HostGroup] = {}
    for r in records:
        g = groups.get(r.host)
        if g is None:
            g = groups[r.host] = HostGroup()
        g.connections += 1
        if r.idle_s >= idle_threshold_s and kind_of(r) == NORMAL:
            g.idle += 1
        if r.name and len(g.names) < NAMES_LISTED and r.name not in g.names:
            g.names.append(r.name)
        if r.lib_name and len(g.libs) < NAMES_LISTED:
            lib = r.lib
            if lib and lib not in g.libs:
                g.libs.append(lib)
    return groups


# -- the incremental window ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """What one observation added to a LiveWindow."""

    used: int
    limit: int | None  # slots_left
    restarted: bool  # the server is not the process of the previous observation
    rates: "TickRates | None"  # None on the first observation and across a restart
    forecast: Forecast


@dataclass(frozen=True)
class TickRates:
    interval_s: float
    new_per_s: float  # connections received per second, connguard's own (re)connects left out
    rejected_per_s: float


def tick_rates(a: Snapshot, b: Snapshot) -> TickRates | None:
    """The counters' rates between two Snapshots of one process; None across a restart or no elapsed time."""
    dt = interval_s(a, b)
    if dt <= 0 or restarted(a, b):
        return None
    ours = max(0, b.observer_connects - a.observer_connects)
    received = max(0, b.info.total_connections_received - a.info.total_connections_received - ours)
    rejected = max(0, b.info.rejected_connections - a.info.rejected_connections)
    return TickRates(round(dt, 3), round(received / dt, 2), round(rejected / dt, 2))


class LiveWindow:
    """The Snapshots of one target as they arrive, bounded: cheap per tick however long it runs.

    - full Snapshots (what the rules read) are thinned to at most `max_snapshots`, spread over `span_s`;
      a Snapshot with CLIENT LIST is never replaced by one without (churn needs the listed ones);
    - (time, used) points for the forecast are kept for the forecast window, at most `max_points`;
    - per-host connection counts are kept for about two growth windows."""

    def __init__(self, *, span_s: float = WINDOW_SPAN_S, max_snapshots: int = WINDOW_MAX_SNAPSHOTS,
                 forecast_window_s: float = FORECAST_WINDOW_S, max_points: int = WINDOW_MAX_POINTS) -> None:
        if max_snapshots < 2 or span_s <= 0:
            raise ValueError("a live window keeps at least 2 Snapshots over a positive span")
        self.span_s, self.max_snapshots = span_s, max_snapshots
        self.forecaster = ForecastTracker(forecast_window_s, max_points=max_points)
        self._kept: list[Snapshot] = []
        self._latest: Snapshot | None = None
        self._hosts: deque[tuple[float, dict[str, int]]] = deque()
        self.restarts = 0
        self.forecast: Forecast = self.forecaster.unobserved()

    @property
    def latest(self) -> Snapshot | None:
        return self._latest

    def push(self, snap: Snapshot) -> Step:
        """One observed Snapshot."""
        prev = self._latest
        was_restart = prev is not None and restarted(prev, snap)
        if was_restart:
            self.restarts += 1
            self.forecaster.reset()  # a new process: its usage starts over
            self._hosts.clear()
        rates = tick_rates(prev, snap) if prev is not None else None
        self._latest = snap
        self._keep(snap)
        used, limit = used_slots(snap), slots_left(snap)
        self.forecast = self.forecaster.observe(snap.clock, float(used), limit)
        return Step(used, limit, was_restart, rates, self.forecast)

    def unobserved(self) -> Forecast:
        """A tick that observed nothing: no forecast while the server cannot be seen."""
        self.forecast = self.forecaster.unobserved()
        return self.forecast

    def reset_forecast(self) -> None:
        """Usage changed by our own hand (a kill): the forecast starts over from here."""
        self.forecaster.reset()

    def _keep(self, snap: Snapshot) -> None:
        kept = self._kept
        spacing = self.span_s / (self.max_snapshots - 1)
        last = kept[-1] if kept else None
        if last is not None and len(kept) >= 2 and snap.clock - kept[-2].clock < spacing \
                and (snap.clients is not None or last.clients is None):
            kept[-1] = snap
        elif last is None or snap.clients is not None or last.clients is None or snap.clock - last.clock >= spacing:
            kept.append(snap)
        while len(kept) > 2 and (len(kept) > self.max_snapshots or snap.clock - kept[1].clock >= self.span_s):
            kept.pop(0)

    def window(self, *, listed_only: bool = False) -> Window | None:
        """The frozen Window of what is kept, ending with the latest Snapshot (or the latest with CLIENT LIST)."""
        snaps = list(self._kept)
        if self._latest is not None and (not snaps or snaps[-1] is not self._latest):
            snaps.append(self._latest)
        if listed_only:
            snaps = [s for s in snaps if s.clients is not None]
        return Window.of(snaps) if snaps else None

    def note_hosts(self, t: float, counts: dict[str, int]) -> None:
        """Per-host connections from a CLIENT LIST at monotonic `t` (for growth per minute)."""
        while self._hosts and t - self._hosts[0][0] > GROWTH_WINDOW_S * 2:
            self._hosts.popleft()
        self._hosts.append((t, counts))

    @property
    def previous_hosts(self) -> dict[str, int] | None:
        return self._hosts[-1][1] if self._hosts else None

    def host_growth_per_min(self, t: float, host: str, count: int) -> float | None:
        """Connections per minute from the oldest count within the growth window; None when too short."""
        for mono, counts in self._hosts:  # oldest first: the start of the growth window
            if t - mono <= GROWTH_WINDOW_S:
                if t - mono < MIN_GROWTH_SPAN_S:
                    return None
                return round((count - counts.get(host, 0)) / (t - mono) * 60.0, 1)
        return None
