"""The runbook's alerts as pure state transitions: `step(state, tick, settings) -> (state, events)`.

No clock and no I/O: a Tick carries the numbers one sample produced (rates already computed, our own
connects already excluded), so `watch`, the exporter and a replayed recording all get the same alerts.

| alert             | fires when                                                                      | severity |
|-------------------|---------------------------------------------------------------------------------|----------|
| `capacity`        | ratio >= 0.8 (critical >= 0.9), the lines of analysis/capacity.py               | warn/crit|
| `rejections`      | rejected/s > 0 for `sustain_ticks` ticks in a row                               | critical |
| `churn`           | new connections/s > EWMA + max(k×MAD, floor) for `sustain_ticks` ticks          | warning  |
| `blocked_growth`  | blocked clients > EWMA + max(k×MAD, floor) for `sustain_ticks` ticks            | warning  |
| `idle_source`     | a source holds connections idle over the threshold and is still growing         | warning  |
| `exhaustion_soon` | the forecast says full in under `forecast_alert_s` (critical under a third)      | warn/crit|
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from connguard.analysis.capacity import CRITICAL_RATIO, WARNING_RATIO, Thresholds
from connguard.analysis.forecast import Forecast
from connguard.settings import FORECAST_ALERT_S, IDLE_THRESHOLD_S

ALERT_NAMES = ("capacity", "rejections", "churn", "blocked_growth", "idle_source", "exhaustion_soon")


@dataclass(frozen=True)
class AlertSettings:
    warning_ratio: float = WARNING_RATIO
    critical_ratio: float = CRITICAL_RATIO
    sustain_ticks: int = 2  # a rate must stay up this many ticks: one tick can be a blip
    ewma_alpha: float = 0.1  # baseline memory: about 1/alpha ticks
    mad_k: float = 4.0  # how many mean absolute deviations above the baseline is abnormal
    churn_floor_per_s: float = 5.0  # new connections/s above the baseline that are never abnormal
    blocked_floor: float = 5.0  # blocked clients above the baseline that are never abnormal
    warmup_ticks: int = 5  # ticks a baseline learns from before it may alert
    idle_threshold_s: float = IDLE_THRESHOLD_S
    forecast_alert_s: float = FORECAST_ALERT_S

    def __post_init__(self) -> None:
        if not (0 < self.warning_ratio <= self.critical_ratio <= 1.0):
            raise ValueError("alert thresholds must satisfy 0 < warning <= critical <= 1")
        if self.sustain_ticks < 1 or not (0 < self.ewma_alpha <= 1) or self.mad_k < 0:
            raise ValueError("sustain_ticks >= 1, 0 < ewma_alpha <= 1 and mad_k >= 0 are required")
        if self.churn_floor_per_s < 0 or self.blocked_floor < 0 or self.forecast_alert_s <= 0:
            raise ValueError("floors must be >= 0 and forecast_alert_s > 0")


@dataclass(frozen=True)
class SourceTrend:
    """One client host as the idle_source alert sees it (from the latest CLIENT LIST)."""

    host: str
    connections: int
    idle_over_threshold: int
    growth_per_min: float | None  # None until two CLIENT LISTs are far enough apart


@dataclass(frozen=True)
class Tick:
    """What one sample says. None means not known this tick (refused, restart gap, no CLIENT LIST)."""

    wall: float  # time.time() of the sample: shown as `since`
    ratio: float | None = None
    rejected_per_s: float | None = None
    new_connections_per_s: float | None = None  # our own (re)connects excluded
    blocked: int | None = None
    sources: tuple[SourceTrend, ...] | None = None  # None on ticks without a fresh CLIENT LIST
    forecast: Forecast | None = None


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str  # warning | critical
    since: float  # wall time the alert started
    value: float  # the number that tripped it
    detail: str = ""  # for people: which source, what threshold

    def to_dict(self) -> dict[str, object]:
        """The alert object of `connguard.watch/1` and of --alert-cmd's stdin."""
        return {"name": self.name, "severity": self.severity, "since": round(self.since, 3), "value": self.value}


