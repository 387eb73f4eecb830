"""Watch's parts without a server: the alert hook never blocks sampling, the screen says what it must."""

from __future__ import annotations

import json
import time

from rich.console import Console

from connguard.analysis.alerts import Alert, AlertEvent
from connguard.analysis.forecast import Forecast
from connguard.monitor.watch_budget import BudgetView
from connguard.monitor.watch_model import Point, SourceRow, WatchFrame
from connguard.monitor.watch_notify import AlertHook
from connguard.monitor.watch_view import clock, render_watch_snapshot


def event(kind: str = "start") -> AlertEvent:
    alert = Alert("capacity", "warning", 1_700_000_000.0, 0.85, "ratio 85% >= 80%")
    return AlertEvent(kind, alert, 1_700_000_001.0)


def test_the_hook_gets_the_alert_as_json_on_stdin(tmp_path):
    out = tmp_path / "got.json"
    hook = AlertHook(f"cat > {out}", "redis://127.0.0.1:6379")
    hook.submit(event())
    hook.close(wait_s=10)
    got = json.loads(out.read_text())
    assert got["schema"] == "connguard.watch.alert/1" and got["event"] == "start"
    assert got["alert"] == {"name": "capacity", "severity": "warning", "since": 1_700_000_000.0, "value": 0.85}
    assert hook.results[-1].exit_code == 0 and hook.last_problem() is None


def test_a_slow_hook_never_blocks_and_is_killed_at_its_timeout():
    hook = AlertHook("sleep 30", "redis://127.0.0.1:6379", timeout_s=0.5)
    for _ in range(3):
        hook.submit(event())
    assert hook.results == []  # submitting is a queue put: none of the 0.5 s runs has ended yet
    deadline = time.monotonic() + 10
    while not hook.results and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hook.results[0].exit_code is None and "timed out" in (hook.results[0].error or "")
    assert "timed out" in (hook.last_problem() or "")
    hook.close(wait_s=0.1)


def frame(**changes) -> WatchFrame:
    base = dict(
        target="redis://127.0.0.1:6379", wall=1_700_000_100.0, monotonic=100.0, reachable=True, refused=False,
        refusing_since=None, failure=None, used=60, maxclients=64, ratio=0.9375, headroom=4, rejected_per_s=0.0,
        new_per_s=1.5, blocked=0, forecast=Forecast(120.0, 0.5, 30, "high", 60.0),
        alerts=(Alert("capacity", "critical", 1_700_000_050.0, 0.9375, "ratio 94% >= 90%"),), events=(),
        causes=None, last_causes=("connection_leak",), last_diagnosis_wall=1_700_000_095.0,
        sources=(SourceRow("127.0.0.66", 50, 48, 30.0, ("orders-worker",), (), 2, True),),
        sources_from="client_list", sources_wall=1_700_000_098.0,
        history=tuple(Point(1_700_000_000.0 + i, 40 + i, 0.0, 1.0, 0, gap=(i == 5)) for i in range(20)),
        restarts=(), budget=BudgetView(2.0, 7.0, 0.0035, 0.01, False, 12), server="redis 7.0.15")
    base.update(changes)
    return WatchFrame(**base)  # type: ignore[arg-type]


def screen(f: WatchFrame) -> str:
    console = Console(width=100, record=True, color_system=None)
    console.print(render_watch_snapshot(f))
    return console.export_text()


def test_the_screen_has_gauge_lines_forecast_alerts_doctor_sources_and_budget():
    text = screen(frame())
    assert "60/64 (94%)" in text and "▲80%" in text and "▲90%" in text
    assert "full in ~2 min at +30.0/min" in text and "confidence high" in text
    assert "CRITICAL capacity" in text and "connection_leak" in text
    assert "127.0.0.66" in text and "+30.0" in text and "*" in text
    assert "CLIENT LIST every 2.0 s" in text and "7.00 ms/call" in text and "2 s old" in text


def test_a_refusing_server_and_a_restart_are_said_plainly():
    text = screen(frame(reachable=False, refused=True, refusing_since=1_700_000_090.0, used_from_census=True,
                        restarts=(1_700_000_005.0,), forecast=Forecast(0.0, 0.0, 30, "high", reason="full now")))
    assert f"REFUSED: waiting for a slot (since {clock(1_700_000_090.0)})" in text
    assert "socket census" in text and "full now" in text
    assert f"restart seen at {clock(1_700_000_005.0)}" in text and "┆" in text


def test_the_sources_table_says_how_many_sources_and_connections_it_leaves_out():
    assert "+7 more sources (23 connections)" in screen(frame(sources_left_out=(7, 23)))
    assert "more source" not in screen(frame())


def test_headroom_leaves_out_watchs_own_slot_but_a_census_does_not():
    assert "headroom 3" in screen(frame())  # 64 - 60 - watch's own slot
    census = frame(reachable=False, refused=True, used=64, headroom=0, used_from_census=True)
    assert "headroom 0" in screen(census)


def test_an_80x24_terminal_gets_a_marked_cut_and_keeps_the_key_line():
    from connguard.monitor.watch_view import ViewState, render

    many = tuple(SourceRow(f"127.0.0.{i}", 10, 5, 0.0, (), (), 0) for i in range(10, 20))
    console = Console(width=80, height=24, record=True, color_system=None)
    console.print(render(frame(sources=many), ViewState(interactive=True, kill_idle_s=300.0)))
    lines = console.export_text().splitlines()
    assert len(lines) == 24
    assert "more lines cut: enlarge the terminal (now 80×24)" in lines[-2]
    assert lines[-1].startswith("keys:") and "[ ] idle threshold" in lines[-1] and "idle > 5 min" in lines[-1]


def test_a_tall_terminal_is_not_cut():
    from connguard.monitor.watch_view import ViewState, render

    console = Console(width=120, height=80, record=True, color_system=None)
    console.print(render(frame(), ViewState(interactive=True)))
    assert "cut" not in console.export_text()
