"""`connguard watch --json` against real servers: a leak is forecast and alerted on, a storm is seen as
rejections and churn (our own reconnects are not churn), a restart leaves no negative rates, a full server
does not stop the lines."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import redis

from connguard.lab.scenarios import run_scenario
from connguard.lab.servers import ServerProcess
from connguard.lab.workloads import Leaker

RATES = ("rejected_per_s", "connections_received_per_s")
FIELDS = {"schema", "ts", "target", "reachable", "used", "maxclients", "ratio", "headroom", "rejected_per_s",
          "connections_received_per_s", "blocked", "forecast", "alerts", "causes"}


class WatchProcess:
    """`connguard watch --json` in the background; its lines, parsed, with the time each arrived."""

    def __init__(self, url: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "connguard", "watch", url, "--json", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        self.arrived: list[float] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))
            self.arrived.append(time.monotonic())

    def wait_for(self, predicate, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if predicate(line):
                    return line
            seen = len(self.lines)
            time.sleep(0.1)
        raise AssertionError(f"no matching line in {timeout_s} s; last: {self.lines[-1:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        rc = self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        return rc

    def finish(self, timeout_s: float) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=5)
        return rc


def names(line: dict) -> set[str]:
    return {a["name"] for a in line["alerts"]}


@pytest.mark.slow
def test_a_steady_leak_is_forecast_within_a_quarter_and_capacity_alerts_at_the_line(
        default_binary, start_server, crowd_for, tmp_path):
    server = start_server(default_binary, maxclients=72)
    crowd = crowd_for(server)
    crowd.open(4, source="127.0.0.9", name="steady")
    hook_log = tmp_path / "alerts.jsonl"
    watch = WatchProcess(server.url, "--interval", "1", "--idle-threshold", "2",
                         "--alert-cmd", f"cat >> {hook_log}; echo >> {hook_log}")
    try:
        watch.wait_for(lambda line: True, 15)
        leak = Leaker(crowd, "127.0.0.66", name="orders-worker", every_s=0.5, cap=100, max_duration_s=60)
        leak.start()  # 2 connections a second, steady, toward maxclients 72
        full = watch.wait_for(lambda line: line["headroom"] is not None and line["headroom"] <= 1, 60)
        leak.stop()
    finally:
        watch.stop()
    lines = watch.lines
    assert all(set(line) == FIELDS and line["schema"] == "connguard.watch/1" for line in lines)
    filled_at = full["ts"]  # the server refuses others once used + watch's own slot reaches maxclients
    judged = [line for line in lines
              if line["forecast"]["seconds_to_full"] is not None and filled_at - line["ts"] >= 8]
    assert judged, "the forecast never spoke while there was time to act"
    for line in judged:
        actual = filled_at - line["ts"]
        predicted = line["forecast"]["seconds_to_full"]
        assert abs(predicted - actual) <= 0.25 * actual, (line["ts"], predicted, actual)
        assert line["forecast"]["points"] >= 5
    assert 1.6 <= judged[0]["forecast"]["slope_per_s"] <= 2.4
    # capacity starts on the first line at or above 0.8, not before
    first_alert = next(i for i, line in enumerate(lines) if "capacity" in names(line))
    assert lines[first_alert]["ratio"] >= 0.8
    assert all(line["ratio"] < 0.8 for line in lines[:first_alert])
    assert any("idle_source" in names(line) for line in lines)
    assert any(line["causes"] and "connection_leak" in line["causes"] for line in lines)
    # the pager hook got the start of capacity as JSON on stdin
    events = [json.loads(chunk) for chunk in hook_log.read_text().split("\n") if chunk.strip()]
    assert any(e["event"] == "start" and e["alert"]["name"] == "capacity" for e in events)
    assert all(set(e["alert"]) == {"name", "severity", "since", "value"} for e in events)


def test_a_retry_storm_fires_rejections_and_churn(default_binary, start_server):
    server = start_server(default_binary, maxclients=64)
    watch = WatchProcess(server.url, "--interval", "0.5")
    try:
        watch.wait_for(lambda line: len(watch.lines) >= 7, 20)  # the churn baseline learns a quiet server first
        quiet = list(watch.lines)
        with run_scenario("retry_storm", url=server.url, log=lambda _line: None, max_duration_s=30):
            storm = watch.wait_for(lambda line: {"rejections", "churn"} <= names(line), 20)
    finally:
        watch.stop()
    assert all(line["connections_received_per_s"] == 0 for line in quiet[1:])
    assert storm["rejected_per_s"] > 0 and storm["connections_received_per_s"] > 5
    assert all(line[r] is None or line[r] >= 0 for line in watch.lines for r in RATES)


def test_our_own_reconnects_are_not_churn(default_binary, start_server):
    server = start_server(default_binary, maxclients=50)
    killer = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    watch = WatchProcess(server.url, "--interval", "0.5")
    try:
        watch.wait_for(lambda line: True, 15)
        kills = 0
        for _ in range(4):  # CLIENT KILL watch's held connection: it reconnects, the server counts a connection
            for client in killer.client_list():
                if client["name"] == "connguard":
                    kills += killer.client_kill_filter(_id=client["id"])
            time.sleep(1.2)
        seen = len(watch.lines)
        watch.wait_for(lambda line: len(watch.lines) >= seen + 2, 10)
        received = int(killer.info("stats")["total_connections_received"])
    finally:
        watch.stop()
        killer.close()
    assert kills >= 3 and received >= kills + 2  # the server did count watch's reconnects...
    assert all(line["connections_received_per_s"] in (0, None) for line in watch.lines)  # ...watch does not
    assert all(line["reachable"] for line in watch.lines[-2:])


def test_a_restart_leaves_no_negative_rates_and_sampling_resumes(default_binary, crowd_for):
    server = ServerProcess(default_binary, maxclients=100).start()
    port = server.port
    restarted = None
    crowd = crowd_for(server)
    crowd.open(20, source="127.0.0.12")
    watch = WatchProcess(server.url, "--interval", "0.5")
    try:
        watch.wait_for(lambda line: len(watch.lines) >= 4, 15)
        server.stop()
        time.sleep(1.0)
        restarted = ServerProcess(default_binary, maxclients=100, port=port).start()
        back = watch.wait_for(lambda line: line["reachable"] and line["used"] == 0 and line["ts"] > time.time() - 5,
                              20)
        watch.wait_for(lambda line: line["ts"] > back["ts"] + 1, 10)
    finally:
        watch.stop()
        if restarted is not None:
            restarted.stop()
        server.stop()
    # the first tick after the restart has no rates (its counters started again from zero)
    assert any(line["reachable"] and line["rejected_per_s"] is None for line in watch.lines[1:])
    assert all(line[r] is None or line[r] >= 0 for line in watch.lines for r in RATES)
    after = [line for line in watch.lines if line["ts"] > back["ts"]]
    assert after and all(line["reachable"] and line["rejected_per_s"] is not None for line in after)


@pytest.mark.slow
def test_a_full_server_does_not_stop_the_lines(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=12)
    crowd = crowd_for(server)
    killer = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    killer.ping()
    stop = threading.Event()
    watch = WatchProcess(server.url, "--interval", "0.5", "--connect-timeout", "1")
    try:
        watch.wait_for(lambda line: True, 15)
        crowd.open(10, source="127.0.0.5")  # full now; watch still holds its slot
        stop = threading.Event()

        def knock() -> None:  # a client that keeps trying, refused every time
            while not stop.wait(0.2):
                crowd.open(1, source="127.0.0.6")

        threading.Thread(target=knock, daemon=True).start()
        watch.wait_for(lambda line: "rejections" in names(line) and line["reachable"], 15)
        for client in killer.client_list():  # now lose the held slot: watch can no longer get in
            if client["name"] == "connguard":
                killer.client_kill_filter(_id=client["id"])
        refused = watch.wait_for(lambda line: not line["reachable"], 15)
        count = len(watch.lines)
        watch.wait_for(lambda line: len(watch.lines) >= count + 3, 20)
    finally:
        stop.set()
        watch.stop()
        killer.close()
    assert refused["used"] is not None and refused["used"] >= 10  # from this host's socket census
    assert "capacity" in names(refused)
    assert refused["forecast"]["seconds_to_full"] == 0


def test_bad_input_is_one_line_and_exit_3():
    run = lambda *args: subprocess.run([sys.executable, "-m", "connguard", "watch", *args], capture_output=True,
                                       text=True, timeout=30)
    for args in (["--interval", "0"], ["--interval", "-1"], ["--interval", "nan"], ["--count", "0"]):
        done = run(*args)
        assert done.returncode == 3 and "Traceback" not in done.stderr, args
    done = run("redis://127.0.0.1:1", "--count", "1")
    assert done.returncode == 3 and done.stderr.strip().count("\n") == 0 and "unreachable" in done.stderr
    done = run("ftp://x", "--count", "1")
    assert done.returncode == 3 and "bad target" in done.stderr and done.stdout == ""
