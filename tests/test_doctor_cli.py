"""`connguard doctor` end to end, as a subprocess: exit codes, the JSON contract, one line on bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import pytest

import doctor_scenarios as ds
from connguard.lab.servers import free_port

BINARIES = ds.binaries_for_tests()
pytestmark = pytest.mark.skipif(not BINARIES, reason="no server binary found")
CONTRACT = {"schema", "target", "status", "reachable", "error", "server", "capacity", "rates", "sources", "findings"}
CAPACITY = {"maxclients", "connected_clients", "connected_slaves", "cluster_connections", "blocked_clients",
            "used", "ratio", "headroom", "fd_limit"}
SOURCE = {"host", "connections", "idle_over_threshold", "max_idle_s", "median_age_s", "names", "libs", "blocked"}


def doctor(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "connguard", "doctor", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.timeout(60)
def test_full_server_is_critical_unreachable_with_sources_from_the_socket_census():
    with ds.full(BINARIES[0]) as live:
        out = doctor(live.url, "--json", "--connect-timeout", "1")
    assert out.returncode == 2, out.stderr
    data = json.loads(out.stdout)
    assert CONTRACT <= data.keys()
    assert data["schema"] == "connguard.doctor/1"
    assert data["status"] == "critical" and data["reachable"] is False and "max" in data["error"]
    assert data["rates"] is None and data["capacity"] is None
    assert data["sources"][0] == {**data["sources"][0], "host": "127.0.0.50", "connections": 20}
    exhausted = data["findings"][0]
    assert exhausted["cause"] == "exhausted" and exhausted["severity"] == "critical"
    assert exhausted["evidence"]["by_host"] == {"127.0.0.50": 20}
    assert any(a["command"] and "--source 127.0.0.50" in a["command"] for a in exhausted["actions"])


@pytest.mark.timeout(60)
def test_fd_limit_json_follows_the_contract_and_exits_warning():
    with ds.fd_limit(BINARIES[0]) as live:
        out = doctor(live.url, "--json", "--interval", "0.5", "--idle-threshold", "2")
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert CONTRACT <= data.keys() and CAPACITY <= data["capacity"].keys()
    assert data["capacity"]["maxclients"] == 96 and data["capacity"]["fd_limit"] == 128
    assert data["rates"]["interval_s"] >= 0.5
    assert data["rates"]["connections_received"] == 0, "the doctor holds one connection and opens no other"
    assert all(SOURCE <= s.keys() for s in data["sources"])
    assert [f["cause"] for f in data["findings"] if f["severity"] != "info"] == ["fd_limit"]
    assert data["server"]["flavor"] == BINARIES[0].flavor and data["reachable"] is True and data["error"] is None


@pytest.mark.timeout(60)
def test_healthy_server_text_report_exits_ok():
    with ds.healthy(BINARIES[0]) as live:
        out = doctor(live.url, "--once", "--idle-threshold", "2", "--top", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("OK: ") and "No connection problems found" in out.stdout
    assert "Top sources" in out.stdout and "(1 other host)" in out.stdout


@pytest.mark.timeout(60)
def test_leak_text_report_has_verdict_numbered_findings_and_commands():
    with ds.leak(BINARIES[-1]) as live:
        out = doctor(live.url, "--interval", "1.5", "--idle-threshold", "2")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("WARNING: ") and "connection_leak" in lines[0]
    assert any(line.startswith("1. WARNING connection_leak") for line in lines)
    assert "$ connguard kill redis://127.0.0.1:" in out.stdout and "CLIENT KILL ID" in out.stdout


def test_bad_url_exits_unknown_with_one_line():
    out = doctor("http://example.com")
    assert out.returncode == 3 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "bad target" in out.stderr


def test_refused_exits_unknown_and_json_says_unknown():
    out = doctor(f"redis://127.0.0.1:{free_port()}", "--json", "--once")
    assert out.returncode == 3
    data = json.loads(out.stdout)
    assert data["status"] == "unknown" and data["reachable"] is False and "refused" in data["error"]
    assert CONTRACT <= data.keys()


@pytest.mark.timeout(60)
def test_wrong_password_exits_unknown_and_never_prints_the_password(start_server):
    server = start_server(BINARIES[0], password="s3cret-pw")
    out = doctor(f"redis://:wrong-pw@127.0.0.1:{server.port}", "--json", "--once")
    assert out.returncode == 3
    assert "wrong-pw" not in out.stdout + out.stderr
    assert json.loads(out.stdout)["status"] == "unknown"
    text = doctor(f"redis://:wrong-pw@127.0.0.1:{server.port}", "--once")
    assert text.returncode == 3 and len(text.stderr.strip().splitlines()) == 1 and "auth" in text.stderr


def test_a_port_that_is_not_redis_exits_unknown():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def answer() -> None:
        for _ in range(4):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        out = doctor(f"redis://127.0.0.1:{listener.getsockname()[1]}", "--once", "--connect-timeout", "2")
    finally:
        listener.close()
    assert out.returncode == 3 and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, flag", [
    (["--once", "--record", "x.jsonl"], "--record"),
    (["--replay", "x.jsonl"], "--fleet"),
])
def test_record_and_replay_do_not_go_with_a_fleet(tmp_path, args, flag):  # type: ignore[no-untyped-def]
    fleet = tmp_path / "fleet.txt"
    fleet.write_text(f"redis://127.0.0.1:{free_port()}\n")
    out = doctor("--fleet", str(fleet), *[str(tmp_path / a) if a.endswith(".jsonl") else a for a in args])
    assert out.returncode == 3 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and flag in out.stderr
    assert not (tmp_path / "x.jsonl").exists()  # nothing recorded, nothing observed
