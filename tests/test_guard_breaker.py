"""The breaker: a max-clients refusal trips it, and while open no socket reaches the server; half-open lets one probe."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from server_counters import server_attempts
import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import MaxConnectionsError
from redis.retry import Retry

from connguard.guard.breaker import BreakerSettings, CircuitBreaker
from connguard.guard import (
    CircuitOpenError,
    GuardedConnectionPool,
    MaxClientsError,
    StateChange,
    guarded_client,
)


pytestmark = pytest.mark.usefixtures("fresh_guard_registry")


def clients_soon(monitor: redis.Redis, expected: int, timeout_s: float = 2.0) -> int:
    """connected_clients once it reaches `expected` (the server sees a close on its next event-loop turn)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = monitor.info("clients")["connected_clients"]
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.01)


def test_redis_py_defaults_open_a_new_socket_per_retry_against_a_full_server(full_server):
    server, monitor, _, _ = full_server
    # redis-py 8's default shape (10 retries), with a tiny backoff so the test stays fast.
    plain = redis.Redis(host="127.0.0.1", port=server.port, retry=Retry(ExponentialWithJitterBackoff(cap=0.005, base=0.001), 10))
    before = server_attempts(monitor)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    assert server_attempts(monitor) - before >= 10  # one command, a burst of refused connections


def test_a_refusal_trips_the_breaker_and_no_socket_is_opened_while_open(full_server, caplog):
    server, monitor, _, _ = full_server
    changes: list[StateChange] = []
    client = guarded_client(server.url, name="orders", reset_timeout_s=30.0, retries=3, on_state_change=changes.append)
    caplog.set_level(logging.INFO, logger="connguard.guard")
    before = server_attempts(monitor)

    with pytest.raises(MaxClientsError) as refused:
        client.ping()
    assert isinstance(refused.value, redis.ConnectionError)
    assert not isinstance(refused.value, MaxConnectionsError)  # server-side refusal, not client-side pool exhaustion
    assert server_attempts(monitor) - before == 1  # never retried at once, although retries=3

    for _ in range(25):
        with pytest.raises(CircuitOpenError, match="circuit open for redis://127.0.0.1"):
            client.set("k", "v")
    assert server_attempts(monitor) - before == 1  # open: not one more socket reached the server

    assert [(c.old, c.new) for c in changes] == [("closed", "open")]
    assert "max-clients refusal" in changes[0].reason
    assert any(r.levelno == logging.WARNING and "closed -> open" in r.getMessage() for r in caplog.records)
    metrics = client.connection_pool.metrics()
    assert (metrics.circuit_state, metrics.refusals_total, metrics.attempts_total) == ("open", 1, 1)
    assert metrics.circuit_rejected_total == 25


def test_half_open_admits_exactly_one_probe_among_concurrent_callers(full_server):
    server, monitor, crowd, leak = full_server
    client = guarded_client(server.url, name="api", reset_timeout_s=0.3, reset_jitter=0.0, connect_rate_per_s=None)
    with pytest.raises(MaxClientsError):
        client.ping()
    time.sleep(0.4)  # past reset_timeout_s: the next caller is the probe
    before = server_attempts(monitor)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def call() -> None:
        barrier.wait()
        try:
            client.ping()
            outcomes.append("ok")
        except Exception as exc:  # noqa: BLE001 - the type is the outcome
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert server_attempts(monitor) - before == 1
    # open for a refusal: the breaker says so in its error type (a CircuitOpenError, and redis-py's MaxClientsReachedError)
    assert sorted(outcomes) == ["CircuitOpenServerFull"] * 7 + ["MaxClientsError"]

    crowd.close_group(leak)  # the leak is fixed: the next probe closes the circuit
    time.sleep(0.75)  # the failed probe doubled the open period to 0.6 s
    assert client.ping() is True
    assert client.connection_pool.metrics().circuit_state == "closed"


def test_open_breaker_answers_without_waiting_for_the_probe():
    """No lock is held across the connect: while a probe is out, other callers fail fast instead of queueing."""
    now = [0.0]
    breaker = CircuitBreaker("redis://x:1/0", BreakerSettings(reset_timeout_s=1.0, max_reset_timeout_s=4.0, reset_jitter=0.0), clock=lambda: now[0])
    breaker.failure(probe=False, refusal=True, error="max number of clients reached")
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    now[0] = 1.01
    assert breaker.admit() is True  # the probe; its connect would now run with no lock held
    assert breaker.state == "half_open"
    with pytest.raises(CircuitOpenError, match="probe connection is in flight"):
        breaker.admit()  # at once: one thread here, so a wait for the probe could never end
    breaker.failure(probe=True, refusal=True, error="max number of clients reached")
    assert breaker.state == "open" and 1.9 < breaker.retry_in_s() <= 2.0  # a failed probe doubles the wait
    now[0] = 3.1
    assert breaker.admit() is True
    breaker.success(probe=True)
    assert breaker.state == "closed" and breaker.admit() is False


