"""The doctor on shapes it was never tuned to: other hosts, limits, proportions and mixes, on real servers.

Each case asserts the right cause at warning or above, no unrelated cause at warning or above, and the
offending host in that finding's evidence. Sizes are small and the interval short (2 s) to stay fast."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time

import pytest
import redis
from rich.console import Console

from connguard.analysis.diagnosis import Diagnosis, DoctorSettings
from connguard.doctor import examine, run_doctor
from connguard.lab.crowd import Crowd, admit
from connguard.probe.sampler import Sampler
from connguard.render.text import render_text
from connguard.target import open_connection, parse_target

SETTINGS = DoctorSettings(interval_s=2, idle_threshold_s=2)
LOUD = ("warning", "critical")


# -- load shapes ---------------------------------------------------------------------------------
class Drip(threading.Thread):
    """A leak that keeps growing: `per` idle connections from `source` every `period_s`; bounded in count and time."""

    def __init__(self, crowd: Crowd, source: str, per: int = 2, period_s: float = 0.4, limit: int = 30,
                 seconds: float = 8) -> None:
        super().__init__(daemon=True)
        self.crowd, self.source, self.per, self.period_s, self.limit = crowd, source, per, period_s, limit
        self.deadline = time.monotonic() + seconds
        self.halt = threading.Event()
        self.opened = 0

    def run(self) -> None:
        while self.opened < self.limit and time.monotonic() < self.deadline and not self.halt.is_set():
            self.opened += len(self.crowd.open(self.per, source=self.source, name="billing-worker").sockets)
            self.halt.wait(self.period_s)

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


class Reconnector(threading.Thread):
    """A client that reconnects after `backoff_s` when refused and holds each admitted socket `hold_s`;
    bounded by attempts and time. Short backoff = a retry storm; long backoff and few = ordinary requests."""

    def __init__(self, port: int, source: str, *, backoff_s: float, hold_s: tuple[float, float], want: int,
                 seconds: float = 8, max_attempts: int = 2000) -> None:
        super().__init__(daemon=True)
        self.port, self.source, self.backoff_s, self.hold_s, self.want = port, source, backoff_s, hold_s, want
        self.deadline = time.monotonic() + seconds
        self.max_attempts = max_attempts
        self.halt = threading.Event()
        self.attempts = self.refused = 0

    def run(self) -> None:
        rnd, held = random.Random(self.source), []
        while time.monotonic() < self.deadline and self.attempts < self.max_attempts and not self.halt.is_set():
            now = time.monotonic()
            for item in [h for h in held if h[1] <= now]:
                item[0].close()
                held.remove(item)
            if len(held) >= self.want:
                self.halt.wait(0.05)
                continue
            self.attempts += 1
            sock = admit("127.0.0.1", self.port, source=self.source, timeout_s=1.0)
            if sock is None:
                self.refused += 1
                self.halt.wait(self.backoff_s)
            else:
                held.append((sock, now + rnd.uniform(*self.hold_s)))
        for sock, _ in held:
            sock.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


# -- running the doctor ------------------------------------------------------------------------------
def doctor(server, connect_timeout_s: float = 5.0) -> Diagnosis:
    return run_doctor(parse_target(server.url), SETTINGS, connect_timeout_s=connect_timeout_s)


def held(server):
    """A connection taken before the trouble starts, as `connguard watch` holds one: a full server cannot refuse it."""
    target = parse_target(server.url)
    return open_connection(target), target.redacted


def loud(diag: Diagnosis) -> set[str]:
    return {f.cause for f in diag.findings if f.severity in LOUD}


def assert_names(diag: Diagnosis, cause: str, hosts=(), *, also=()) -> None:
    """`cause` at warning or above, with `hosts` in its evidence, and nothing loud outside `also`."""
    shown = [(f.cause, f.severity, f.hosts) for f in diag.findings]
    assert cause in loud(diag), shown
    assert loud(diag) <= {cause, *also}, shown
    named = diag.finding(cause).hosts
    for host in hosts:
        assert host in named, (cause, host, shown)


# -- leaks -------------------------------------------------------------------------------------------
def test_a_leak_that_is_a_minority_of_the_load_is_named_with_its_host(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=150)
    crowd = crowd_for(server)
    crowd.open(30, source="127.0.3.1", kind="active", name="api")
    crowd.open(30, source="127.0.3.2", kind="active", name="api")
    drip = Drip(crowd, "127.0.9.9")
    drip.start()
    time.sleep(3)
    diag = doctor(server)
    drip.stop()
    assert_names(diag, "connection_leak", ["127.0.9.9"])
    assert not {"127.0.3.1", "127.0.3.2"} & set(diag.finding("connection_leak").hosts)


def test_a_leak_from_two_hosts_one_beside_a_busy_pool_names_both(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=300)
    crowd = crowd_for(server)
    crowd.open(12, source="127.0.3.7", kind="active", name="api")  # a busy pool on a host that also leaks
    crowd.open(40, source="127.0.3.8", kind="active", name="api")
    drips = [Drip(crowd, "127.0.3.7", per=2), Drip(crowd, "127.0.9.6", per=3, period_s=0.5)]
    for d in drips:
        d.start()
    time.sleep(3)
    diag = doctor(server)
    for d in drips:
        d.stop()
    assert_names(diag, "connection_leak", ["127.0.3.7", "127.0.9.6"])
    assert "127.0.3.8" not in diag.finding("connection_leak").hosts


def test_a_leak_that_filled_the_server_is_the_cause_after_exhausted(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=60)
    crowd = crowd_for(server)
    conn, target = held(server)
    crowd.open(15, source="127.0.3.1", kind="active", name="api")
    # A leak is gradual: 2 connections every 0.35 s, so their ages spread over ~8 s (CLIENT LIST ages are
    # whole seconds; a burst within 2 s is indistinguishable from a pool opened at once).
    drip = Drip(crowd, "127.0.9.3", per=2, period_s=0.35, limit=60, seconds=12)
    drip.start()
    deadline = time.monotonic() + 12
    while crowd.connected < 44 and time.monotonic() < deadline:  # 15 + 44 + this doctor = 60: full
        time.sleep(0.1)
    time.sleep(1)  # the leak no longer grows, it just sits there
    requests = Reconnector(server.port, "127.0.3.1", backoff_s=0.3, hold_s=(0.5, 1.0), want=3, seconds=5)
    requests.start()
    with conn:
        diag = examine(Sampler.holding(conn), SETTINGS)
    requests.stop()
    drip.stop()
    assert diag.causes[:2] == ("exhausted", "connection_leak"), diag.causes
    assert_names(diag, "connection_leak", ["127.0.9.3"], also=("exhausted",))
    assert "127.0.3.1" not in diag.finding("connection_leak").hosts


# -- pools, fan-out, blocked ---------------------------------------------------------------------------
def test_pools_of_different_sizes_per_host_name_the_big_blocks(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=120)
    crowd = crowd_for(server)
    for i in (1, 2, 3):  # 3 hosts x 30, a third of each pool in use
        crowd.open(10, source=f"127.0.3.{i}", kind="active", name="orders")
        crowd.open(20, source=f"127.0.3.{i}", name="orders")
    for i in (4, 5):  # 2 hosts x 10
        crowd.open(3, source=f"127.0.3.{i}", kind="active", name="cron")
        crowd.open(7, source=f"127.0.3.{i}", name="cron")
    diag = doctor(server)
    assert_names(diag, "pool_oversize", ["127.0.3.1", "127.0.3.2", "127.0.3.3"])
    assert diag.finding("pool_oversize").evidence["instances"] >= 3


def test_fan_out_from_35_sources_is_not_called_a_leak(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=80)
    crowd = crowd_for(server)
    crowd.open(8, source="127.0.3.1", kind="active", name="api")
    for i in range(1, 36):
        crowd.open(1 + (i % 3 == 0), source=f"127.0.5.{i}", name="lambda-fn")

    def invocations() -> None:  # instances come and go while the doctor watches
        for j in range(36, 48):
            group = crowd.open(1, source=f"127.0.5.{j}", name="lambda-fn")
            time.sleep(0.15)
            crowd.close_group(group)

    churn = threading.Thread(target=invocations, daemon=True)
    churn.start()
    diag = doctor(server)
    churn.join(10)
    assert_names(diag, "serverless_fanout", ["127.0.5.1", "127.0.5.35"])
    assert "127.0.3.1" not in diag.finding("serverless_fanout").hosts


def test_a_leak_and_blocked_clients_amid_healthy_traffic_are_both_reported_readably(
        default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=150)
    crowd = crowd_for(server)
    crowd.open(20, source="127.0.3.1", kind="active", name="api")
    crowd.open(25, source="127.0.9.30", kind="blocked", name="jobs")
    drip = Drip(crowd, "127.0.9.9", per=3, period_s=0.5)
    drip.start()
    time.sleep(3)
    diag = doctor(server)
    drip.stop()
    assert_names(diag, "connection_leak", ["127.0.9.9"], also=("blocked_clients",))
    assert_names(diag, "blocked_clients", ["127.0.9.30"], also=("connection_leak",))
    console = Console(record=True, width=140, highlight=False)
    render_text(diag, console)
    text = console.export_text()
    assert text.startswith("WARNING:") and "1. WARNING" in text and "2. WARNING" in text
    assert "CLIENT KILL ID" in text and "--source 127.0.9.9" in text and "CLIENT UNBLOCK" in text


# -- limits and topology ---------------------------------------------------------------------------------
@pytest.mark.parametrize("nofile", [512, 1100])
def test_an_fd_limit_is_a_warning_even_with_little_load(default_binary, start_server, crowd_for, nofile):
    server = start_server(default_binary, nofile=nofile)
    crowd_for(server).open(10, source="127.0.3.1", kind="active")
    diag = doctor(server)
    assert_names(diag, "fd_limit")
    ev = diag.finding("fd_limit").evidence
    assert ev["fd_limit"] == nofile and ev["maxclients"] == nofile - 32


def test_replicas_taking_40_percent_of_the_limit_are_internal_connections(default_binary, start_server, crowd_for):
    primary = start_server(default_binary, maxclients=15)
    for _ in range(6):
        start_server(default_binary, maxclients=50, replicaof=("127.0.0.1", primary.port))
    crowd_for(primary).open(4, source="127.0.3.1", kind="active", name="api")
    client = redis.Redis(port=primary.port)
    deadline = time.monotonic() + 10
    while client.info("replication")["connected_slaves"] < 6 and time.monotonic() < deadline:
        time.sleep(0.2)
    client.close()
    diag = doctor(primary)
    assert_names(diag, "internal_connections", ["127.0.0.1"])
    assert diag.finding("internal_connections").evidence["replicas"] == 6


# -- refusals ----------------------------------------------------------------------------------------------
def test_a_retry_storm_with_a_little_backoff_names_the_retrying_hosts_only(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=40)
    conn, target = held(server)
    crowd_for(server).open(15, source="127.0.3.1", kind="active", name="api")
    storm = [Reconnector(server.port, f"127.0.9.{i}", backoff_s=0.02, hold_s=(0.5, 3.0), want=20) for i in (1, 2, 3, 4)]
    for t in storm:
        t.start()
    time.sleep(1.5)
    with conn:
        diag = examine(Sampler.holding(conn), SETTINGS)
    for t in storm:
        t.stop()
    assert_names(diag, "retry_storm", ["127.0.9.1", "127.0.9.2", "127.0.9.3", "127.0.9.4"], also=("exhausted",))
    assert "127.0.3.1" not in diag.finding("retry_storm").hosts  # steady, not reconnecting


def test_storm_fillers_are_not_mistaken_for_pools_or_leaks(default_binary, start_server):
    server = start_server(default_binary, maxclients=60)
    conn, target = held(server)
    storm = [Reconnector(server.port, f"127.0.9.{i}", backoff_s=0.02, hold_s=(2.0, 5.0), want=25) for i in (11, 12, 13)]
    for t in storm:
        t.start()
    time.sleep(2.5)
    with conn:
        diag = examine(Sampler.holding(conn), SETTINGS)
    for t in storm:
        t.stop()
    assert_names(diag, "retry_storm", ["127.0.9.11", "127.0.9.12", "127.0.9.13"], also=("exhausted",))


def test_a_small_limit_with_genuinely_active_clients_is_maxclients_too_low(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=30)
    conn, target = held(server)
    crowd = crowd_for(server)
    for i in (1, 2, 3):
        crowd.open(9, source=f"127.0.3.{i}", kind="active", name="checkout")
    requests = Reconnector(server.port, "127.0.3.4", backoff_s=0.3, hold_s=(1.0, 2.0), want=4, seconds=6)
    requests.start()
    time.sleep(1)
    with conn:
        diag = examine(Sampler.holding(conn), SETTINGS)
    requests.stop()
    assert_names(diag, "maxclients_too_low", ["127.0.3.1", "127.0.3.2", "127.0.3.3"], also=("exhausted",))


def test_a_full_server_with_a_password_is_exhausted_from_the_census_and_hides_the_password(
        default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=25, password="s3cret-pw")
    crowd = crowd_for(server)
    crowd.open(5, source="127.0.3.1", kind="active")
    crowd.open(20, source="127.0.9.7")
    url = f"redis://:s3cret-pw@127.0.0.1:{server.port}"
    base = [sys.executable, "-m", "connguard", "doctor", url, "--interval", "2", "--idle-threshold", "2",
            "--connect-timeout", "1"]
    out = subprocess.run(base + ["--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    report = json.loads(out.stdout)
    assert report["reachable"] is False and report["status"] == "critical"
    assert [f["cause"] for f in report["findings"]] == ["exhausted"]
    assert report["sources"][0]["host"] == "127.0.9.7"
    assert "127.0.9.7" in report["findings"][0]["evidence"]["hosts"]
    human = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert human.returncode == 2
    assert human.stdout.startswith("CRITICAL:") and "1. CRITICAL exhausted" in human.stdout
    assert "--source 127.0.9.7" in human.stdout
    assert "s3cret" not in out.stdout + out.stderr + human.stdout + human.stderr


def test_a_healthy_busy_server_exits_0_with_no_warning(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=200)
    crowd = crowd_for(server)
    for i in (1, 2, 3, 4):
        crowd.open(25, source=f"127.0.3.{i}", kind="active", name="api")

    def requests() -> None:  # short-lived connections: churn without refusals
        for _ in range(12):
            group = crowd.open(2, source="127.0.3.9", kind="active")
            time.sleep(0.15)
            crowd.close_group(group)

    churn = threading.Thread(target=requests, daemon=True)
    churn.start()
    out = subprocess.run([sys.executable, "-m", "connguard", "doctor", server.url, "--json", "--interval", "2",
                          "--idle-threshold", "2"], capture_output=True, text=True, timeout=60)
    churn.join(10)
    report = json.loads(out.stdout)
    assert out.returncode == 0, report["findings"]
    assert report["status"] == "ok" and 0.45 <= report["capacity"]["ratio"] <= 0.55
    assert not [f for f in report["findings"] if f["severity"] in LOUD]
