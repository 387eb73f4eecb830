"""Time to exhaustion: a robust (Theil–Sen) fit of used connections over the recent window, with its confidence,
and the lifecycle that decides when such a fit may be shown at all (`ForecastTracker`, docs/forecast.md).

Pure: points in, a Forecast out; no clock, no I/O. Points are (monotonic seconds, used)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections import deque
from statistics import median
from typing import Sequence

from connguard.settings import FORECAST_WINDOW_S, WINDOW_MAX_POINTS

MIN_POINTS = 5  # never forecast from fewer points (issue #10)
MIN_SPAN_S = 20.0  # ... or from less than this much time
WINDOW_S = FORECAST_WINDOW_S  # only the recent past says where usage is heading
MAX_FIT_POINTS = 120  # Theil–Sen is O(n²) in pairs; an even subsample keeps a tick cheap
MIN_RISE = 2.0  # a fitted rise of less than this many connections over the window is noise, not a trend
OUTLIER_MADS = 3.0  # residuals beyond this many (scaled) MADs are dropped before the final fit
MAD_SCALE = 1.4826  # MAD -> standard deviation for normal noise
RESIDUAL_FLOOR = 1.0  # connections: counts are integers, so never call a point an outlier for being 1 off

CONFIDENCES = ("none", "low", "medium", "high")


@dataclass(frozen=True)
class Forecast:
    """When the server fills if usage keeps its recent trend. `seconds_to_full` is None without an upward
    trend (or without enough data: then `confidence` is "none"); 0 when it is full now."""

    seconds_to_full: float | None
    slope_per_s: float
    points: int  # points the fit used (outliers dropped)
    confidence: str  # none | low | medium | high
    span_s: float = 0.0
    dropped: int = 0  # outliers left out of the fit
    reason: str = ""  # why there is no forecast, in words

    @property
    def per_min(self) -> float:
        return self.slope_per_s * 60.0

    def to_dict(self) -> dict[str, object]:
        """The `forecast` object of `connguard.watch/1`."""
        return {"seconds_to_full": None if self.seconds_to_full is None else round(self.seconds_to_full, 1),
                "slope_per_s": round(self.slope_per_s, 4), "points": self.points}


def _theil_sen(ts: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Median of pairwise slopes, and the median intercept for that slope."""
    slopes = [(ys[j] - ys[i]) / (ts[j] - ts[i])
              for i in range(len(ts)) for j in range(i + 1, len(ts)) if ts[j] > ts[i]]
    slope = median(slopes) if slopes else 0.0
    intercept = median(y - slope * t for t, y in zip(ts, ys))
    return slope, intercept


def _kendall_tau(ts: Sequence[float], ys: Sequence[float]) -> float:
    """How consistently usage moves with time (1: every later point is higher). Ties count as neither."""
    concordant = discordant = 0
    for i in range(len(ts)):
        for j in range(i + 1, len(ts)):
            s = (ts[j] - ts[i]) * (ys[j] - ys[i])
            if s > 0:
                concordant += 1
            elif s < 0:
                discordant += 1
    pairs = len(ts) * (len(ts) - 1) / 2
    return (concordant - discordant) / pairs if pairs else 0.0


