"""`connguard watch` in a real terminal (tmux): the gauge, the forecast and the capacity alert show during a
leak, Ctrl-C exits 0; on a server pinned at maxclients, a confirmed kill from watch's held slot lets a
second shell's `connguard status` in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from connguard.lab.workloads import Leaker
from connguard.probe.recording import read_recording

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One detached session on a private tmux socket, so no one else's tmux is touched."""

    def __init__(self, command: str, width: int = 150, height: int = 60) -> None:
        self.socket = f"connguard-test-{uuid.uuid4().hex[:8]}"
        env = f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}"
        self._tmux("new-session", "-d", "-s", "w", "-x", str(width), "-y", str(height),
                   f"{env} {command}; echo EXIT=$?; stty -a | grep -o -- '-*icanon'; sleep 60")
        self._tmux("resize-window", "-t", "w", "-x", str(width), "-y", str(height))  # detached: no client sets it

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "w")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "w", *keys)

    def wait_for(self, *texts: str, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(t in screen for t in texts):
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{texts} not on screen within {timeout_s} s:\n{screen}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


def watch_command(url: str, *args: str) -> str:
    return " ".join([sys.executable, "-m", "connguard", "watch", url, *args])


def status(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "connguard", "status", url, "--connect-timeout", "1"],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.slow
def test_the_live_view_shows_gauge_forecast_and_capacity_alert_and_ctrl_c_exits_0(
        default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=60)
    crowd = crowd_for(server)
    crowd.open(30, source="127.0.0.9", name="steady")
    leak = Leaker(crowd, "127.0.0.66", name="orders-worker", every_s=1.0, cap=100, max_duration_s=60)
    term = Tmux(watch_command(server.url, "--interval", "1", "--idle-threshold", "2"))
    try:
        term.wait_for("capacity", "▲80%", "▲90%", timeout_s=20)
        leak.start()
        # 30 held, 1 more a second: over 0.8 from ~18 s, full at ~29 s, forecast from 20 s of data on
        screen = term.wait_for("full in ~", "capacity  since", timeout_s=40)
        assert "forecast" in screen and "/min" in screen and "127.0.0.66" in screen
        term.keys("C-c")
        after = term.wait_for("EXIT=", "icanon", timeout_s=15)
        assert "EXIT=0" in after
        assert "Traceback" not in after
        assert "-icanon" not in after  # the terminal is back in line mode: watch's cbreak mode was undone
    finally:
        leak.stop()
        term.close()


def test_a_confirmed_kill_from_the_held_slot_lets_another_shell_in(default_binary, start_server, crowd_for,
                                                                   tmp_path):
    server = start_server(default_binary, maxclients=16)
    crowd = crowd_for(server)
    record = tmp_path / "incident.jsonl"
    term = Tmux(watch_command(server.url, "--interval", "1", "--idle-threshold", "1", "--record", str(record)))
    try:
        term.wait_for("capacity", timeout_s=20)  # watch holds its slot before the server fills
        pile = crowd.open(20, source="127.0.0.66", name="leaky-worker")  # a static pile: the server is full
        assert len(pile.sockets) == 15 and pile.refused == 5
        refused = status(server.url)
        assert refused.returncode == 2 and "server full" in refused.stderr
        term.wait_for("127.0.0.66", "CRITICAL capacity", timeout_s=20)
        time.sleep(1.5)  # the pile's connections go idle past --idle-threshold 1
        term.keys("x")  # preview the kill of the selected (top) source's idle connections
        screen = term.wait_for("Kill 15 connection(s) from 127.0.0.66", "press y", timeout_s=10)
        assert "leaky-worker" in screen
        assert status(server.url).returncode == 2  # a preview touches nothing
        term.keys("y")
        term.wait_for("killed 15 idle connection(s) from 127.0.0.66", timeout_s=10)
        admitted = status(server.url)
        assert admitted.returncode == 0, admitted.stderr
        assert "OK:" in admitted.stdout
        term.keys("q")
        assert "EXIT=0" in term.wait_for("EXIT=", timeout_s=15)
    finally:
        term.close()
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    (kill,) = [line for line in lines if line["schema"] == "connguard.event/1"]
    assert kill["event"] == "kill" and kill["source"] == "127.0.0.66" and kill["killed"] == 15
    assert len(kill["ids"]) == 15
    observations = read_recording(record)  # the kill line does not get in doctor --replay's way
    assert len(observations) >= 5 and any(o.refused is False for o in observations)


def test_watch_opened_on_a_full_server_at_80x24_waits_in_its_census_view_and_answers_every_key(
        default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=12)
    crowd = crowd_for(server)
    pile = crowd.open(16, source="127.0.0.67", name="pile")  # full before watch starts
    assert pile.refused > 0
    term = Tmux(watch_command(server.url, "--interval", "0.5", "--idle-threshold", "300"), width=80, height=24)
    try:
        screen = term.wait_for("REFUSED: waiting for a slot", "127.0.0.67", timeout_s=20)  # the census view
        assert "Traceback" not in screen and "EXIT=" not in screen
        assert screen.rstrip().splitlines()[-1].startswith("keys:")  # the key line survives 80×24
        assert len(screen.rstrip().splitlines()) <= 24  # nothing scrolled off (a cut is marked: test_watch_units)
        term.keys("x")  # it cannot kill without its own connection: it says so at once, not after 40 s
        term.wait_for("cannot preview a kill yet", "waiting for a slot", timeout_s=5)
        term.keys("]")
        term.wait_for("idle more than 600 s", "(idle > 10 min)", timeout_s=5)
        crowd.close_group(pile)  # slots free: watch takes one
        term.wait_for("capacity", "headroom", timeout_s=20)
        screen = term.wait_for("CLIENT LIST", timeout_s=20)
        assert "REFUSED" not in screen
        term.keys("q")
        assert "EXIT=0" in term.wait_for("EXIT=", timeout_s=15)
    finally:
        term.close()