def test_plain_connect_failures_open_after_failure_threshold(default_binary, start_server):
    server = start_server(default_binary)
    port = server.port
    server.stop()  # nothing listens there now: every connect is refused by the OS
    client = guarded_client(f"redis://127.0.0.1:{port}", name="gone", failure_threshold=3, retries=0, reset_timeout_s=30)
    errors = []
    for _ in range(5):
        try:
            client.ping()
        except redis.ConnectionError as exc:
            errors.append(type(exc).__name__)
    assert errors == ["ConnectionError"] * 3 + ["CircuitOpenError"] * 2
    assert client.connection_pool.endpoint.attempts_total == 3


def test_while_a_probe_hangs_other_callers_fail_fast_instead_of_queueing(default_binary, start_server):
    """A stopped server accepts TCP (the kernel's backlog) and never answers: the probe hangs until its timeout.
    No lock is held across that connect, so other callers of the same pool get CircuitOpenError at once."""
    import os
    import signal

    server = start_server(default_binary)
    options = dict(
        failure_threshold=1, reset_timeout_s=0.2, reset_jitter=0.0, retries=0, socket_timeout=1.0,
        socket_connect_timeout=1.0, connect_rate_per_s=None,
    )
    first = guarded_client(server.url, name="first", **options)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        with pytest.raises(redis.TimeoutError):
            first.ping()  # opens the endpoint's circuit
        breaker = first.connection_pool.endpoint.breaker
        assert breaker.state == "open"
        time.sleep(0.3)
        api = guarded_client(server.url, name="api", **options)  # same endpoint, same breaker; a fresh pool
        probe = threading.Thread(target=lambda: pytest.raises(redis.TimeoutError, api.ping))
        probe.start()
        deadline = time.monotonic() + 2
        while breaker.state != "half_open" and time.monotonic() < deadline:
            time.sleep(0.005)
        assert breaker.state == "half_open"  # the probe is out, waiting on the stopped server
        with pytest.raises(CircuitOpenError, match="probe connection is in flight"):
            api.ping()
        assert probe.is_alive()  # answered while the probe still hangs on the stopped server
        probe.join(5)
    finally:
        os.kill(server.pid, signal.SIGCONT)


class _HandshakeBreaks(redis.connection.Connection):
    """A connection whose handshake raises `fail_with` after the socket is open (a bug, or Ctrl-C)."""

    fail_with: BaseException | None = None

    def on_connect_check_health(self, check_health: bool = True) -> None:
        if _HandshakeBreaks.fail_with is not None:
            raise _HandshakeBreaks.fail_with
        super().on_connect_check_health(check_health=check_health)


@pytest.mark.parametrize("crash", [RuntimeError("a bug in a connect callback"), KeyboardInterrupt()], ids=repr)
def test_a_probe_that_crashes_gives_no_verdict_and_leaves_no_uncounted_socket(default_binary, start_server, crash):
    """An unrelated error says nothing about the server: the circuit stays half-open (not closed, not stuck),
    the next caller probes, and the half-made socket is closed instead of escaping the budget."""
    server = start_server(default_binary)
    monitor = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    monitor.ping()
    pool = GuardedConnectionPool(
        connection_class=_HandshakeBreaks, host="127.0.0.1", port=server.port, name="crashy",
        reset_timeout_s=0.05, reset_jitter=0.0, connect_rate_per_s=None,
    )
    breaker = pool.endpoint.breaker
    breaker.failure(probe=False, refusal=True, error="max number of clients reached")  # as after a refusal
    time.sleep(0.1)
    _HandshakeBreaks.fail_with = crash
    try:
        with pytest.raises(type(crash)):
            pool.get_connection()
    finally:
        _HandshakeBreaks.fail_with = None
    assert breaker.state == "half_open"
    assert pool.metrics().open_sockets == 0
    assert clients_soon(monitor, 1) == 1  # the half-made socket was closed, not left open and uncounted
    conn = pool.get_connection()  # not stuck: this caller is the next probe, and it gets in
    assert breaker.state == "closed"
    pool.release(conn)
    pool.disconnect()
    monitor.close()