@dataclass(frozen=True)
class AlertEvent:
    kind: str  # start | change (severity moved) | clear
    alert: Alert
    at: float


@dataclass(frozen=True)
class Baseline:
    """An exponentially weighted mean and mean absolute deviation. It learns freely for `warmup_ticks`
    (and alerts on nothing meanwhile); after that each update is clipped to the current threshold, so a
    storm is not absorbed as the new normal (a lasting change is still learned, slowly)."""

    mean: float = 0.0
    mad: float = 0.0
    n: int = 0

    def warm(self, settings: AlertSettings) -> bool:
        return self.n >= settings.warmup_ticks

    def threshold(self, settings: AlertSettings, floor: float) -> float:
        return self.mean + max(settings.mad_k * self.mad, floor)

    def update(self, value: float, settings: AlertSettings, floor: float) -> "Baseline":
        if self.n == 0:
            return Baseline(value, 0.0, 1)
        x = min(value, self.threshold(settings, floor)) if self.warm(settings) else value
        a = max(settings.ewma_alpha, 1.0 / (self.n + 1))  # a plain mean until 1/alpha samples exist
        mean = (1 - a) * self.mean + a * x
        mad = (1 - a) * self.mad + a * abs(x - self.mean)
        return Baseline(mean, mad, self.n + 1)


@dataclass(frozen=True)
class AlertState:
    active: Mapping[str, Alert] = field(default_factory=lambda: MappingProxyType({}))
    streaks: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    churn: Baseline = Baseline()
    blocked: Baseline = Baseline()


# -- each alert: (tripped?, severity, value, detail) from the tick and the state before it ----------------

Verdict = tuple[str, float, str] | None  # (severity, value, detail) when tripped


def capacity_verdict(tick: Tick, settings: AlertSettings) -> Verdict:
    severity = Thresholds(settings.warning_ratio, settings.critical_ratio).status(tick.ratio)
    if tick.ratio is None or severity not in ("warning", "critical"):
        return None
    line = settings.critical_ratio if severity == "critical" else settings.warning_ratio
    return severity, tick.ratio, f"ratio {tick.ratio:.0%} >= {line:.0%}"


def rejections_verdict(tick: Tick) -> Verdict:
    if not tick.rejected_per_s or tick.rejected_per_s <= 0:
        return None
    return "critical", tick.rejected_per_s, f"{tick.rejected_per_s:.1f} refused/s: every one is a failed client call"


def _baseline_verdict(value: float | None, base: Baseline, settings: AlertSettings, floor: float,
                      what: str, unit: str) -> Verdict:
    if value is None:
        return None
    limit = base.threshold(settings, floor)
    if not base.warm(settings) or value <= limit:
        return None
    return "warning", value, f"{what} {value:.1f}{unit} above baseline {base.mean:.1f} (limit {limit:.1f})"


def idle_source_verdict(tick: Tick, previous: Alert | None) -> Verdict:
    if tick.sources is None:  # no fresh CLIENT LIST: keep what we had
        return (previous.severity, previous.value, previous.detail) if previous else None
    growing = [s for s in tick.sources
               if s.idle_over_threshold > 0 and s.growth_per_min is not None and s.growth_per_min > 0]
    if not growing:
        return None
    growing.sort(key=lambda s: (-s.idle_over_threshold, s.host))
    idle = sum(s.idle_over_threshold for s in growing)
    worst = growing[0]
    more = f" (+{len(growing) - 1} more host{'s' if len(growing) > 2 else ''})" if len(growing) > 1 else ""
    return "warning", float(idle), (f"{worst.host}: {worst.idle_over_threshold} idle, "
                                    f"{worst.growth_per_min:+.1f}/min{more}")


