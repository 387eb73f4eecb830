"""Leak detection: a connection held past the threshold is reported with who checked it out, and its return too."""

from __future__ import annotations

import logging
import time

import pytest

from connguard.guard import REGISTRY, GuardedConnectionPool, guarded_client


@pytest.fixture(autouse=True)
def fresh_registry():
    REGISTRY.reset()
    yield
    REGISTRY.reset()


def wait_for(caplog, text: str, timeout_s: float = 5.0) -> logging.LogRecord:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in caplog.records:
            if text in record.getMessage():
                return record
        time.sleep(0.02)
    raise AssertionError(f"no log record containing {text!r}")


def test_a_connection_held_past_the_threshold_is_reported_with_the_function_that_checked_it_out(
    default_binary, start_server, caplog
):
    caplog.set_level(logging.INFO, logger="connguard.guard.leaks")
    server = start_server(default_binary)
    pool = GuardedConnectionPool(host="127.0.0.1", port=server.port, name="reports", leak_threshold_s=0.2)
    conn = pool.get_connection()

    # The app now does nothing at all with the pool: the watchdog thread still notices.
    warning = wait_for(caplog, "possible connection leak")
    message = warning.getMessage()
    assert warning.levelno == logging.WARNING
    assert "test_a_connection_held_past_the_threshold_is_reported_with_the_function_that_checked_it_out" in message
    assert "test_guard_leaks.py" in message and "pool.get_connection()" in message  # the checkout line, from the stack
    assert "pool reports" in message and "thread MainThread" in message
    assert pool.metrics().suspected_leaks == 1

    pool.release(conn)
    returned = wait_for(caplog, "was returned after")
    assert returned.levelno == logging.INFO
    metrics = pool.metrics()
    assert (metrics.suspected_leaks, metrics.leaks_reported_total) == (0, 1)
    assert sum("possible connection leak" in r.getMessage() for r in caplog.records) == 1  # reported once
    pool.disconnect()


def _leaky_helper(pool: GuardedConnectionPool) -> object:
    conn = pool.get_connection()  # forgotten: never released
    return conn


def test_a_leak_from_a_function_that_already_returned_names_that_function(default_binary, start_server, caplog):
    caplog.set_level(logging.WARNING, logger="connguard.guard.leaks")
    server = start_server(default_binary)
    pool = GuardedConnectionPool(host="127.0.0.1", port=server.port, name="helpers", leak_threshold_s=0.2)
    conn = _leaky_helper(pool)
    message = wait_for(caplog, "possible connection leak").getMessage()
    assert "checked out in _leaky_helper" in message
    assert "conn = pool.get_connection()  # forgotten" in message
    pool.release(conn)
    pool.disconnect()


def test_short_commands_and_subscribers_are_not_reported(default_binary, start_server, caplog):
    caplog.set_level(logging.WARNING, logger="connguard.guard.leaks")
    server = start_server(default_binary)
    client = guarded_client(server.url, name="quiet", leak_threshold_s=0.2)
    pubsub = client.pubsub()
    pubsub.subscribe("news")  # a subscriber holds its connection on purpose
    deadline = time.monotonic() + 0.8
    while time.monotonic() < deadline:
        client.incr("n")
        time.sleep(0.01)
    assert not [r for r in caplog.records if "possible connection leak" in r.getMessage()]
    assert client.connection_pool.metrics().suspected_leaks == 0
    pubsub.close()
    client.close()
