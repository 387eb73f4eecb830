"""The Sampler against real servers: it holds one connection, survives a restart, a CLIENT KILL of itself and
a full server, and never raises from sample()."""

from __future__ import annotations

import time

import pytest
import redis

from connguard.errors import AuthFailed, ServerFull, Unreachable
from connguard.lab.servers import free_port
from connguard.probe.capture import capture
from connguard.probe.sampler import Sampler, supports_no_evict
from connguard.target import open_connection, parse_target


def _redis(server) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, password=server.password, single_connection_client=True)


def test_supports_no_evict_from_redis_7_and_in_every_valkey():
    assert supports_no_evict("redis", "7.0.15") and supports_no_evict("redis", "8.2.1")
    assert supports_no_evict("valkey", "9.1.2") and supports_no_evict("valkey", "7.2.4")
    assert not supports_no_evict("redis", "6.2.5") and not supports_no_evict("redis", "garbage")


def test_a_sample_holds_one_connection_and_carries_both_clocks(server):
    with Sampler(parse_target(server.url)) as sampler:
        before_mono, before_wall = time.monotonic(), time.time()
        first = sampler.sample()
        second = sampler.sample(client_list=False)
        third = sampler.sample()
    assert first.failure is None and not first.refused and first.snapshot is not None
    assert before_mono <= first.monotonic <= second.monotonic <= third.monotonic
    assert abs(first.wall - before_wall) < 5 and first.snapshot.taken_at == first.wall
    assert first.snapshot.monotonic == first.monotonic, "the Snapshot carries the monotonic clock for intervals"
    # One connect for three ticks: the server counted exactly one connection from us.
    assert sampler.connects == first.observer_connects == third.observer_connects == 1
    assert third.snapshot.info.total_connections_received == first.snapshot.info.total_connections_received
    # INFO-only tick: no CLIENT LIST, and the Observation says so.
    assert first.client_list_included and first.snapshot.clients is not None
    assert not second.client_list_included and second.snapshot.clients is None
    ours = [c for c in first.snapshot.clients if c.id == first.own_client_id]
    assert len(ours) == 1 and ours[0].name == "connguard"


def test_the_observer_asks_not_to_be_evicted_where_the_server_has_it(server):
    with Sampler(parse_target(server.url)) as sampler:
        obs = sampler.sample()
        flags = next(c.flags for c in obs.snapshot.clients if c.id == obs.own_client_id)
        expected = supports_no_evict(obs.snapshot.info.flavor, obs.snapshot.info.version)
        assert sampler.no_evict_on is expected
        assert ("e" in flags) is expected, f"{obs.snapshot.info.flavor} {obs.snapshot.info.version}: flags {flags!r}"
    if not expected:  # 6.2: never sent, so a sampler costs the server no more errors than a bare probe
        admin = _redis(server)

        def errors() -> int:
            return sum(v["count"] for v in admin.info("errorstats").values())

        start = errors()
        with open_connection(parse_target(server.url)) as conn:
            capture(conn)
        bare = errors() - start
        with Sampler(parse_target(server.url)) as sampler:
            sampler.sample()
        assert errors() - start - bare == bare


def test_a_restart_is_ridden_out_with_a_new_connection(default_binary, start_server):
    server = start_server(default_binary, maxclients=50)
    with Sampler(parse_target(server.url), reconnect_timeout_s=10) as sampler:
        before = sampler.sample()
        server.stop()
        server.start()  # same port, new process
        after = sampler.sample()
    assert before.snapshot is not None and after.snapshot is not None, after.failure
    assert after.snapshot.info.process_id != before.snapshot.info.process_id
    assert (before.observer_connects, after.observer_connects) == (1, 2)
    assert after.snapshot.observer_connects == 2


def test_a_client_kill_of_the_observer_is_ridden_out(default_binary, start_server):
    server = start_server(default_binary, maxclients=50)
    admin = _redis(server)
    with Sampler(parse_target(server.url)) as sampler:
        first = sampler.sample()
        assert admin.execute_command("CLIENT", "KILL", "ID", str(sampler.client_id)) == 1
        second = sampler.sample()
        assert second.snapshot is not None, second.failure
        assert second.own_client_id != first.own_client_id and sampler.connects == 2
        assert sampler.execute("PING") in (b"PONG", "PONG", True)
    # The server saw exactly our two connects (the admin's own connection is the third).
    received = second.snapshot.info.total_connections_received - first.snapshot.info.total_connections_received
    assert received == 1 == second.observer_connects - first.observer_connects


def test_a_full_server_is_an_observation_with_a_census_not_an_exception(full_server):
    server, monitor, crowd, leak = full_server
    sampler = Sampler(parse_target(server.url), connect_timeout_s=0.4, reconnect_timeout_s=0.4)
    try:
        obs = sampler.sample()
        assert obs.refused and obs.snapshot is None and isinstance(obs.failure, ServerFull)
        assert obs.failure.exit_code == 2 and obs.refusals >= 1 and obs.observer_connects == 0
        assert obs.census is not None and obs.census.by_host.get("127.0.0.5") == 9, "the census sees who holds the slots"
        assert obs.host is not None and obs.host.pid == int(monitor.info("server")["process_id"])
        with pytest.raises(ServerFull):
            sampler.open()
        crowd.close_group(leak)
        deadline = time.monotonic() + 5
        while (freed := sampler.sample()).snapshot is None and time.monotonic() < deadline:
            pass
        assert freed.snapshot is not None and not freed.refused and freed.failure is None
        assert freed.observer_connects == 1 and freed.refusals >= obs.refusals
        assert freed.snapshot.info.rejected_connections >= freed.refusals, "each refusal is one the server counted"
    finally:
        sampler.close()


def test_unreachable_and_bad_password_are_observations_but_open_raises(default_binary, start_server):
    nothing = parse_target(f"redis://127.0.0.1:{free_port()}")
    sampler = Sampler(nothing, connect_timeout_s=0.5)
    obs = sampler.sample()
    assert obs.snapshot is None and not obs.refused and isinstance(obs.failure, Unreachable)
    assert obs.census is None and obs.observer_connects == 0
    with pytest.raises(Unreachable):
        sampler.open()
    with pytest.raises(Unreachable):
        sampler.execute("PING")
    server = start_server(default_binary, password="s3cret")
    wrong = Sampler(parse_target(f"redis://:nope@127.0.0.1:{server.port}"))
    obs = wrong.sample()
    assert isinstance(obs.failure, AuthFailed) and "nope" not in obs.failure.line()


def test_a_denied_no_evict_is_ignored_and_the_observer_still_observes(default_binary, start_server):
    server = start_server(default_binary, maxclients=50)
    admin = _redis(server)
    version = admin.info("server")["redis_version"]
    if not supports_no_evict("redis", version):
        pytest.skip(f"{default_binary.label} has no CLIENT NO-EVICT")
    admin.execute_command("ACL", "SETUSER", "observer", "on", ">pw", "~*", "+@all", "-client|no-evict")
    with Sampler(parse_target(f"redis://observer:pw@127.0.0.1:{server.port}")) as sampler:
        obs = sampler.sample()
    assert obs.snapshot is not None and obs.failure is None
    assert sampler.no_evict_on is False
    assert "e" not in next(c.flags for c in obs.snapshot.clients if c.id == obs.own_client_id)