def _subsample(points: Sequence[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    picked = [points[round(i * step)] for i in range(limit)]
    return picked


def _confidence(tau: float, n: int, span_s: float, horizon_s: float | None) -> str:
    """High when usage rose almost monotonically over many points and the forecast does not reach far
    beyond the data; each shortfall lowers it a step."""
    level = 3 if tau >= 0.8 else 2 if tau >= 0.6 else 1
    if n < 10 or span_s < 60:
        level = min(level, 2)
    if horizon_s is not None:
        reach = horizon_s / max(span_s, 1e-9)  # extrapolating 10x beyond what we saw is a guess
        if reach > 10:
            level = 1
        elif reach > 3:
            level = min(level, 2)
    return CONFIDENCES[level]


def forecast(points: Sequence[tuple[float, float]], maxclients: int | None, *, window_s: float = WINDOW_S) -> Forecast:
    """Fit `used` against time over the last `window_s` and extrapolate to `maxclients`.

    The latest point is where usage is now; the fitted slope is where it is heading. Outliers (a blip, a
    burst that left) are dropped by their residual from a first fit, then the fit is redone."""
    pts = sorted((float(t), float(y)) for t, y in points if math.isfinite(t) and math.isfinite(y))
    if pts:
        newest = pts[-1][0]
        pts = [p for p in pts if p[0] >= newest - window_s]
    span = pts[-1][0] - pts[0][0] if pts else 0.0
    if pts and maxclients and pts[-1][1] >= maxclients:  # an observation, not a forecast: no data minimum
        return Forecast(0.0, 0.0, len(pts), "high", span, reason="full now")
    if len(pts) < MIN_POINTS or span < MIN_SPAN_S:
        return Forecast(None, 0.0, len(pts), "none", span,
                        reason=f"not enough data ({len(pts)} points over {span:.0f} s; needs {MIN_POINTS} over "
                               f"{MIN_SPAN_S:.0f} s)")
    if not maxclients or maxclients <= 0:
        return Forecast(None, 0.0, len(pts), "none", span, reason="maxclients unknown")
    fit_pts = _subsample(pts, MAX_FIT_POINTS)
    ts, ys = [p[0] for p in fit_pts], [p[1] for p in fit_pts]
    slope, intercept = _theil_sen(ts, ys)
    residuals = [y - (intercept + slope * t) for t, y in zip(ts, ys)]
    mad = median(abs(r) for r in residuals)
    cutoff = max(OUTLIER_MADS * MAD_SCALE * mad, RESIDUAL_FLOOR)
    kept = [(t, y) for (t, y), r in zip(fit_pts, residuals) if abs(r) <= cutoff]
    dropped = len(fit_pts) - len(kept)
    if len(kept) >= MIN_POINTS and dropped:
        ts, ys = [p[0] for p in kept], [p[1] for p in kept]
        slope, intercept = _theil_sen(ts, ys)
    else:
        kept, dropped = fit_pts, 0
    n = len(kept)
    fit_span = ts[-1] - ts[0]
    used_now = pts[-1][1]
    tau = _kendall_tau(ts, ys)
    if slope <= 0 or slope * fit_span < MIN_RISE or tau < 0.3:
        flat_confidence = "medium" if n >= 10 and fit_span >= 60 else "low"  # "no trend" is itself a claim
        return Forecast(None, slope, n, flat_confidence, span, dropped, reason="no trend")
    horizon = (maxclients - used_now) / slope
    return Forecast(horizon, slope, n, _confidence(tau, n, fit_span, horizon), span, dropped)


# -- the lifecycle ------------------------------------------------------------------------------------------
RELEASE_MIN = 3.0  # connections: a fall smaller than this is noise, not a release
RELEASE_FRACTION = 0.1  # ... and so is a fall smaller than this share of the peak
REFIT_S = 5.0  # refit at most this often; between fits the forecast counts down
LEVEL_POINTS = 3  # usage level = median of the last 3 points: a one-tick blip is neither a peak nor a release
NEW_HIGH_SLOTS = 3.0  # growth has stopped when no new high came in the time the trend needs for this many slots
STEP_SHARE = 0.5  # a rise more than half of which came in one interval is a step (a level shift), not a trend


def _stepped(points: Sequence[tuple[float, float]]) -> bool:
    """Most of the rise came between two consecutive points: a deploy, a batch job's pool opening at
    once. Extrapolating that jump as a rate would call a new level a leak."""
    rise = points[-1][1] - points[0][1]
    if rise <= 0 or len(points) < 2:
        return False
    jump = max(b[1] - a[1] for a, b in zip(points, list(points)[1:]))
    return jump > STEP_SHARE * rise


CHANGE_MIN_SEGMENT = 5  # points on each side of a change point
CHANGE_VARIANCE_FLOOR = 2.0  # slots²: integer counts never fit a line better than this
CHANGE_PENALTY = 6.0  # a split must lower the squared error by this × log(n) × variance (BIC-like)


def _sse(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Squared error of the least-squares line through the points."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    syy = sum((y - my) ** 2 for y in ys)
    return max(0.0, syy - (sxy * sxy / sxx if sxx else 0.0))


def last_change_point(points: Sequence[tuple[float, float]], min_segment: int = CHANGE_MIN_SEGMENT) -> int:
    """Index where the last linear regime of `points` begins (0: one regime throughout).

    Binary segmentation on the right end: the best split into two lines is kept when it beats one line by
    a BIC-like margin, then the right part is searched again. A rise that turned flat (a plateau), a jump
    (a step) or a bend is found after `min_segment` points of the new regime."""
    start = 0
    while len(points) - start >= 2 * min_segment:
        xs, ys = [p[0] for p in points[start:]], [p[1] for p in points[start:]]
        n = len(xs)
        whole = _sse(xs, ys)
        best, at = whole, 0
        for k in range(min_segment, n - min_segment + 1):
            split = _sse(xs[:k], ys[:k]) + _sse(xs[k:], ys[k:])
            if split < best:
                best, at = split, k
        variance = max(best / n, CHANGE_VARIANCE_FLOOR)
        if not at or whole - best < CHANGE_PENALTY * math.log(n) * variance:
            break
        start += at
    return start


def _release_drop(peak: float) -> float:
    return max(RELEASE_MIN, RELEASE_FRACTION * peak)


class ForecastTracker:
    """The forecast over a stream of (time, used): one object per target, fed every observation.

    It shows the robust fit of `forecast()` only while usage is still rising, over the points of the last
    regime: after the last change point of the series (`last_change_point`) and the last release, restart
    or kill (docs/forecast.md has the comparison that chose this):
    - a release (usage falls by max(3, 10 % of its peak)) withdraws it at once, and the fit starts over
      from the fall;
    - after a natural release, a climb back that stays below the previous peak (plus the same margin) is a
      cycle, not a leak: no forecast until usage passes that peak (a sawtooth never raises an alert after
      its first rise);
    - a plateau withdraws it once no new high came for max(20 s, a quarter of the fitted span, the time
      the trend needs for 3 slots), and never later than half the fit window;
    - a step (more than half the rise in one interval) is a new level, not a trend: no forecast;
    - between fits (every `refit_s`) the seconds to full count down with elapsed time;
    - `reset()` (a restart, a kill by our hand) forgets everything; `unobserved()` gives no forecast.

    O(1) per observation between fits; a fit is O(n^2) over at most `MAX_FIT_POINTS` points."""

    METHODS = ("change-point", "robust-trend")

    def __init__(self, window_s: float = WINDOW_S, *, refit_s: float = REFIT_S,
                 max_points: int = WINDOW_MAX_POINTS, method: str = "change-point") -> None:
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}")
        self.window_s, self.refit_s, self.method = window_s, refit_s, method
        self._points: deque[tuple[float, float]] = deque(maxlen=max_points)
        self._cycle_peak: tuple[float, float] | None = None  # (peak, when released) of the last natural release
        self.reset()

    def reset(self) -> None:
        """A restart or our own kill: nothing before now says where usage is heading."""
        self._points.clear()
        self._recent: deque[float] = deque(maxlen=LEVEL_POINTS)
        self._peak: float | None = None  # highest level of the current segment
        self._high_at = 0.0  # when the level last rose above the peak
        self._cycle_peak = None
        self._forget_fit()

    def _forget_fit(self) -> None:
        self._fit: Forecast | None = None
        self._fit_at = -math.inf
        self._full_at: float | None = None

    @property
    def points(self) -> tuple[tuple[float, float], ...]:
        """The current segment's points, oldest first (at most the fit window)."""
        return tuple(self._points)

    def unobserved(self) -> Forecast:
        """No observation: no forecast (absent, never 0). The points stay; the next observation (or the
        restart it reveals) decides what they are worth, and forces a refit."""
        self._fit_at = -math.inf
        return Forecast(None, 0.0, len(self._points), "none", reason="not observed")

    def _withdrawn(self, reason: str, span: float) -> Forecast:
        return Forecast(None, 0.0, len(self._points), "low", span, reason=reason)

    def observe(self, t: float, used: float, limit: int | None) -> Forecast:
        """One observation at monotonic `t`: the forecast now. `limit` is the slots left to the watched
        clients (maxclients less connguard's own)."""
        if self._points and t <= self._points[-1][0]:
            t = self._points[-1][0] + 1e-6  # a clock that did not move: keep the order, never divide by 0
        self._points.append((t, used))
        while self._points[0][0] < t - self.window_s:
            self._points.popleft()
        span = t - self._points[0][0]
        self._recent.append(used)
        level = median(self._recent)
        if limit is not None and limit > 0 and used >= limit:
            return Forecast(0.0, 0.0, len(self._points), "high", span, reason="full now")
        peak = self._peak
        if peak is not None and level <= peak - _release_drop(peak):
            # Confirmed over LEVEL_POINTS ticks: a new segment starts at the fall.
            cycle = self._cycle_peak  # a fall in steps is one release: remember its highest peak
            if cycle is None or t - cycle[1] > self.window_s or cycle[0] < peak:
                self._cycle_peak = (peak, t)
            self._points.clear()
            self._points.append((t, used))
            self._recent.clear()
            self._recent.append(used)
            self._peak, self._high_at = used, t
            self._forget_fit()
            return self._withdrawn("released", 0.0)
        if peak is not None and used <= peak - _release_drop(peak):
            return self._withdrawn("released", span)  # at once, before the level confirms it
        if peak is None or level > peak:
            self._peak, self._high_at = level, t
        cycle = self._cycle_peak
        if cycle is not None and t - cycle[1] > self.window_s:
            cycle = self._cycle_peak = None  # a cycle older than the fit window says nothing any more
        if cycle is not None and level <= cycle[0] + _release_drop(cycle[0]):
            return self._withdrawn(f"below the peak of {cycle[0]:.0f} before the last release (a cycle, not a leak)",
                                   span)
        # Refit every `refit_s`, and on every observation while the data is still too short to fit: the first
        # forecast comes on the tick the data suffices, not up to `refit_s` later (such fits are small).
        if t - self._fit_at >= self.refit_s or self._fit is None or self._fit.reason.startswith("not enough data"):
            pts = _subsample(self._points, MAX_FIT_POINTS)
            cut = last_change_point(pts) if self.method == "change-point" else 0  # after a bend, step, plateau
            fit = forecast(pts[cut:], limit, window_s=self.window_s)
            if cut and fit.confidence == "none" and fit.seconds_to_full is None:
                # Enough data, but usage changed course lately: observed, and no trend to extrapolate yet.
                fit = Forecast(None, 0.0, len(pts) - cut, "low", t - pts[cut][0],
                               reason=f"usage changed course {t - pts[cut][0]:.0f} s ago")
            pts = pts[cut:]
            if fit.seconds_to_full is not None and _stepped(pts):
                fit = Forecast(None, fit.slope_per_s, fit.points, "low", fit.span_s, fit.dropped,
                               reason="a step, not a trend")
            self._fit, self._fit_at = fit, t
            stf = self._fit.seconds_to_full
            self._full_at = None if stf is None else t + stf
        fit = self._fit
        if fit.seconds_to_full is None or self._full_at is None:
            return fit
        stall = min(self.window_s / 2, max(MIN_SPAN_S, span / 4, NEW_HIGH_SLOTS / max(fit.slope_per_s, 1e-9)))
        if t - self._high_at > stall:
            return self._withdrawn("growth stopped", span)
        return Forecast(max(0.0, self._full_at - t), fit.slope_per_s, fit.points, fit.confidence, span,
                        fit.dropped)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def describe(fc: Forecast) -> str:
    """One phrase for people: "full in ~14 min at +3.1/min", "full now", "no trend", "not enough data"."""
    if fc.confidence == "none":
        return "not enough data" if fc.reason.startswith("not enough") else f"no forecast ({fc.reason})"
    if fc.seconds_to_full is None:
        return "no trend" if fc.reason in ("", "no trend") else f"no forecast ({fc.reason})"
    if fc.seconds_to_full <= 0:
        return "full now"
    return f"full in ~{_duration(fc.seconds_to_full)} at {fc.per_min:+.1f}/min"
