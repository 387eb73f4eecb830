"""`connguard demo` end to end, as CI runs it: no TTY, no arguments, exit 0 within a minute, nothing left running."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from connguard.lab.servers import find_binaries

pytestmark = pytest.mark.skipif(not find_binaries(), reason="no server binary")


def server_processes() -> str:
    return subprocess.run(["pgrep", "-af", "valkey-server|redis-server"], capture_output=True, text=True).stdout


@pytest.mark.slow
def test_the_demo_diagnoses_a_leak_and_a_storm_live_and_leaves_nothing_behind() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "connguard", "demo"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90,
        env={**os.environ, "TERM": "dumb", "COLUMNS": "100"},
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "\x1b[" not in out, "no terminal control codes when not on a TTY"
    assert "✓ the doctor named connection_leak" in out
    assert "✓ the doctor named retry_storm, exhausted" in out
    assert "--interval 1 --idle-threshold 2" in out, "the short demo settings are said on screen"
    assert "Act 3: the same storm, through the guard" in out, "the guard act always runs"
    assert "fewer connection attempts" in out
    assert "✓ the server has recovered" in out, "after the storm through the guard the doctor finds it healthy"
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", out)]
    ports = set(re.findall(r"redis://127\.0\.0\.1:(\d+)", out))
    assert pids and ports
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids), "its server is stopped"
    leftover = [line for line in server_processes().splitlines() if any(f"--port {p}" in line for p in ports)]
    assert leftover == [], "no server of the demo's is left running"
    assert not any(os.path.exists(d) for d in re.findall(r"removed (/\S+)", out)), "its temp dir is gone"


def test_ctrl_c_during_the_demo_stops_its_server() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "connguard", "demo"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = ""
    for line in iter(proc.stdout.readline, ""):
        seen += line
        if "orders-worker') opened" in line:  # inside act 1, with the leak live
            break
    match = re.search(r"\(pid (\d+)\)", seen)
    assert match, seen
    pid = int(match.group(1))
    workdir = os.readlink(f"/proc/{pid}/cwd")
    proc.send_signal(2)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "Interrupted" in out
    assert not os.path.exists(f"/proc/{pid}") and not os.path.exists(workdir)
