"""`connguard status` on real servers: true usage counts replicas, and the exit code follows the thresholds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import redis

from connguard.lab.servers import ServerProcess


def run_status(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "REDISCLI_AUTH"}}
    clean.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "connguard", "status", *args],
                          capture_output=True, text=True, env=clean, timeout=timeout)
    assert "Traceback" not in proc.stderr
    return proc


def status_json(*args: str, **kwargs) -> tuple[int, dict]:
    proc = run_status(*args, "--json", **kwargs)
    return proc.returncode, json.loads(proc.stdout)


def wait_for_replicas(admin: redis.Redis, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while admin.info("replication")["connected_slaves"] < count:
        assert time.monotonic() < deadline, f"{count} replicas did not connect within {timeout_s}s"
        time.sleep(0.05)


def test_replicas_count_against_maxclients(binary, start_server, crowd_for):
    """The acceptance case: maxclients 100, 80 client connections, 4 real replicas -> used 84, WARNING."""
    primary = start_server(binary, maxclients=100)
    for _ in range(4):
        start_server(binary, replicaof=("127.0.0.1", primary.port))
    # 80 client connections: 79 crowd + this admin connection. connguard does not count its own probe.
    with redis.Redis(port=primary.port, protocol=2) as admin:
        wait_for_replicas(admin, 4)
        group = crowd_for(primary).open(79, source="127.0.0.2", name="orders-worker")
        assert len(group.sockets) == 79
        code, out = status_json(primary.url)
        assert code == 1 and out["status"] == "warning"
        assert (out["used"], out["ratio"], out["maxclients"]) == (84, 0.84, 100)
        assert (out["connected_clients"], out["connected_slaves"], out["cluster_connections"]) == (80, 4, 0)
        assert (out["headroom"], out["maxclients_source"], out["reachable"]) == (16, "config", True)
        assert out["server"] == {"flavor": binary.flavor, "version": binary.version, "role": "master"}
        # Thresholds are the operator's: the same 0.84 is OK under 0.85 and CRITICAL at 0.84.
        assert run_status(primary.url, "--warning", "0.85", "--critical", "0.95").returncode == 0
        assert run_status(primary.url, "--warning", "0.5", "--critical", "0.84").returncode == 2


def test_a_healthy_server_is_ok_in_one_line(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=100)
    crowd_for(server).open(5, source="127.0.0.3")
    proc = run_status(server.url)
    assert proc.returncode == 0
    line = proc.stdout.strip()
    assert "\n" not in line and line.startswith("OK: ") and "5/100 connections" in line


def test_ninety_percent_is_critical(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=20)
    crowd_for(server).open(18, source="127.0.0.4")  # 18/20; connguard's own probe is not counted
    code, out = status_json(server.url)
    assert (code, out["status"], out["used"], out["ratio"]) == (2, "critical", 18, 0.9)
    assert run_status(server.url).stdout.startswith("CRITICAL: ")


def test_an_acl_user_without_config_gets_maxclients_from_info(binary, start_server):
    server = start_server(binary, maxclients=100)
    with redis.Redis(port=server.port, protocol=2) as admin:
        admin.execute_command("ACL", "SETUSER", "watcher", "on", ">w4tch-pass", "-@all")
        for rule in ("+info", "+client|list", "+ping", "+client|setname", "+client|setinfo"):
            try:
                admin.execute_command("ACL", "SETUSER", "watcher", rule)
            except redis.ResponseError:  # CLIENT SETINFO does not exist before 7.2
                pass
    code, out = status_json(f"redis://watcher:w4tch-pass@127.0.0.1:{server.port}")
    assert "w4tch-pass" not in json.dumps(out)
    assert code == 0 and (out["maxclients"], out["maxclients_source"]) == (100, "info")
    assert any("CONFIG GET maxclients denied" in x for x in out["limitations"])
    assert out["target"] == f"redis://watcher:***@127.0.0.1:{server.port}"


def test_password_from_rediscli_auth_and_never_printed(default_binary, start_server):
    server: ServerProcess = start_server(default_binary, password="pa55-from-env")
    proc = run_status(f"redis://127.0.0.1:{server.port}", "--json", env={"REDISCLI_AUTH": "pa55-from-env"})
    assert proc.returncode == 0 and json.loads(proc.stdout)["used"] == 0
    assert "pa55-from-env" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, words", [
    (("--warning", "0.95", "--critical", "0.5"), "thresholds"), (("--warning", "-1"), "--warning"),
    (("--critical", "2"), "--critical"), (("--warning", "nan"), "not a finite number"),
    (("--connect-timeout", "nan"), "not a finite number"), (("--connect-timeout", "-1"), "out of range"),
    (("--connect-timeout", "inf"), "not a finite number"),
])
def test_thresholds_that_make_no_sense_are_refused_in_one_line(args, words):
    proc = run_status("redis://127.0.0.1:1", *args)
    assert proc.returncode == 3 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr
