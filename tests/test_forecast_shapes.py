"""The forecast's lifecycle over usage shapes recorded on a real server (tests/testdata/windows, recorded by
tests/window_traces.py on Redis 7.0, maxclients 300), the same through the LiveWindow, `watch`'s model and
the exporter's target state. No server needed."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from forecast_readers import READERS, Seen
from connguard.analysis.forecast import WINDOW_S
from connguard.probe.recording import read_recording

TRACES = Path(__file__).parent / "testdata" / "windows"
ACCURACY = 0.25  # the bar: within ±25 % from the first 20 s of a steady leak


@lru_cache(maxsize=None)
def seen(shape: str, reader: str) -> tuple[Seen, ...]:
    return tuple(READERS[reader](read_recording(TRACES / f"{shape}.jsonl")))


def rising_from(ticks: tuple[Seen, ...]) -> Seen:
    return next(x for x in ticks if x.used)


def first_fall(ticks: tuple[Seen, ...], by: int = 10) -> float:
    """When usage first fell `by` below its highest so far (a release, the sawtooth's first fall, a restart)."""
    top = 0
    for x in ticks:
        if x.used is not None and x.used < top - by:
            return x.t
        top = max(top, x.used or 0)
    raise AssertionError("no fall in the trace")


def assert_withdrawn_from(ticks: tuple[Seen, ...], t: float) -> None:
    """No forecast and (in watch) no exhaustion_soon from `t` to the end of the trace."""
    assert all(x.seconds is None and not x.exhaustion_alert for x in ticks if x.t >= t)


def assert_accurate(ticks: tuple[Seen, ...], start: Seen, rate: float, limit: int, upto: float | None = None) -> None:
    late = [x for x in ticks if x.t - start.t >= 20 and x.used is not None and (upto is None or x.t < upto)]
    assert late, "the trace has ticks 20 s into the leak"
    for x in late:
        truth = (limit - x.used) / rate
        assert x.seconds is not None, f"no forecast {x.t - start.t:.0f} s into a steady leak"
        assert abs(x.seconds - truth) <= ACCURACY * truth, (x.t - start.t, x.seconds, truth)


READER_NAMES = sorted(READERS)
LIMIT = 299  # maxclients 300 less connguard's own connection


@pytest.mark.parametrize("reader", READER_NAMES)
def test_a_steady_leak_is_forecast_within_25_percent_from_its_first_20_seconds(reader):
    ticks = seen("steady_leak", reader)
    start, end = rising_from(ticks), ticks[-1]
    rate = (end.used - start.used) / (end.t - start.t)
    assert rate == pytest.approx(2.0, rel=0.1), "the trace leaks 2 connections a second"
    assert_accurate(ticks, start, rate, LIMIT)


@pytest.mark.parametrize("reader", READER_NAMES)
def test_the_forecast_counts_down_between_fits(reader):
    given = [x for x in seen("steady_leak", reader) if x.seconds is not None]
    assert len(given) > 30
    # Between two refits (every 5 s) it falls by exactly the time elapsed: a countdown, not a new guess ...
    steps = list(zip(given, given[1:]))
    exact = sum(1 for a, b in steps if abs((a.seconds - b.seconds) - (b.t - a.t)) < 1e-6)
    assert exact >= len(steps) // 2
    # ... and a refit moves it by a little only (the leak's jitter), never back up to where it was.
    for a, b in steps:
        assert abs(b.seconds - (a.seconds - (b.t - a.t))) <= 0.05 * a.seconds
    assert given[-1].seconds < given[0].seconds - 0.8 * (given[-1].t - given[0].t)


@pytest.mark.parametrize("reader", READER_NAMES)
def test_a_plateau_withdraws_the_forecast_within_half_its_fit_window(reader):
    ticks = seen("plateau", reader)
    top = max(x.used for x in ticks if x.used is not None)
    began = next(x.t for x in ticks if x.used is not None and x.used >= top)
    last_given = max(x.t for x in ticks if x.seconds is not None)
    assert last_given - began < WINDOW_S / 2
    assert last_given - began < 15, f"withdrawn {last_given - began:.0f} s into the plateau"
    if reader == "watch":
        assert not any(x.exhaustion_alert for x in ticks if x.t > last_given + 1)


@pytest.mark.parametrize("reader", READER_NAMES)
def test_a_release_withdraws_the_forecast_at_once(reader):
    ticks = seen("release", reader)
    released = first_fall(ticks)
    before = [x for x in ticks if x.t < released]
    assert before[-1].seconds is not None, "the leak before the release was forecast"
    assert_withdrawn_from(ticks, released)


@pytest.mark.parametrize("reader", READER_NAMES)
def test_a_sawtooth_below_the_limit_raises_no_alert_after_its_first_rise(reader):
    ticks = seen("sawtooth", reader)
    assert max(x.used for x in ticks if x.used is not None) < 0.7 * LIMIT
    assert_withdrawn_from(ticks, first_fall(ticks))


@pytest.mark.parametrize("reader", READER_NAMES)
def test_a_step_is_not_a_trend(reader):
    ticks = seen("step", reader)
    stepped = next(b.t for a, b in zip(ticks, ticks[1:]) if a.used is not None and b.used - a.used > 50)
    assert all(x.seconds is None for x in ticks if x.t >= stepped)


@pytest.mark.parametrize("reader", READER_NAMES)
def test_a_restart_resets_the_forecast(reader):
    ticks = seen("restart", reader)
    restarted = first_fall(ticks)
    assert any(x.seconds is not None for x in ticks if x.t < restarted)
    after = [x for x in ticks if x.t >= restarted]
    assert all(x.seconds is None for x in after if x.t - restarted < 15), "nothing from before the restart is kept"
    start, end = after[0], after[-1]
    assert_accurate(tuple(after), start, (end.used - start.used) / (end.t - start.t), LIMIT)


@pytest.mark.parametrize("reader", READER_NAMES)
def test_no_forecast_while_the_server_is_down_and_the_exporter_never_says_0(reader):
    ticks = seen("server_down", reader)
    down = [x for x in ticks if x.used is None]
    assert len(down) >= 5, "the trace has an outage"
    assert all(x.seconds is None for x in down)
    if reader == "exporter":
        assert all(x.exported is None for x in down), "no value, never 0 or a stale number, while down"
    back = next(x.t for x in ticks if x.used is not None and x.t > down[-1].t)
    assert all(x.seconds is None for x in ticks if back <= x.t < back + 15), "the server came back empty"


@pytest.mark.parametrize("shape", ["steady_leak", "plateau", "release", "sawtooth", "step", "restart", "server_down"])
def test_watch_and_the_exporter_give_the_windows_forecast(shape):
    window, watch, exporter = (seen(shape, r) for r in ("window", "watch", "exporter"))
    assert [x.seconds for x in watch] == [x.seconds for x in window]
    assert [x.seconds for x in exporter] == [x.seconds for x in window]


def test_the_doctors_window_gives_the_same_forecast_as_live():
    observations = read_recording(TRACES / "steady_leak.jsonl")
    from connguard.analysis.window import Window

    window = Window.of([o.snapshot for o in observations if o.snapshot is not None])
    assert window.forecast().seconds_to_full == seen("steady_leak", "window")[-1].seconds
