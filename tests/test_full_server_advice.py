"""Every action the doctor prints for a server that refuses it can be run against that server while it
refuses: each printed command is run, here, against the full lab server (a static pile: nothing frees)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest
import redis


def connguard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "connguard", *args], capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def run_printed(command: str) -> subprocess.CompletedProcess[str]:
    """Run one printed command as a user would paste it; `connguard` is this checkout's."""
    if command.startswith("connguard "):
        return connguard(*shlex.split(command)[1:])
    return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)


def is_code(command: str) -> bool:
    """A code change for the application (Python), not a command to run against the server."""
    return command.startswith(("from ", "import ", "r = ", "redis."))


@pytest.mark.skipif(not shutil.which("ss") or os.geteuid() != 0, reason="needs ss (iproute2) and root")
def test_every_command_printed_for_a_full_server_runs_while_it_is_full(full_server):
    server, monitor, _crowd, _leak = full_server
    proc = connguard("doctor", server.url, "--json", "--interval", "1", "--connect-timeout", "1")
    assert proc.returncode == 2, proc.stderr
    data = json.loads(proc.stdout)
    assert data["reachable"] is False and data["findings"][0]["cause"] == "exhausted"
    assert "connguard watch" not in proc.stdout, "no command that does not exist"
    actions = [a for f in data["findings"] for a in f["actions"]]
    commands = [a["command"] for a in actions if a["command"] and not is_code(a["command"])]
    assert commands, "a full server gets at least one command that works now"
    assert not [c for c in commands if "redis-cli" in c or c.startswith("for id")], \
        "redis-cli needs a connection the full server refuses"
    sockets = [c for c in commands if "--sockets" in c]
    assert sockets and sockets[0] == f"connguard kill {server.url} --sockets --source 127.0.0.5"
    for command in commands:
        ran = run_printed(command)
        assert ran.returncode == 0, (command, ran.returncode, ran.stdout, ran.stderr)
        assert "server full" not in ran.stderr
    # Nothing above changed the server (every changing step is a dry run): it is still full.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=server.port, socket_timeout=2).ping()
    # The first action, with --yes, frees the leak's slots; the other host's connection is untouched.
    freed = run_printed(sockets[0] + " --yes")
    assert freed.returncode == 0 and "Aborted 9 TCP connection(s) from 127.0.0.5" in freed.stdout, freed.stdout
    fresh = redis.Redis(port=server.port, socket_timeout=2)
    assert fresh.ping() and monitor.ping()
    fresh.close()
    # And once slots are free, the raise the advice describes for later runs too.
    later = next(a["title"] for a in actions if "--maxclients" in a["title"])
    raise_cmd = later[later.index("`") + 1: later.rindex("`")]
    assert raise_cmd.startswith(f"connguard config {server.url} --maxclients ")
    assert run_printed(raise_cmd).returncode == 0


def test_the_text_report_of_a_full_server_offers_no_command_that_cannot_work(full_server):
    server, *_ = full_server
    proc = connguard("doctor", server.url, "--once", "--connect-timeout", "1")
    assert proc.returncode == 2
    assert "connguard watch" not in proc.stdout and "redis-cli" not in proc.stdout
    assert f"connguard kill {server.url} --sockets --source 127.0.0.5" in proc.stdout
    assert "Next time" in proc.stdout