def exhaustion_verdict(tick: Tick, settings: AlertSettings) -> Verdict:
    fc = tick.forecast
    if fc is None or fc.seconds_to_full is None or fc.confidence == "none":
        return None
    if fc.seconds_to_full >= settings.forecast_alert_s:
        return None
    severity = "critical" if fc.seconds_to_full < settings.forecast_alert_s / 3 else "warning"
    detail = "full now" if fc.seconds_to_full <= 0 else f"full in {fc.seconds_to_full:.0f} s at {fc.per_min:+.1f}/min"
    return severity, round(fc.seconds_to_full, 1), detail


def _sustained(name: str, verdict: Verdict, streaks: dict[str, int], need: int, unknown: bool) -> Verdict:
    """The verdict once it has held `need` ticks in a row; a tick that could not measure it keeps the count."""
    if not unknown:
        streaks[name] = streaks.get(name, 0) + 1 if verdict else 0
    return verdict if streaks.get(name, 0) >= need else None


def step(state: AlertState, tick: Tick, settings: AlertSettings = AlertSettings()) -> tuple[AlertState, tuple[AlertEvent, ...]]:
    """One tick: which alerts hold now, and the start/change/clear events against the previous state."""
    streaks = dict(state.streaks)
    need = settings.sustain_ticks
    # A rate we could not measure this tick (refused, restart gap) neither starts nor clears its alert.
    unknown = {"rejections": tick.rejected_per_s is None, "churn": tick.new_connections_per_s is None,
               "blocked_growth": tick.blocked is None, "capacity": tick.ratio is None}
    verdicts: dict[str, Verdict] = {
        "capacity": capacity_verdict(tick, settings),
        "rejections": _sustained("rejections", rejections_verdict(tick), streaks, need, unknown["rejections"]),
        "churn": _sustained("churn", _baseline_verdict(tick.new_connections_per_s, state.churn, settings,
                                                       settings.churn_floor_per_s, "new connections/s", "/s"),
                            streaks, need, unknown["churn"]),
        "blocked_growth": _sustained("blocked_growth",
                                     _baseline_verdict(None if tick.blocked is None else float(tick.blocked),
                                                       state.blocked, settings, settings.blocked_floor,
                                                       "blocked clients", ""), streaks, need,
                                     unknown["blocked_growth"]),
        "idle_source": idle_source_verdict(tick, state.active.get("idle_source")),
        "exhaustion_soon": exhaustion_verdict(tick, settings),
    }
    active: dict[str, Alert] = {}
    events: list[AlertEvent] = []
    for name in ALERT_NAMES:
        before = state.active.get(name)
        verdict = verdicts[name]
        if verdict is None and before is not None and unknown.get(name):
            active[name] = before
            continue
        if verdict is None:
            if before is not None:
                events.append(AlertEvent("clear", before, tick.wall))
            continue
        severity, value, detail = verdict
        if before is None:
            now = Alert(name, severity, tick.wall, value, detail)
            events.append(AlertEvent("start", now, tick.wall))
        else:
            now = replace(before, severity=severity, value=value, detail=detail)
            if severity != before.severity:
                events.append(AlertEvent("change", now, tick.wall))
        active[name] = now
    churn, blocked = state.churn, state.blocked
    if tick.new_connections_per_s is not None:
        churn = churn.update(tick.new_connections_per_s, settings, settings.churn_floor_per_s)
    if tick.blocked is not None:
        blocked = blocked.update(float(tick.blocked), settings, settings.blocked_floor)
    return (AlertState(MappingProxyType(active), MappingProxyType(streaks), churn, blocked), tuple(events))


def active_alerts(state: AlertState) -> tuple[Alert, ...]:
    """Active alerts, critical first, then in the table's order."""
    order = {n: i for i, n in enumerate(ALERT_NAMES)}
    return tuple(sorted(state.active.values(), key=lambda a: (a.severity != "critical", order[a.name])))
