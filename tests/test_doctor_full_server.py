"""A server that stays full, seen from its host: a retry storm replaces its connections, a pile keeps them.

The doctor cannot get in, so it compares two socket censuses of /proc/net/tcp a moment apart. The pure
tests use synthetic /proc text; the live ones fill real servers and run `python -m connguard doctor`."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time

from connguard.analysis.diagnosis import DoctorSettings, diagnose_unreachable
from connguard.lab.crowd import admit
from connguard.probe.census import census_from_tables, compare_censuses
from connguard.probe.model import HostFacts

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
SERVER = "0100007F:18EB"  # 127.0.0.1:6379
TARGET = "redis://127.0.0.1:6379"
SETTINGS = DoctorSettings(interval_s=2, idle_threshold_s=300)
ERROR = "redis://127.0.0.1:6379 is at maxclients and refused all 9 connection attempts over 2s"


def ip_hex(ip: str) -> str:
    return "".join(f"{int(part):02X}" for part in reversed(ip.split(".")))


def line(local: str, remote: str, state: str, inode: int = 1000) -> str:
    return f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000 0 0 {inode} 1\n"


def peer(ip: str, port: int) -> str:
    return f"{ip_hex(ip)}:{port:04X}"


def table(established: list[tuple[str, int]], *, time_wait: list[tuple[str, int]] = (),
          client_side_time_wait: list[tuple[str, int]] = (), unaccepted: list[tuple[str, int]] = ()) -> str:
    rows = [line(SERVER, "00000000:0000", "0A")]
    rows += [line(SERVER, peer(ip, port), "01", inode=5000 + i) for i, (ip, port) in enumerate(established)]
    rows += [line(SERVER, peer(ip, port), "01", inode=0) for ip, port in unaccepted]
    rows += [line(SERVER, peer(ip, port), "06", inode=0) for ip, port in time_wait]
    # A client on this host that hung up first keeps TIME_WAIT on its own end: local = client, remote = server.
    rows += [line(peer(ip, port), SERVER, "06", inode=0) for ip, port in client_side_time_wait]
    return HEADER + "".join(rows)


def conns(host: str, ports: range) -> list[tuple[str, int]]:
    return [(host, p) for p in ports]


# -- pure: the census keeps identities, and two censuses compare -----------------------------------

def test_a_census_keeps_each_connection_its_accept_queue_and_the_time_wait_on_both_sides():
    text = table(conns("127.0.0.2", range(40000, 40003)), unaccepted=[("127.0.0.3", 41000)],
                 time_wait=[("127.0.0.2", 39000)], client_side_time_wait=[("127.0.0.4", 42000)])
    # The same port at another server (10.0.0.9:6379) is an outbound connection, not this server's.
    text += line(peer("127.0.0.5", 43000), peer("10.0.0.9", 6379), "06", inode=0)
    census = census_from_tables([text], 6379, taken_at=10.0)
    assert dict(census.by_host) == {"127.0.0.2": 3, "127.0.0.3": 1} and census.total == 4
    assert census.unaccepted == 1 and census.accepted == 3, "a socket still in the accept queue holds no slot"
    assert ("127.0.0.2", 40001) in census.peers
    assert census.time_wait_peers == {("127.0.0.2", 39000), ("127.0.0.4", 42000)} and census.time_wait == 2


def test_two_censuses_say_per_host_what_is_new_what_is_gone_and_what_closed():
    before = census_from_tables([table(conns("127.0.0.2", range(40000, 40010)) + conns("127.0.0.7", range(100, 105)),
                                       time_wait=[("127.0.0.2", 30000)])], 6379, taken_at=100.0)
    # 127.0.0.2 replaced 6 of its 10 connections and left 4 closed ones in TIME_WAIT; 127.0.0.7 kept all.
    after = census_from_tables([table(conns("127.0.0.2", range(40006, 40016)) + conns("127.0.0.7", range(100, 105)),
                                      time_wait=[("127.0.0.2", 30000)],
                                      client_side_time_wait=conns("127.0.0.2", range(40000, 40004)))],
                               6379, taken_at=102.0)
    t = compare_censuses(before, after)
    assert t.window_s == 2.0 and t.before == t.after == 15
    storm, still = t.hosts
    assert (storm.host, storm.connections, storm.new, storm.gone, storm.closed) == ("127.0.0.2", 10, 6, 6, 4)
    assert (still.host, still.new, still.gone, still.closed) == ("127.0.0.7", 0, 0, 0)
    assert t.new == 6 and t.replaced_ratio == 0.4 and t.new_per_s == 3.0
    assert t.closed == 4 and t.time_wait_growth == 4


def test_a_census_of_the_same_sockets_has_no_turnover_and_no_rate_without_a_window():
    text = table(conns("127.0.0.2", range(40000, 40010)))
    a, b = census_from_tables([text], 6379), census_from_tables([text], 6379)
    t = compare_censuses(a, b)
    assert t.new == t.gone == t.closed == 0 and t.replaced_ratio == 0.0
    assert t.new_per_s is None, "no timestamps, no window: counts but no rate"


# -- pure: the verdict from the two censuses ------------------------------------------------------

def _pile(fd_limit: int = 65536):
    text = table(conns("10.0.0.7", range(1000, 1700)) + conns("10.0.0.8", range(2000, 2300)))
    before, after = census_from_tables([text], 6379, taken_at=0.0), census_from_tables([text], 6379, taken_at=2.0)
    return after, compare_censuses(before, after), HostFacts(77, fd_limit, fd_limit, 1040)


def test_a_full_server_whose_connections_never_change_is_a_still_pile_with_its_top_host_named():
    census, turnover, host = _pile()
    diag = diagnose_unreachable(TARGET, SETTINGS, ERROR, full=True, census=census, host=host, turnover=turnover)
    assert diag.causes == ("exhausted",) and diag.status == "critical" and not diag.reachable
    exhausted = diag.finding("exhausted")
    assert exhausted.evidence["verdict"] == "static" and exhausted.hosts[0] == "10.0.0.7"
    assert "long-lived connections" in exhausted.summary and "10.0.0.7 (700)" in exhausted.summary
    assert "maxclients is about 1000" in exhausted.summary and exhausted.evidence["maxclients_estimate"] == 1000
    # The first thing to do is free slots at the top source, then raise the limit within the fd limit.
    assert "10.0.0.7" in exhausted.actions[0].title
    # CONFIG SET needs a connection the full server refuses: advice for once slots are free, not a command now.
    raise_limit = next(a for a in exhausted.actions if "--maxclients 1300 --yes" in a.title)
    assert raise_limit.command is None and "65536 - 32 = 65504" in raise_limit.title
    data = diag.to_dict()
    assert [(s["host"], s["connections"], s["new_connections"]) for s in data["sources"]] == [
        ("10.0.0.7", 700, 0), ("10.0.0.8", 300, 0)]
    assert data["sources"][0]["idle_over_threshold"] is None, "what the census cannot know stays null"


def test_a_still_pile_at_the_fd_limit_says_to_raise_the_open_files_limit_first():
    census, turnover, host = _pile(fd_limit=1032)
    diag = diagnose_unreachable(TARGET, SETTINGS, ERROR, full=True, census=census, host=host, turnover=turnover)
    fix = next(a for a in diag.finding("exhausted").actions if a.command and "prlimit" in a.command)
    assert fix.command == "prlimit --pid 77 --nofile=1332:1332" and "1000" in fix.title


def test_connections_changing_hands_on_a_full_server_are_a_retry_storm_naming_the_reconnecting_hosts():
    steady = conns("10.0.0.9", range(500, 520))
    before = census_from_tables([table(steady + conns("10.0.0.2", range(1000, 1040)) + conns("10.0.0.3", range(3000, 3040)))],
                                6379, taken_at=0.0)
    after = census_from_tables([table(steady + conns("10.0.0.2", range(1030, 1070)) + conns("10.0.0.3", range(3025, 3065)))],
                               6379, taken_at=2.0)
    turnover = compare_censuses(before, after)
    diag = diagnose_unreachable(TARGET, SETTINGS, ERROR, full=True, census=after,
                                host=HostFacts(77, 65536, 65536, 200), turnover=turnover)
    assert diag.causes == ("exhausted", "retry_storm") and diag.status == "critical"
    assert "retry storm" in diag.finding("exhausted").summary
    storm = diag.finding("retry_storm")
    assert storm.severity == "critical" and 0.5 <= storm.confidence <= 0.8
    assert storm.hosts == ("10.0.0.2", "10.0.0.3"), "the reconnecting hosts, most new first; the steady one is not named"
    assert storm.evidence["new_per_host"] == {"10.0.0.2": 30, "10.0.0.3": 25}
    titles = " | ".join(a.title for a in storm.actions)
    assert "back off" in titles and "circuit breaker" in titles and "Stop or scale down" in titles
    assert any(a.command and "kill" in a.command and "--source 10.0.0.2" in a.command for a in storm.actions)
    assert diag.to_dict()["sources"][-1] == {**diag.to_dict()["sources"][-1], "host": "10.0.0.9", "new_connections": 0}


def test_one_census_measures_no_turnover_so_it_claims_no_storm():
    census, _turnover, host = _pile()
    diag = diagnose_unreachable(TARGET, SETTINGS, ERROR, full=True, census=census, host=host)
    assert diag.causes == ("exhausted",) and diag.finding("exhausted").evidence["verdict"] == "unmeasured"
    assert any("turnover" in lim for lim in diag.limitations)
    assert diag.to_dict()["sources"][0]["new_connections"] is None


# -- live: real servers that stay full ------------------------------------------------------------

def run_doctor_cli(url: str, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "connguard", "doctor", url, "--json", "--interval", "2",
                          "--connect-timeout", "2", *extra], capture_output=True, text=True, timeout=40)
    return out, time.monotonic() - started


def test_a_server_full_of_idle_connections_is_exhausted_by_a_still_pile_with_its_top_host_named(
        default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=20)
    crowd = crowd_for(server)
    crowd.open(14, source="127.0.6.1", name="orders-worker")
    crowd.open(6, source="127.0.6.2", name="reports")
    out, _wall = run_doctor_cli(server.url)
    assert out.returncode == 2, out.stderr
    data = json.loads(out.stdout)
    assert data["reachable"] is False and data["status"] == "critical"
    assert [f["cause"] for f in data["findings"]] == ["exhausted"], "no storm: nothing changed hands"
    exhausted = data["findings"][0]
    assert exhausted["evidence"]["verdict"] == "static" and exhausted["evidence"]["hosts"][0] == "127.0.6.1"
    ev = exhausted["evidence"]
    assert ev["maxclients_estimate"] == 20 and ev["turnover"]["new"] == 0, (ev["by_host"], ev["turnover"])
    assert "long-lived connections" in exhausted["summary"]
    assert data["sources"][0] == {**data["sources"][0], "host": "127.0.6.1", "connections": 14, "new_connections": 0}
    human = subprocess.run([sys.executable, "-m", "connguard", "doctor", server.url, "--interval", "2",
                            "--connect-timeout", "1"], capture_output=True, text=True, timeout=40)
    assert human.returncode == 2 and human.stdout.startswith("CRITICAL:")
    assert "1. CRITICAL exhausted" in human.stdout and "retry_storm" not in human.stdout
    assert "long-lived connections" in human.stdout and "--maxclients 120 --yes" in human.stdout


class Reconnector(threading.Thread):
    """The bug under test: connect, and when refused or done, reconnect at once. Admitted sockets are held a
    fraction of a second. Bounded: `seconds` and `max_attempts`, and `halt`."""

    def __init__(self, port: int, source: str, *, seconds: float = 12.0, max_attempts: int = 3000) -> None:
        super().__init__(daemon=True)
        self.port, self.source = port, source
        self.deadline = time.monotonic() + seconds
        self.max_attempts = max_attempts
        self.halt = threading.Event()
        self.attempts = self.admitted = 0

    def run(self) -> None:
        rnd = random.Random(self.name)
        while time.monotonic() < self.deadline and self.attempts < self.max_attempts and not self.halt.is_set():
            self.attempts += 1
            sock = admit("127.0.0.1", self.port, source=self.source, timeout_s=1.0)
            if sock is None:
                self.halt.wait(0.002)  # "at once"; 2 ms only to share two cores with the server and the doctor
                continue
            self.admitted += 1
            self.halt.wait(rnd.uniform(0.2, 0.8))
            sock.close()


def test_a_server_kept_full_by_constant_reconnects_is_exhausted_by_a_retry_storm_from_those_hosts(
        default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=20)
    crowd_for(server).open(4, source="127.0.6.9", name="steady")
    # 48 reconnectors for 16 free slots: the accept queue is FIFO, so with many storm connects always queued a
    # slot freed by a close goes to one of them, not to the doctor's retry (24 let a doctor in under CPU load).
    storm = [Reconnector(server.port, f"127.0.6.{3 + i % 2}") for i in range(48)]
    for r in storm:
        r.start()
    try:
        time.sleep(0.5)
        # Half a second of retries, not two: every retry is one more draw in the race for a slot a close frees, and
        # the storm's Python threads slow down when the machine is busy (under load the doctor got in within 2 s in some runs).
        out, wall = run_doctor_cli(server.url, "--connect-timeout", "0.5")
    finally:
        for r in storm:
            r.halt.set()
        for r in storm:
            r.join(5)
    assert out.returncode == 2, out.stderr
    data = json.loads(out.stdout)
    assert data["reachable"] is False and data["status"] == "critical"
    assert [f["cause"] for f in data["findings"]] == ["exhausted", "retry_storm"]
    exhausted, found = data["findings"]
    assert exhausted["evidence"]["verdict"] == "retry_storm" and "retry storm" in exhausted["summary"]
    assert found["severity"] == "critical" and set(found["evidence"]["hosts"][:2]) == {"127.0.6.3", "127.0.6.4"}
    assert "127.0.6.9" not in found["evidence"]["hosts"], "the steady host is not part of the storm"
    assert found["evidence"]["new_connections"] >= 3
    new = {s["host"]: s["new_connections"] for s in data["sources"]}
    assert new["127.0.6.9"] == 0 and new.get("127.0.6.3", 0) + new.get("127.0.6.4", 0) >= 3
    assert wall < 15, "2 s of backoff, a 2 s census pause, and startup"
