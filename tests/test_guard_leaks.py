"""Leak detection: a connection held past the threshold is reported with who checked it out, and its return too."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from connguard.guard import GuardedConnectionPool, guarded_client


pytestmark = pytest.mark.usefixtures("fresh_guard_registry")


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


def test_a_single_connection_client_and_a_monitor_hold_on_purpose_and_are_not_reported(default_binary, start_server, caplog):
    caplog.set_level(logging.WARNING, logger="connguard.guard.leaks")
    server = start_server(default_binary)
    pool = GuardedConnectionPool(host="127.0.0.1", port=server.port, name="dedicated", leak_threshold_s=0.1)
    single = redis.Redis(connection_pool=pool, single_connection_client=True)  # holds one connection for life
    single.ping()
    monitor = redis.Redis(connection_pool=pool).monitor()
    monitor.__enter__()
    time.sleep(0.6)
    assert not [r.getMessage() for r in caplog.records if "possible connection leak" in r.getMessage()]
    assert pool.metrics().suspected_leaks == 0
    monitor.__exit__(None, None, None)
    single.close()
    pool.disconnect()


def test_a_reported_connection_that_the_pool_forgets_is_no_longer_counted(default_binary, start_server, caplog):
    """After pool.reset() a reported connection is gone from the pool: it no longer counts as a suspect (and its
    id, once reused by a new connection, must not hide that connection's own leak)."""
    caplog.set_level(logging.WARNING, logger="connguard.guard.leaks")
    server = start_server(default_binary)
    pool = GuardedConnectionPool(host="127.0.0.1", port=server.port, name="forgetful", leak_threshold_s=0.1)
    pool.get_connection()  # leaked and dropped
    wait_for(caplog, "possible connection leak")
    assert pool.metrics().suspected_leaks == 1
    pool.reset()
    deadline = time.monotonic() + 3
    while pool.metrics().suspected_leaks and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pool.metrics().suspected_leaks == 0 and pool.metrics().leaks_reported_total == 1
    pool.disconnect()


def test_the_watchdog_neither_keeps_the_interpreter_alive_nor_breaks_its_exit(default_binary, start_server):
    """A script that leaks and exits, with a report due at the moment of exit: it ends promptly, exit code 0,
    and no traceback or logging error on stderr."""
    import subprocess
    import sys
    import textwrap

    server = start_server(default_binary)
    script = textwrap.dedent(f"""
        import logging, time
        from connguard.guard import GuardedConnectionPool
        logging.basicConfig(level=logging.INFO)
        pool = GuardedConnectionPool(host="127.0.0.1", port={server.port}, name="script", leak_threshold_s=0.05)
        held = [pool.get_connection() for _ in range(20)]
        time.sleep(0.045)  # exit while reports are due
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)  # no hang
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr, done.stderr


def test_leak_reports_from_the_blocking_pools_point_at_the_callers_line(default_binary, start_server, caplog):
    import asyncio
    import inspect

    from connguard.guard import AsyncGuardedBlockingConnectionPool, GuardedBlockingConnectionPool

    caplog.set_level(logging.WARNING, logger="connguard.guard.leaks")
    server = start_server(default_binary)
    pool = GuardedBlockingConnectionPool.from_url(server.url, max_connections=4, timeout=2, name="blocking-leak", leak_threshold_s=0.2)
    line = inspect.currentframe().f_lineno + 1
    held = pool.get_connection()  # forgotten
    message = wait_for(caplog, "blocking-leak").getMessage()
    assert f"test_guard_leaks.py:{line})" in message.split("Stack at checkout")[0]
    pool.release(held)
    pool.disconnect()

    async def scenario() -> int:
        apool = AsyncGuardedBlockingConnectionPool.from_url(server.url, max_connections=4, timeout=2, name="async-blocking-leak", leak_threshold_s=0.2)
        at = inspect.currentframe().f_lineno + 1
        conn = await apool.get_connection()  # forgotten
        await asyncio.sleep(0.6)
        await apool.release(conn)
        await apool.aclose()
        return at

    at = asyncio.run(scenario())
    message = wait_for(caplog, "async-blocking-leak").getMessage()
    assert f"test_guard_leaks.py:{at})" in message.split("Stack at checkout")[0] and "scenario" in message
