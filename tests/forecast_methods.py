"""Three forecast methods over the recorded usage shapes (tests/testdata/windows): the figures of docs/forecast.md.

- `theil-sen`: the stateless robust trend over the fit window, points dropped only at a restart (watch before
  issue #18);
- `change-point`: the last change point of the series (the best two-line split, kept when it beats one line
  by a BIC-like margin, applied again to the right part until none is left), then the same robust fit over
  the points after it; shown only while that segment rises;
- `lifecycle`: `ForecastTracker`, the one connguard uses (docs/forecast.md).

    PYTHONPATH=src python tests/forecast_methods.py tests/testdata/windows
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from connguard.analysis.alerts import AlertState, Tick, step
from connguard.analysis.forecast import (
    MAX_FIT_POINTS, WINDOW_S, Forecast, ForecastTracker, _subsample, forecast, last_change_point,
)
from connguard.analysis.window import restarted, slots_left, used_slots
from connguard.probe.recording import read_recording

Point = tuple[float, float]


class TheilSen:
    """The stateless robust fit over the fit window; points dropped only at a restart."""

    def __init__(self) -> None:
        self.points: list[Point] = []

    def reset(self) -> None:
        self.points.clear()

    def segment(self) -> list[Point]:
        return self.points

    def observe(self, t: float, used: float, limit: int | None) -> Forecast:
        self.points.append((t, used))
        self.points = [p for p in self.points if p[0] >= t - WINDOW_S]
        return forecast(self.segment(), limit)


class ChangePoint(TheilSen):
    """The same fit over the points after the last change point only."""

    def segment(self) -> list[Point]:
        pts = _subsample(self.points, MAX_FIT_POINTS)  # as the tracker fits: O(n²) on at most 120 points
        return pts[last_change_point(pts):]


class Lifecycle:
    method = "robust-trend"

    def __init__(self) -> None:
        self.tracker = ForecastTracker(method=self.method)

    def reset(self) -> None:
        self.tracker.reset()

    def observe(self, t: float, used: float, limit: int | None) -> Forecast:
        return self.tracker.observe(t, used, limit)


class LifecycleChangePoint(Lifecycle):
    method = "change-point"


METHODS: dict[str, Callable[[], object]] = {"theil-sen": TheilSen, "change-point": ChangePoint,
                                            "lifecycle+theil-sen": Lifecycle,
                                            "lifecycle+change-point": LifecycleChangePoint}


@dataclass
class Tickf:
    t: float  # seconds since the trace began
    used: int | None
    limit: int | None
    fc: Forecast | None  # None when not observed
    alert: bool  # exhaustion_soon active after this tick


def run(path: Path, method: str) -> list[Tickf]:
    m = METHODS[method]()
    out: list[Tickf] = []
    state = AlertState()
    prev = None
    obs = read_recording(path)
    t0 = obs[0].monotonic
    for o in obs:
        snap = o.snapshot
        if snap is None:
            fc = None
            tick = Tick(o.wall, forecast=Forecast(None, 0.0, 0, "none", reason="not observed"))
        else:
            if prev is not None and restarted(prev, snap):
                m.reset()  # type: ignore[attr-defined]
            prev = snap
            fc = m.observe(snap.clock, float(used_slots(snap)), slots_left(snap))  # type: ignore[attr-defined]
            tick = Tick(o.wall, forecast=fc)
        state, _ = step(state, tick)
        out.append(Tickf(o.monotonic - t0, None if snap is None else used_slots(snap),
                         None if snap is None else slots_left(snap), fc, "exhaustion_soon" in state.active))
    return out


def given(x: Tickf) -> bool:
    return x.fc is not None and x.fc.seconds_to_full is not None


def alert_s(ticks: list[Tickf], after: float = -1.0) -> float:
    """Seconds exhaustion_soon was active (each tick counts until the next)."""
    return round(sum(b.t - a.t for a, b in zip(ticks, ticks[1:]) if a.alert and a.t >= after), 1)


def given_s(ticks: list[Tickf], after: float) -> float:
    """Seconds a forecast was still given after `after`."""
    return round(sum(b.t - a.t for a, b in zip(ticks, ticks[1:]) if given(a) and a.t >= after), 1)


def first_withdrawn_after(ticks: list[Tickf], after: float) -> float | None:
    """Seconds from `after` until the forecast was withdrawn for good."""
    last_given = max((x.t for x in ticks if given(x) and x.t >= after), default=None)
    if last_given is None:
        return 0.0
    nxt = [x.t for x in ticks if x.t > last_given]
    return round(nxt[0] - after, 1) if nxt else None


def leak_error(ticks: list[Tickf], from_s: float = 20.0) -> tuple[float, float, float]:
    """Worst and median |error| (%) of seconds_to_full, and the share of ticks that had a forecast, from `from_s` after the leak began, against the leak's
    own rate over the whole trace (first tick above 0 to the last)."""
    rising = [x for x in ticks if x.used is not None and x.used > 0]
    a, b = rising[0], rising[-1]
    rate = (b.used - a.used) / (b.t - a.t)  # type: ignore[operator]
    errs = []
    for x in rising:
        if x.t - a.t < from_s or not given(x):
            continue
        truth = (x.limit - x.used) / rate  # type: ignore[operator]
        errs.append(abs(x.fc.seconds_to_full - truth) / truth)  # type: ignore[union-attr]
    errs.sort()
    due = sum(1 for x in rising if x.t - a.t >= from_s)
    if not errs:
        return (math.nan, math.nan, 0.0)
    return round(100 * errs[-1], 1), round(100 * errs[len(errs) // 2], 1), round(100 * len(errs) / due)


def change_at(ticks: list[Tickf], kind: str) -> float:
    """When the shape's event happened: the plateau's start, the release, the step, the restart, the outage."""
    us = [(x.t, x.used) for x in ticks]
    if kind == "plateau":
        top = max(u for _, u in us if u is not None)
        return next(t for t, u in us if u is not None and u >= top)
    if kind in ("release", "sawtooth", "restart"):  # the first fall of 10 below the highest so far
        top = 0
        for t, u in us:
            if u is not None and u < top - 10:
                return t
            top = max(top, u or 0)
    if kind == "step":
        return next(b[0] for a, b in zip(us, us[1:]) if a[1] is not None and b[1] is not None and b[1] > a[1] + 50)
    if kind == "server_down":
        return next(t for t, u in us if u is None)
    return 0.0


def figures(folder: Path) -> list[tuple[str, str, str]]:
    """(shape, method, figures) rows."""
    rows = []
    for shape in ("steady_leak", "plateau", "release", "sawtooth", "step", "restart", "server_down"):
        path = folder / f"{shape}.jsonl"
        if not path.exists():
            continue
        for method in METHODS:
            ticks = run(path, method)
            at = change_at(ticks, shape)
            if shape == "steady_leak":
                worst, med, cover = leak_error(ticks)
                text = (f"from 20 s: forecast on {cover} % of ticks, error worst {worst} %, median {med} %; "
                        f"alert {alert_s(ticks)} s")
            elif shape == "plateau":
                text = f"withdrawn {first_withdrawn_after(ticks, at)} s after the plateau began; alert after it {alert_s(ticks, at)} s"
            elif shape == "release":
                text = f"withdrawn {first_withdrawn_after(ticks, at)} s after the release; given after it {given_s(ticks, at)} s"
            elif shape == "sawtooth":
                text = f"alert {alert_s(ticks)} s in all, {alert_s(ticks, at)} s after the first release"
            elif shape == "step":
                text = f"given {given_s(ticks, at)} s after the step; alert {alert_s(ticks, at)} s"
            elif shape == "restart":
                after = [x for x in ticks if x.t >= at]
                stale = sum(1 for x in after if given(x) and x.fc.points > sum(1 for y in after if y.t <= x.t))  # type: ignore[union-attr]
                first = next((round(x.t - at, 1) for x in after if given(x)), None)
                text = f"points from before the restart used: {stale} ticks; first forecast {first} s after it"
            else:
                down = [x for x in ticks if x.used is None]
                text = (f"down {round(down[-1].t - down[0].t, 1)} s: forecast given on {sum(given(x) for x in down)} "
                        f"of {len(down)} down ticks")
            rows.append((shape, method, text))
    return rows


def main(argv: list[str]) -> int:
    folder = Path(argv[1] if len(argv) > 1 else "tests/testdata/windows")
    print("| shape | method | figures |\n|---|---|---|")
    for shape, method, text in figures(folder):
        print(f"| {shape} | {method} | {text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
