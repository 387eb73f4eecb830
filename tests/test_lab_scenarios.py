"""Each lab scenario really produces its condition on a real server, seen the way the doctor sees it."""

from __future__ import annotations

from collections import Counter

import pytest

from connguard.errors import LabError
from connguard.lab.scenarios import SCENARIO_NAMES, run_scenario
from connguard.lab.servers import ServerBinary, find_binaries
from connguard.probe import take_snapshot
from connguard.probe.model import Snapshot
from connguard.target import open_connection, parse_target

from conftest import eventually

BINARIES = find_binaries()
# Version differences matter little to the lab itself: Redis 7.0 and Valkey 9.1 where they exist.
MAIN = [b for b in BINARIES if b.label.startswith(("redis-7.0", "valkey-9.1"))] or BINARIES[:1]
FIRST = MAIN[:1]
ids = [b.label for b in MAIN]


def look(url: str, connect_timeout_s: float = 15.0) -> Snapshot:
    """One snapshot through the doctor's own connection path (backoff while the server is full)."""
    with open_connection(parse_target(url), connect_timeout_s=connect_timeout_s) as conn:
        return take_snapshot(conn)


def by_host(snap: Snapshot) -> Counter:
    return Counter(c.host for c in snap.clients or () if c.name != "connguard")


def quiet(line: str) -> None:
    pass


@pytest.mark.parametrize("binary", MAIN, ids=ids)
def test_a_leak_is_one_host_piling_up_idle_connections_while_others_work(binary: ServerBinary) -> None:
    with run_scenario("connection_leak", binary=binary, scale=0.5, log=quiet) as run:
        assert run.offenders == ["127.0.0.66"]
        assert "--idle-threshold 2" in run.doctor_command and run.url in run.doctor_command
        first = look(run.url)
        leaked = [c for c in first.clients if c.host == "127.0.0.66"]
        workers = [c for c in first.clients if c.host in {"127.0.0.10", "127.0.0.11"}]
        assert len(leaked) >= 3 and all(c.name == "orders-worker" for c in leaked)
        assert sum(c.idle_s >= 2 for c in leaked) >= 3, "the first leaked connections sit idle past the threshold"
        assert workers and all(c.idle_s <= 1 for c in workers), "the others do steady work"
        def grown_and_spread(snap: Snapshot) -> bool:
            ages = [c.age_s for c in snap.clients if c.host == "127.0.0.66"]
            return by_host(snap)["127.0.0.66"] > len(leaked) and max(ages) - min(ages) >= 2

        second = eventually(lambda: look(run.url), grown_and_spread, timeout_s=8)
        assert by_host(second)["127.0.0.66"] > len(leaked), "the leak keeps growing"
        assert by_host(second)["127.0.0.10"] == by_host(first)["127.0.0.10"], "while other traffic stays flat"
        ages = sorted(c.age_s for c in second.clients if c.host == "127.0.0.66")
        assert ages[-1] - ages[0] >= 2, "leaked connections are of spread-out ages"


@pytest.mark.parametrize("binary", MAIN, ids=ids)
def test_a_retry_storm_pins_usage_at_the_limit_while_rejections_and_churn_climb(binary: ServerBinary) -> None:
    with run_scenario("retry_storm", binary=binary, log=quiet) as run:
        first = look(run.url)  # gets in only because the storm leaves slots free for moments

        def climbed(snap: Snapshot) -> bool:
            # A look gets in only through a slot the storm left free for a moment, and reads INFO at once, before
            # the storm refills it: some looks see a few slots free. Pinned means most looks see it at the limit.
            return (snap.info.rejected_connections - first.info.rejected_connections >= 40
                    and snap.info.total_connections_received - first.info.total_connections_received >= 6
                    and snap.maxclients is not None and snap.used >= snap.maxclients - 3)

        second = eventually(lambda: look(run.url), climbed, timeout_s=4, interval_s=0.3)
        maxclients = second.maxclients
        assert second.used >= maxclients - 3, "usage pinned at the limit"
        rejected = second.info.rejected_connections - first.info.rejected_connections
        churn = second.info.total_connections_received - first.info.total_connections_received
        assert rejected >= 40, f"rejections climb fast ({rejected} in up to 4 s)"
        assert churn >= 6, f"connections churn ({churn} accepted in up to 4 s)"
        assert set(by_host(second)) <= set(run.offenders)
    assert run.server is not None and not run.server.alive()


@pytest.mark.parametrize("binary", MAIN, ids=ids)
def test_fd_limit_lowers_maxclients_to_nofile_minus_32(binary: ServerBinary) -> None:
    with run_scenario("fd_limit", binary=binary, log=quiet) as run:
        snap = look(run.url)
        assert snap.maxclients == 256 - 32 == run.maxclients
        assert run.server is not None and run.server.nofile == 256
        assert "maxclients has been reduced to 224" in run.server.log_text()


@pytest.mark.parametrize("binary", MAIN, ids=ids)
def test_internal_connections_are_real_replicas_taking_a_share_of_a_small_limit(binary: ServerBinary) -> None:
    with run_scenario("internal_connections", binary=binary, scale=0.6, log=quiet) as run:
        snap = look(run.url)
        assert snap.info.connected_slaves == len(run.replicas) == 3
        assert sum(c.is_replica for c in snap.clients) == 3
        assert snap.used / snap.maxclients >= 0.35 and snap.maxclients == 16
        replica_pids = [r.pid for r in run.replicas]
    assert all(not _pid_alive(pid) for pid in replica_pids), "replicas are stopped with the scenario"


