"""What `watch` shows: observations folded into a frozen WatchFrame per tick (rates, forecast, sources, alerts).

No I/O and no clock of its own: every time comes from the Observation. The facts about time (restarts,
rates, the forecast's lifecycle, per-host growth, "used") are the analysis layer's LiveWindow; this model
keeps only what is watch's to show (history for the sparklines, the sources table, alerts, the budget) and
runs the doctor's rules over the LiveWindow's real window. The screen, the NDJSON line and the demo snapshot
all render the same WatchFrame."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable, Sequence

from connguard.analysis.alerts import Alert, AlertEvent, AlertSettings, AlertState, SourceTrend, Tick, active_alerts, step
from connguard.analysis.capacity import capacity
from connguard.analysis.classify import client_records
from connguard.analysis.forecast import Forecast
from connguard.analysis.sources import host_key
from connguard.analysis.window import LiveWindow, Window, group_by_host
from connguard.contract import WATCH_SCHEMA
from connguard.monitor.watch_budget import BudgetView, ClientListBudget
from connguard.probe.model import Snapshot, SocketCensus
from connguard.settings import (
    DIAGNOSE_EVERY_S, FORECAST_ALERT_S, FORECAST_WINDOW_S, IDLE_THRESHOLD_S, TOP_SOURCES, WATCH_INTERVAL_S,
)

SCHEMA = WATCH_SCHEMA
HISTORY = 120  # ticks kept for the sparklines (4 minutes at the default 2 s)
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
    interval_s: float = WATCH_INTERVAL_S
    idle_threshold_s: float = IDLE_THRESHOLD_S
    forecast_alert_s: float = FORECAST_ALERT_S
    forecast_window_s: float = FORECAST_WINDOW_S
    diagnose_every_s: float = DIAGNOSE_EVERY_S
    clients_every_s: float | None = None  # None: adaptive (<= 1% of server time)
    top: int = TOP_SOURCES

    def alert_settings(self) -> AlertSettings:
        return AlertSettings(idle_threshold_s=self.idle_threshold_s, forecast_alert_s=self.forecast_alert_s)


Diagnoser = Callable[[Window, float], "tuple[str, ...]"]  # (the live window, wall) -> cause names


@dataclass
class WatchModel:
    """Folds Observations into WatchFrames. Mutable inside, frozen at its edges (each frame is a value)."""

    target: str
    settings: WatchSettings = WatchSettings()
    diagnoser: Diagnoser | None = None  # the doctor's rules over the live window
    census_diagnoser: Callable | None = None  # (previous census, census, error line, host facts) -> causes
    budget: ClientListBudget = field(init=False)
    history: collections.deque = field(init=False)
    alert_state: AlertState = field(default_factory=AlertState)

    def __post_init__(self) -> None:
        self.budget = ClientListBudget(self.settings.interval_s, fixed_every_s=self.settings.clients_every_s)
        self.history = collections.deque(maxlen=HISTORY)
        self.window = LiveWindow(forecast_window_s=self.settings.forecast_window_s)
        self.sources: tuple[SourceRow, ...] = ()
        self.sources_left_out: tuple[int, int] = (0, 0)
        self.sources_from: str | None = None
        self.sources_wall: float | None = None
        self.restarts: list[float] = []
        self.refusing_since: float | None = None
        self.last_causes: tuple[str, ...] | None = None
        self.last_diag_mono: float | None = None
        self.last_diag_wall: float | None = None
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
        self.window.reset_forecast()

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
        moved = self.window.push(snap)  # restarts, rates and the forecast: the window's
        gap = self._pending_gap or moved.restarted  # counters reset: no rate across the restart
        if moved.restarted:
            self.restarts.append(obs.wall)
        self._pending_gap = False
        rejected_per_s = moved.rates.rejected_per_s if moved.rates else None
        new_per_s = moved.rates.new_per_s if moved.rates else None
        fc = moved.forecast
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
        if obs.refused:  # the server just said it is full: an observation, not a forecast
            fc = Forecast(0.0, 0.0, 0, "high", reason="full now")
        else:  # absent while the server cannot be seen, never 0
            fc = self.window.unobserved()
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

    # -- sources --------------------------------------------------------------------------------------------
    def _client_list_sources(self, obs, snap: Snapshot) -> tuple[SourceTrend, ...]:
        groups = group_by_host(client_records(snap), self.settings.idle_threshold_s)
        before = self.window.previous_hosts
        rows = []
        trends = []
        for host, g in sorted(groups.items(), key=lambda kv: (-kv[1].connections, -kv[1].idle, host_key(kv[0]))):
            growth = self.window.host_growth_per_min(obs.monotonic, host, g.connections)
            delta = g.connections - before.get(host, 0) if before is not None else 0
            trends.append(SourceTrend(host, g.connections, g.idle, growth))
            rows.append(SourceRow(host, g.connections, g.idle, growth, tuple(g.names), tuple(g.libs), delta))
        self.window.note_hosts(obs.monotonic, {host: g.connections for host, g in groups.items()})
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
        window = self.window.window()
        causes = self.diagnoser(window, obs.wall) if window is not None else ()
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


def _left_out(rows: Sequence[SourceRow]) -> tuple[int, int]:
    """The sources the table leaves out: how many, and the connections they hold."""
    return len(rows), sum(r.connections for r in rows)


def _mark_changed(rows: Sequence[SourceRow]) -> tuple[SourceRow, ...]:
    moved = sorted((r for r in rows if r.delta), key=lambda r: -abs(r.delta))[:CHANGED_MARKS]
    marked = {r.host for r in moved}
    return tuple(SourceRow(r.host, r.connections, r.idle_over_threshold, r.growth_per_min, r.names, r.libs, r.delta,
                           r.host in marked) for r in rows)
