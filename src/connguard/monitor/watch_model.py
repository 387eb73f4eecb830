"""What `watch` knows: observations folded into a frozen WatchFrame per tick (rates, forecast, sources, alerts).

No I/O and no clock of its own: every time comes from the Observation. The runner feeds it; the screen,
the NDJSON line and the demo snapshot all render the same WatchFrame."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from connguard.analysis.alerts import Alert, AlertEvent, AlertSettings, AlertState, SourceTrend, Tick, active_alerts, step
from connguard.analysis.capacity import capacity
from connguard.analysis.forecast import Forecast, forecast
from connguard.analysis.classify import NORMAL, client_records, kind_of
from connguard.analysis.sources import MAX_LISTED, host_key
from connguard.monitor.watch_budget import BudgetView, ClientListBudget
from connguard.probe.model import ClientRecord, Snapshot, SocketCensus

SCHEMA = "connguard.watch/1"
HISTORY = 120  # ticks kept for the sparklines (4 minutes at the default 2 s)
GROWTH_WINDOW_S = 60.0  # a source's growth per minute is measured over about the last minute
MIN_GROWTH_SPAN_S = 5.0  # ... and never over less than this
CHANGED_MARKS = 3  # sources marked as changed most since the last CLIENT LIST


@dataclass(frozen=True)
class SourceRow:
    host: str
    connections: int
    idle_over_threshold: int | None  # None when from the socket census
    growth_per_min: float | None
    names: tuple[str, ...] = ()
    libs: tuple[str, ...] = ()
    delta: int = 0  # change since the previous CLIENT LIST
    changed: bool = False  # among the sources that changed most


@dataclass(frozen=True)
class Point:
    """One tick of the sparklines; None where unknown. `gap` marks a restart (counters reset) before it."""

    wall: float
    used: int | None
    rejected_per_s: float | None
    new_per_s: float | None
    blocked: int | None
    gap: bool = False


@dataclass(frozen=True)
class WatchFrame:
    target: str
    wall: float
    monotonic: float
    reachable: bool
    refused: bool
    refusing_since: float | None
    failure: str | None  # the error line when not observed
    used: int | None
    maxclients: int | None
    ratio: float | None
    headroom: int | None
    rejected_per_s: float | None
    new_per_s: float | None  # connections_received_per_s, our own connects excluded
    blocked: int | None
    forecast: Forecast
    alerts: tuple[Alert, ...]
    events: tuple[AlertEvent, ...]
    causes: tuple[str, ...] | None  # the doctor's causes when it ran this tick, else None
    last_causes: tuple[str, ...] | None  # the latest verdict, for the screen
    last_diagnosis_wall: float | None
    sources: tuple[SourceRow, ...]
    sources_from: str | None  # client_list | census | None
    sources_wall: float | None  # when the sources table was taken
    history: tuple[Point, ...]
    restarts: tuple[float, ...]  # wall times of restarts seen
    budget: BudgetView
    server: str | None  # "redis 7.0.15"
    kills: tuple[str, ...] = ()
    used_from_census: bool = False
    sources_left_out: tuple[int, int] = (0, 0)  # (sources, their connections) below the top rows shown

    def to_json(self) -> dict[str, object]:
        """One `connguard.watch/1` line (docs/watch.md)."""
        return {
            "schema": SCHEMA,
            "ts": round(self.wall, 3),
            "target": self.target,
            "reachable": self.reachable,
            "used": self.used,
            "maxclients": self.maxclients,
            "ratio": self.ratio,
            "headroom": self.headroom,
            "rejected_per_s": self.rejected_per_s,
            "connections_received_per_s": self.new_per_s,
            "blocked": self.blocked,
            "forecast": self.forecast.to_dict(),
            "alerts": [a.to_dict() for a in self.alerts],
            "causes": None if self.causes is None else list(self.causes),
        }


@dataclass(frozen=True)
class WatchSettings:
    interval_s: float = 2.0
    idle_threshold_s: float = 300.0
    forecast_alert_s: float = 900.0
    forecast_window_s: float = 600.0
    diagnose_every_s: float = 10.0
    clients_every_s: float | None = None  # None: adaptive (<= 1% of server time)
    top: int = 10

    def alert_settings(self) -> AlertSettings:
        return AlertSettings(idle_threshold_s=self.idle_threshold_s, forecast_alert_s=self.forecast_alert_s)


@dataclass
class _Counters:
    mono: float
    received: int
    rejected: int
    observer_connects: int
    process_id: int | None
    uptime_s: int | None


def restarted(before: _Counters, info_pid: int | None, received: int, rejected: int, uptime: int | None) -> bool:
    """A different process, counters that went backwards, or an uptime that did."""
    if before.process_id and info_pid and before.process_id != info_pid:
        return True
    if received < before.received or rejected < before.rejected:
        return True
    return before.uptime_s is not None and uptime is not None and uptime < before.uptime_s


Diagnoser = Callable[[Snapshot | None, Snapshot, float], "tuple[str, ...]"]


@dataclass
class WatchModel:
    """Folds Observations into WatchFrames. Mutable inside, frozen at its edges (each frame is a value)."""

    target: str
    settings: WatchSettings = WatchSettings()
    diagnoser: Diagnoser | None = None  # (previous diagnosed snapshot, now, wall) -> cause names
    census_diagnoser: Callable | None = None  # (previous census, census, error line, host facts) -> causes
    budget: ClientListBudget = field(init=False)
    history: collections.deque = field(init=False)
    alert_state: AlertState = field(default_factory=AlertState)

    def __post_init__(self) -> None:
        self.budget = ClientListBudget(self.settings.interval_s, fixed_every_s=self.settings.clients_every_s)
        self.history = collections.deque(maxlen=HISTORY)
        self.points: list[tuple[float, float]] = []  # (monotonic, used) for the forecast, since the last break
        self.counters: _Counters | None = None
        self.sources: tuple[SourceRow, ...] = ()
        self.sources_left_out: tuple[int, int] = (0, 0)
        self.sources_from: str | None = None
        self.sources_wall: float | None = None
        self.source_history: collections.deque = collections.deque()  # (mono, {host: connections})
        self.restarts: list[float] = []
        self.refusing_since: float | None = None
        self.last_causes: tuple[str, ...] | None = None
        self.last_diag_mono: float | None = None
        self.last_diag_wall: float | None = None
        self.diag_base: Snapshot | None = None
        self.diag_census: SocketCensus | None = None
        self.last_snapshot: Snapshot | None = None  # with CLIENT LIST, for kill previews
        self.maxclients: int | None = None
        self.server: str | None = None
        self.kills: collections.deque = collections.deque(maxlen=5)
        self._pending_gap = False

    # -- what the runner asks ---------------------------------------------------------------------------
    def wants_client_list(self, now_mono: float) -> bool:
        return self.budget.due(now_mono)

    def note_kill(self, line: str) -> None:
        """A kill changes usage by our hand: the forecast restarts from here, not from a fitted cliff."""
        self.kills.append(line)
        self.points.clear()

    # -- one tick -----------------------------------------------------------------------------------------
    def update(self, obs) -> WatchFrame:  # obs: connguard.probe.sampler.Observation
        snap = obs.snapshot
        if snap is not None:
            return self._observed(obs, snap)
        return self._unobserved(obs)

    def _observed(self, obs, snap: Snapshot) -> WatchFrame:
        info = snap.info
        self.refusing_since = None
        self.server = f"{info.flavor} {info.version}"
        self.budget.note(obs.monotonic, info.sections, obs.client_list_included)
        cap = capacity(snap)
        self.maxclients = cap.maxclients
        rejected_per_s = new_per_s = None
        gap = self._pending_gap
        c = self.counters
        received, rejected = info.total_connections_received, info.rejected_connections
        if c is not None and restarted(c, info.process_id, received, rejected, info.uptime_s):
            gap = True  # counters reset: no rate across the restart, and the forecast starts over
            self.restarts.append(obs.wall)
            self.points.clear()
            self.source_history.clear()
            self.diag_base = None
        elif c is not None and obs.monotonic > c.mono:
            dt = obs.monotonic - c.mono
            ours = max(0, obs.observer_connects - c.observer_connects)
            new_per_s = round(max(0, received - c.received - ours) / dt, 2)
            rejected_per_s = round(max(0, rejected - c.rejected) / dt, 2)
        self._pending_gap = False
        self.counters = _Counters(obs.monotonic, received, rejected, obs.observer_connects, info.process_id,
                                  info.uptime_s)
        self.points.append((obs.monotonic, float(cap.used)))
        self._trim_points(obs.monotonic)
        # The server counts our held slot too: it refuses others once used + ours reaches maxclients.
        limit = None if cap.maxclients is None else cap.maxclients - cap.observer_connections
        fc = forecast(self.points, limit, window_s=self.settings.forecast_window_s)
        trends = None
        if snap.clients is not None and obs.client_list_included:
            trends = self._client_list_sources(obs, snap)
        elif obs.census is not None and self.sources_from != "client_list":
            self._census_sources(obs.census, obs.wall)
        causes = self._maybe_diagnose(obs, snap)
        point = Point(obs.wall, cap.used, rejected_per_s, new_per_s, cap.blocked_clients, gap)
        tick = Tick(obs.wall, cap.ratio, rejected_per_s, new_per_s, cap.blocked_clients, trends, fc)
        return self._frame(obs, tick, point, fc, causes, reachable=True, refused=False, failure=None,
                           used=cap.used, maxclients=cap.maxclients, ratio=cap.ratio, headroom=cap.headroom)

    def _unobserved(self, obs) -> WatchFrame:
        self.budget.note(obs.monotonic, None, False)
        if obs.refused and self.refusing_since is None:
            self.refusing_since = obs.wall
        if not obs.refused:
            self._pending_gap = True  # unreachable: maybe a restart; the next INFO tells
        used = ratio = headroom = None
        from_census = False
        if obs.census is not None:
            self._census_sources(obs.census, obs.wall)
            used, from_census = obs.census.accepted, True
        maxclients = self.maxclients
        if used is None and obs.refused and maxclients:
            used = maxclients  # refused for maxclients: full is what the server just told us
        if used is not None and maxclients:
            ratio, headroom = round(used / maxclients, 4), maxclients - used
        if obs.refused:
            fc = Forecast(0.0, 0.0, len(self.points), "high", reason="full now")
        else:
            fc = Forecast(None, 0.0, 0, "none", reason="not observed")
        causes = self._maybe_diagnose_refused(obs)
        point = Point(obs.wall, used, None, None, None, False)
        tick = Tick(obs.wall, ratio, None, None, None, None, fc)
        failure = obs.failure.line() if obs.failure is not None else None
        return self._frame(obs, tick, point, fc, causes, reachable=False, refused=obs.refused, failure=failure,
                           used=used, maxclients=maxclients, ratio=ratio, headroom=headroom, from_census=from_census)

    def _frame(self, obs, tick: Tick, point: Point, fc: Forecast, causes, *, reachable: bool, refused: bool,
               failure: str | None, used, maxclients, ratio, headroom, from_census: bool = False) -> WatchFrame:
        self.alert_state, events = step(self.alert_state, tick, self.settings.alert_settings())
        self.history.append(point)
        return WatchFrame(
            target=self.target, wall=obs.wall, monotonic=obs.monotonic, reachable=reachable, refused=refused,
            refusing_since=self.refusing_since, failure=failure, used=used, maxclients=maxclients, ratio=ratio,
            headroom=headroom, rejected_per_s=tick.rejected_per_s, new_per_s=tick.new_connections_per_s,
            blocked=tick.blocked, forecast=fc, alerts=active_alerts(self.alert_state), events=events,
            causes=causes, last_causes=self.last_causes, last_diagnosis_wall=self.last_diag_wall,
            sources=self.sources, sources_from=self.sources_from, sources_wall=self.sources_wall,
            history=tuple(self.history), restarts=tuple(self.restarts), budget=self.budget.view(obs.monotonic),
            server=self.server, kills=tuple(self.kills), used_from_census=from_census,
            sources_left_out=self.sources_left_out,
        )

    def _trim_points(self, now: float) -> None:
        horizon = now - self.settings.forecast_window_s
        if self.points and self.points[0][0] < horizon:
            self.points = [p for p in self.points if p[0] >= horizon]

    # -- sources --------------------------------------------------------------------------------------------
    def _growth(self, now: float, host: str, count: int) -> float | None:
        for mono, counts in self.source_history:  # oldest first: the start of the growth window
            if now - mono <= GROWTH_WINDOW_S:
                if now - mono < MIN_GROWTH_SPAN_S:
                    return None
                return round((count - counts.get(host, 0)) / (now - mono) * 60.0, 1)
        return None

    def _client_list_sources(self, obs, snap: Snapshot) -> tuple[SourceTrend, ...]:
        groups = group_sources(client_records(snap), self.settings.idle_threshold_s)
        before = self.source_history[-1][1] if self.source_history else None
        counts = {host: g.connections for host, g in groups.items()}
        while self.source_history and obs.monotonic - self.source_history[0][0] > GROWTH_WINDOW_S * 2:
            self.source_history.popleft()
        rows = []
        trends = []
        for host, g in sorted(groups.items(), key=lambda kv: (-kv[1].connections, -kv[1].idle, host_key(kv[0]))):
            growth = self._growth(obs.monotonic, host, g.connections)
            delta = g.connections - before.get(host, 0) if before is not None else 0
            trends.append(SourceTrend(host, g.connections, g.idle, growth))
            rows.append(SourceRow(host, g.connections, g.idle, growth, tuple(g.names), tuple(g.libs), delta))
        self.source_history.append((obs.monotonic, counts))
        self.sources = _mark_changed(rows)[: self.settings.top]
        self.sources_left_out = _left_out(rows[self.settings.top:])
        self.sources_from, self.sources_wall = "client_list", obs.wall
        self.last_snapshot = snap
        return tuple(trends)

    def _census_sources(self, census: SocketCensus, wall: float) -> None:
        rows = [SourceRow(h, n, None, None) for h, n in sorted(census.by_host.items(), key=lambda kv: (-kv[1], kv[0]))]
        self.sources = tuple(rows[: self.settings.top])
        self.sources_left_out = _left_out(rows[self.settings.top:])
        self.sources_from, self.sources_wall = "census", wall

    # -- the doctor -------------------------------------------------------------------------------------
    def _maybe_diagnose(self, obs, snap: Snapshot) -> tuple[str, ...] | None:
        if self.diagnoser is None:
            return None
        due = self.last_diag_mono is None or obs.monotonic - self.last_diag_mono >= self.settings.diagnose_every_s
        if not due or (snap.clients is None and not obs.client_list_included):
            return None  # wait for a CLIENT LIST tick; if CLIENT LIST is denied, judge from INFO alone
        causes = self.diagnoser(self.diag_base, snap, obs.wall)
        self.diag_base = snap
        self.last_causes, self.last_diag_mono, self.last_diag_wall = causes, obs.monotonic, obs.wall
        return causes


    def _maybe_diagnose_refused(self, obs) -> tuple[str, ...] | None:
        """Refused and local: the doctor from two socket censuses, as `connguard doctor` does on a full server."""
        if self.census_diagnoser is None or not obs.refused or obs.census is None:
            return None
        due = self.last_diag_mono is None or obs.monotonic - self.last_diag_mono >= self.settings.diagnose_every_s
        if not due:
            return None
        error = obs.failure.message if obs.failure is not None else "the server refuses connections (maxclients)"
        causes = self.census_diagnoser(self.diag_census, obs.census, error, obs.host)
        self.diag_census = obs.census
        self.last_causes, self.last_diag_mono, self.last_diag_wall = causes, obs.monotonic, obs.wall
        return causes


@dataclass
class _Group:
    connections: int = 0
    idle: int = 0
    names: list = field(default_factory=list)
    libs: list = field(default_factory=list)


def group_sources(records: Iterable[ClientRecord], idle_threshold_s: float) -> dict[str, _Group]:
    """Per client host: connections, plain connections idle over the threshold (the kind `kill` may touch
    and analysis.sources counts), and a few names and libraries. One pass and no percentiles: this runs on
    every CLIENT LIST, which at 10k clients is 10k records a tick."""
    groups: dict[str, _Group] = {}
    for r in records:
        host = r.host
        g = groups.get(host)
        if g is None:
            g = groups[host] = _Group()
        g.connections += 1
        if r.idle_s >= idle_threshold_s and kind_of(r) == NORMAL:
            g.idle += 1
        if r.name and len(g.names) < MAX_LISTED and r.name not in g.names:
            g.names.append(r.name)
        if r.lib_name and len(g.libs) < MAX_LISTED:
            lib = r.lib
            if lib not in g.libs:
                g.libs.append(lib)
    return groups


def _left_out(rows: Sequence[SourceRow]) -> tuple[int, int]:
    return len(rows), sum(r.connections for r in rows)


def _mark_changed(rows: Sequence[SourceRow]) -> tuple[SourceRow, ...]:
    moved = sorted((r for r in rows if r.delta), key=lambda r: -abs(r.delta))[:CHANGED_MARKS]
    marked = {r.host for r in moved}
    return tuple(SourceRow(r.host, r.connections, r.idle_over_threshold, r.growth_per_min, r.names, r.libs, r.delta,
                           r.host in marked) for r in rows)