@pytest.mark.parametrize("binary", FIRST, ids=[b.label for b in FIRST])
def test_pools_are_a_few_hosts_with_similar_fixed_blocks_near_the_limit(binary: ServerBinary) -> None:
    with run_scenario("pool_oversize", binary=binary, scale=0.5, log=quiet) as run:
        snap = look(run.url)
        counts = by_host(snap)
        pools = [counts[h] for h in run.offenders]
        assert len(run.offenders) == 4 and len(set(pools)) == 1 and pools[0] >= 3
        assert snap.used / snap.maxclients >= 0.75
        ages = [c.age_s for c in snap.clients if c.host in run.offenders]
        assert max(ages) - min(ages) <= 1, "opened at the same moment"


@pytest.mark.parametrize("binary", FIRST, ids=[b.label for b in FIRST])
def test_fanout_is_many_distinct_hosts_with_one_connection_each_coming_and_going(binary: ServerBinary) -> None:
    with run_scenario("serverless_fanout", binary=binary, scale=0.5, log=quiet) as run:
        first = look(run.url)
        second = eventually(lambda: look(run.url), lambda snap: set(by_host(snap)) != set(by_host(first)),
                            timeout_s=6, interval_s=0.3)
        hosts = by_host(second)
        assert len(hosts) >= 40 and max(hosts.values()) == 1
        assert set(hosts) != set(by_host(first)), "sources are transient"


@pytest.mark.parametrize("binary", FIRST, ids=[b.label for b in FIRST])
def test_maxclients_too_low_refuses_active_legitimate_traffic(binary: ServerBinary) -> None:
    with run_scenario("maxclients_too_low", binary=binary, scale=0.5, log=quiet) as run:
        first = look(run.url)
        second = eventually(lambda: look(run.url),
                            lambda snap: snap.info.rejected_connections > first.info.rejected_connections,
                            timeout_s=8, interval_s=0.3)
        assert second.used >= second.maxclients - 2
        assert second.info.rejected_connections > first.info.rejected_connections, "the surplus is refused"
        held = [c for c in second.clients if c.host in run.offenders]
        assert held and sum(c.idle_s <= 2 for c in held) >= 0.9 * len(held), "the refused traffic is active"


@pytest.mark.parametrize("binary", FIRST, ids=[b.label for b in FIRST])
def test_blocked_clients_hold_slots_in_blpop(binary: ServerBinary) -> None:
    with run_scenario("blocked_clients", binary=binary, scale=0.5, log=quiet) as run:
        snap = look(run.url)
        blocked = [c for c in snap.clients if c.is_blocked]
        assert snap.info.blocked_clients == len(blocked) >= 25
        assert {c.host for c in blocked} == {"127.0.0.77"} and {c.cmd for c in blocked} == {"blpop"}


def test_every_scenario_is_named_and_unknown_ones_list_the_valid_names() -> None:
    assert len(SCENARIO_NAMES) == 10 and "output_buffer_bloat" in SCENARIO_NAMES and "celery" in SCENARIO_NAMES
    with pytest.raises(LabError, match="valid names: connection_leak"):
        with run_scenario("thundering_herd", log=quiet):
            pass


@pytest.mark.parametrize("binary", FIRST, ids=[b.label for b in FIRST])
def test_scenarios_run_against_a_given_server_but_refuse_one_they_cannot_use(binary, start_server) -> None:
    server = start_server(binary, maxclients=50)
    with run_scenario("blocked_clients", url=server.url, scale=0.5, log=quiet) as run:
        assert run.server is None and look(server.url).info.blocked_clients >= 15
    assert look(server.url).info.blocked_clients == 0, "its clients leave with it; the server stays"
    with pytest.raises(LabError, match="needs its own server"):
        with run_scenario("fd_limit", url=server.url, log=quiet):
            pass
    with pytest.raises(LabError, match="loopback"):
        with run_scenario("connection_leak", url="redis://10.1.2.3:6379", log=quiet):
            pass


def test_an_exception_inside_the_scenario_still_stops_its_server(default_binary) -> None:
    with pytest.raises(KeyboardInterrupt):
        with run_scenario("blocked_clients", binary=default_binary, scale=0.3, log=quiet) as run:
            pid = run.server.pid
            raise KeyboardInterrupt
    assert not _pid_alive(pid)


def _pid_alive(pid: int | None) -> bool:
    import os

    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); count it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_server_that_cannot_get_its_fd_limit_is_a_lab_error_and_leaves_no_files(default_binary, monkeypatch) -> None:
    import os
    import tempfile

    from connguard.lab import servers

    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(servers.tempfile, "mkdtemp", lambda **kw: made.append(real_mkdtemp(**kw)) or made[-1])
    impossible = int(open("/proc/sys/fs/nr_open").read()) + 1  # above what even root may set
    server = servers.ServerProcess(default_binary, nofile=impossible)
    with pytest.raises(LabError, match="fd limit"):
        server.start()
    assert made and not any(os.path.exists(d) for d in made)
