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


def test_when_the_doctor_got_in_only_after_refusals_its_commands_wait_for_a_slot():
    """The doctor's own slot frees when it leaves, and a storm frees one now and then: connguard's commands
    wait for it with jittered backoff; redis-cli, which does not, is not offered."""
    import inspect

    from connguard.analysis.diagnosis import DoctorSettings, diagnose
    from connguard.probe import RawCapture, build_snapshot

    lines = [f"id={i} addr=10.0.0.7:{20000 + i} fd={i + 9} name=orders age={400 + i * 300} idle={395 + i * 300} "
             f"flags=N db=0 sub=0 psub=0 multi=-1 cmd=get user=default" for i in range(90)]
    lines += [f"id={500 + i} addr=10.0.0.8:{30000 + i} fd={600 + i} name=web age=90000 idle=0 flags=N db=0 sub=0 "
              f"psub=0 multi=-1 cmd=get user=default" for i in range(9)]
    own = "id=999 addr=10.9.9.9:1 fd=5 name=connguard age=1 idle=0 flags=N db=0 sub=0 psub=0 multi=-1 cmd=client|list"
    info = ("# Server\r\nredis_version:7.2.4\r\nprocess_id:77\r\ntcp_port:6379\r\n# Clients\r\nconnected_clients:100\r\n"
            "maxclients:100\r\nblocked_clients:0\r\n# Stats\r\ntotal_connections_received:500\r\n"
            "rejected_connections:40\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n")
    snap = build_snapshot(RawCapture(1000.0, info, 100, "\n".join(lines + [own])), own_client_id=999,
                          observer_connections=1)
    settings = DoctorSettings(interval_s=5, idle_threshold_s=300)
    if list(inspect.signature(diagnose).parameters)[0] == "window":
        from connguard.target import parse_target
        diag = diagnose([snap], settings, parse_target("redis://127.0.0.1:6379", env={}), refused_us=3)
    else:
        diag = diagnose(snap, None, settings, "redis://127.0.0.1:6379", refused_us=3)
    assert diag.findings[0].cause == "exhausted" and "connection_leak" in diag.causes
    commands = [a.command for f in diag.findings for a in f.actions if a.command and not is_code(a.command)]
    assert commands and not [c for c in commands if "redis-cli" in c], commands
    kills = [c for c in commands if c.startswith("connguard kill")]
    assert kills and all("--connect-timeout 30" in c for c in kills)
    assert any(c.startswith("connguard config") and "--timeout" in c for c in commands)
