"""Forecast and alerts as pure functions: a steady leak is forecast, noise is not a trend, alerts start and clear."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from connguard.analysis.alerts import AlertSettings, AlertState, SourceTrend, Tick, active_alerts, step
from connguard.analysis.forecast import MIN_SPAN_S, Forecast, ForecastTracker, describe, forecast


def line(n: int, every_s: float, start: float, per_s: float, noise: float = 0.0, seed: int = 1):
    rnd = random.Random(seed)
    return [(i * every_s, start + per_s * i * every_s + rnd.uniform(-noise, noise)) for i in range(n)]


def test_a_steady_leak_is_forecast_to_fill_when_it_will():
    # 3 per minute from 40 toward 100, sampled every 2 s for 2 minutes: 54 now, so 46 left = 920 s.
    pts = line(61, 2.0, 48.0, 0.05)
    fc = forecast(pts, 100)
    assert fc.slope_per_s == pytest.approx(0.05, rel=0.01)
    assert fc.seconds_to_full == pytest.approx((100 - pts[-1][1]) / 0.05, rel=0.02)
    assert fc.confidence in ("medium", "high")
    assert describe(fc) == "full in ~15 min at +3.0/min"


def test_never_from_fewer_than_five_points_or_twenty_seconds():
    assert forecast(line(4, 10.0, 10, 1.0), 100).confidence == "none"
    short = forecast(line(10, 2.0, 10, 1.0), 100)  # 18 s of data
    assert short.confidence == "none" and short.seconds_to_full is None
    assert describe(short) == "not enough data"
    assert forecast(line(11, 2.0, 10, 1.0), 100).seconds_to_full is not None  # 20 s


def test_flat_or_noisy_usage_has_no_trend():
    for pts in (line(60, 2.0, 50, 0.0), line(60, 2.0, 50, 0.0, noise=3.0, seed=7), line(60, 2.0, 80, -0.2)):
        fc = forecast(pts, 100)
        assert fc.seconds_to_full is None and fc.confidence != "none"
        assert describe(fc) == "no trend"


def test_outliers_do_not_bend_the_fit():
    pts = line(60, 2.0, 20, 0.1)
    pts[30] = (pts[30][0], 95.0)  # a burst that came and went
    pts[31] = (pts[31][0], 94.0)
    fc = forecast(pts, 100)
    assert fc.slope_per_s == pytest.approx(0.1, rel=0.02)
    assert fc.dropped >= 2


def test_full_now_and_unknown_maxclients():
    assert describe(forecast(line(31, 1.0, 70, 1.0), 100)) == "full now"
    assert forecast(line(30, 1.0, 10, 1.0), None).seconds_to_full is None


def test_only_the_recent_window_counts():
    old_flat = [(t, 10.0) for t in range(0, 2000, 10)]
    recent = [(2000 + t, 10.0 + t * 0.5) for t in range(0, 60, 2)]
    fc = forecast(old_flat + recent, 1000, window_s=60)
    assert fc.slope_per_s == pytest.approx(0.5, rel=0.02)


def test_far_extrapolation_is_low_confidence():
    fc = forecast(line(30, 1.0, 10, 0.2), 10_000)  # 30 s of data, hours to go
    assert fc.seconds_to_full and fc.seconds_to_full > 3600 and fc.confidence == "low"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e5), st.floats(0, 1e4)), max_size=60), st.integers(1, 20000))
def test_forecast_never_crashes_and_is_never_negative(points, maxclients):
    fc = forecast(points, maxclients)
    assert fc.confidence in ("none", "low", "medium", "high")
    assert fc.seconds_to_full is None or fc.seconds_to_full >= 0
    assert isinstance(describe(fc), str)


# -- alerts -----------------------------------------------------------------------------------------------

def run(ticks, settings=AlertSettings()):
    state, log = AlertState(), []
    for t in ticks:
        state, events = step(state, t, settings)
        log.extend((e.kind, e.alert.name, e.alert.severity) for e in events)
    return state, log


def test_capacity_starts_at_the_warning_line_escalates_and_clears():
    ratios = [0.5, 0.79, 0.8, 0.85, 0.9, 0.95, 0.7]
    state, log = run(Tick(wall=i, ratio=r) for i, r in enumerate(ratios))
    assert log == [("start", "capacity", "warning"), ("change", "capacity", "critical"), ("clear", "capacity", "critical")]


def test_capacity_alert_keeps_its_since():
    state, _ = run([Tick(wall=1, ratio=0.85), Tick(wall=2, ratio=0.86), Tick(wall=3, ratio=0.91)])
    (alert,) = active_alerts(state)
    assert alert.since == 1 and alert.severity == "critical" and alert.value == 0.91


def test_rejections_need_two_ticks_in_a_row():
    _, log = run([Tick(wall=0, rejected_per_s=0), Tick(wall=1, rejected_per_s=3), Tick(wall=2, rejected_per_s=0),
                  Tick(wall=3, rejected_per_s=2)])
    assert log == []
    state, log = run([Tick(wall=0, rejected_per_s=3), Tick(wall=1, rejected_per_s=4)])
    assert log == [("start", "rejections", "critical")]
    assert active_alerts(state)[0].value == 4


def test_unknown_rates_neither_start_nor_clear():
    state, log = run([Tick(wall=0, rejected_per_s=3), Tick(wall=1, rejected_per_s=4), Tick(wall=2),  # restart gap
                      Tick(wall=3, rejected_per_s=5)])
    assert log == [("start", "rejections", "critical")]


def test_churn_learns_its_baseline_and_fires_on_a_spike():
    steady = [Tick(wall=i, new_connections_per_s=20 + (i % 3)) for i in range(30)]
    state, log = run(steady)
    assert log == []  # 20-22/s is this server's normal, well above the floor
    spike = steady + [Tick(wall=30 + i, new_connections_per_s=80) for i in range(3)]
    state, log = run(spike)
    assert log == [("start", "churn", "warning")]
    assert state.churn.mean < 30  # the storm was not learned as normal


def test_churn_floor_keeps_a_quiet_server_quiet():
    ticks = [Tick(wall=i, new_connections_per_s=0) for i in range(10)]
    ticks += [Tick(wall=10 + i, new_connections_per_s=3) for i in range(4)]
    assert run(ticks)[1] == []


def test_blocked_growth_above_baseline():
    ticks = [Tick(wall=i, blocked=2) for i in range(10)] + [Tick(wall=10 + i, blocked=30) for i in range(2)]
    assert run(ticks)[1] == [("start", "blocked_growth", "warning")]


def test_idle_source_needs_idle_connections_and_growth():
    def src(idle, growth):
        return (SourceTrend("127.0.0.66", 40, idle, growth),)

    assert run([Tick(wall=0, sources=src(30, 0.0)), Tick(wall=1, sources=src(0, 5.0))])[1] == []
    state, log = run([Tick(wall=0, sources=src(30, 6.0)), Tick(wall=1), Tick(wall=2, sources=src(31, 0.0))])
    assert log == [("start", "idle_source", "warning"), ("clear", "idle_source", "warning")]


def test_exhaustion_soon_from_the_forecast():
    soon = Forecast(600.0, 0.1, 30, "high", 60.0)
    very_soon = Forecast(120.0, 0.5, 30, "high", 60.0)
    later = Forecast(3600.0, 0.01, 30, "high", 60.0)
    _, log = run([Tick(wall=0, forecast=later), Tick(wall=1, forecast=soon), Tick(wall=2, forecast=very_soon),
                  Tick(wall=3, forecast=Forecast(None, 0.0, 30, "medium", 60.0))])
    assert log == [("start", "exhaustion_soon", "warning"), ("change", "exhaustion_soon", "critical"),
                   ("clear", "exhaustion_soon", "critical")]
    assert run([Tick(wall=0, forecast=soon)], AlertSettings(forecast_alert_s=300))[1] == []


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        AlertSettings(sustain_ticks=0)
    with pytest.raises(ValueError):
        AlertSettings(warning_ratio=0.95, critical_ratio=0.9)


# -- CLIENT LIST budget ----------------------------------------------------------------------------------

from connguard.monitor.watch_budget import ClientListBudget, parse_commandstat  # noqa: E402


def stats(calls: int, usec: int) -> dict:
    return {"commandstats": {"cmdstat_client|list": f"calls={calls},usec={usec},usec_per_call={usec / max(calls, 1):.2f},"
                                                   "rejected_calls=0,failed_calls=0"}}


def test_commandstat_parses_and_6_2_name_is_used():
    assert parse_commandstat("calls=3,usec=120,usec_per_call=40.00") == (3, 120, 40.0)
    budget = ClientListBudget(2.0)
    budget.note(0.0, {"commandstats": {"cmdstat_client": "calls=1,usec=500,usec_per_call=500.00"}}, True)
    assert budget.cost_us == 500


def test_the_budget_spaces_client_list_to_one_percent_of_server_time():
    budget = ClientListBudget(0.5)
    calls, usec, spent, t = 0, 0, 0, 0.0
    while t < 120:
        included = budget.due(t)
        budget.note(t, stats(calls, usec), included)
        if included:  # each CLIENT LIST costs the server 20 ms, as at 10k clients on a busy machine
            calls, usec, spent = calls + 1, usec + 20_000, spent + 0.020
        t += 0.5
    assert spent / 120 <= 0.01
    assert budget.every_s >= 2.0  # 20 ms at <= 1%
    assert spent / 120 >= 0.005  # not starved either


def test_a_cheap_client_list_runs_every_tick_and_a_fixed_spacing_is_kept():
    budget = ClientListBudget(2.0)
    ticks = []
    for i in range(10):
        t = i * 2.0 + (0.01 if i % 2 else -0.01)  # timer jitter
        ticks.append(budget.due(t))
        budget.note(t, stats(i, i * 100), ticks[-1])
    assert all(ticks)
    fixed = ClientListBudget(1.0, fixed_every_s=5.0)
    for t in range(12):
        fixed.note(t, None, fixed.due(t))
    assert fixed.calls == 3  # at 0, 5 and 10 s


# -- the lifecycle ---------------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 400)), min_size=1, max_size=150), st.integers(1, 400),
       st.sampled_from(ForecastTracker.METHODS))
def test_the_tracker_never_crashes_never_goes_negative_and_is_absent_when_unobserved(series, limit, method):
    tracker = ForecastTracker(method=method)
    for i, used in enumerate(series):
        fc = tracker.unobserved() if used is None else tracker.observe(float(i), float(used), limit)
        assert fc.seconds_to_full is None or fc.seconds_to_full >= 0
        if used is None:
            assert fc.seconds_to_full is None and fc.confidence == "none"
        elif used >= limit:
            assert fc.seconds_to_full == 0.0


def test_a_release_withdraws_at_once_and_a_reset_forgets_the_cycle():
    tracker = ForecastTracker()
    for t in range(60):
        fc = tracker.observe(float(t), 10.0 + 2 * t, 1000)
    assert fc.seconds_to_full == pytest.approx((1000 - 128) / 2, rel=0.05)
    assert tracker.observe(60.0, 20.0, 1000).reason == "released"  # the very tick usage fell
    for t in range(61, 120):  # climbing back under the old peak: a cycle
        fc = tracker.observe(float(t), 20.0 + (t - 60), 1000)
    assert fc.seconds_to_full is None and "cycle" in fc.reason
    tracker.reset()  # a restart or our own kill: the old peak says nothing any more
    for t in range(120, 160):
        fc = tracker.observe(float(t), 5.0 + (t - 120), 1000)
    assert fc.seconds_to_full == pytest.approx(1000 - 44, rel=0.05)


def test_the_first_forecast_comes_on_the_tick_the_data_suffices_whatever_the_tick_length():
    # A loaded machine stretches ticks (0.6 s here, not 0.5): the first fit must not wait for the next refit.
    from connguard.analysis.forecast import MIN_SPAN_S, ForecastTracker

    tracker = ForecastTracker()
    t, used = 0.0, 10.0
    first_with_enough = None
    while t < 40:
        fc = tracker.observe(t, used, 300)
        if t >= MIN_SPAN_S and first_with_enough is None:
            first_with_enough = fc
        t, used = t + 0.6, used + 1.2
    assert first_with_enough is not None and first_with_enough.seconds_to_full is not None
