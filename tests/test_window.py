"""Analysis over a window of Snapshots, without a server: rates, growth and churn cover every Snapshot, a
restart is cut out, the observer's own connects are never churn, and a window of two is the classic doctor."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from connguard.analysis.diagnosis import DoctorSettings, diagnose, diagnose_observations
from connguard.analysis.rates import rates, window_rates
from connguard.analysis.window import Window, interval_s, restarted
from connguard.errors import AuthFailed
from connguard.probe.build import RawCapture, build_snapshot
from connguard.probe.census import census_from_tables, census_turnover, compare_censuses
from connguard.probe.model import SocketCensus
from connguard.probe.sampler import Observation
from connguard.target import parse_target

SETTINGS = DoctorSettings(interval_s=5, idle_threshold_s=300)
TARGET = parse_target("redis://127.0.0.1:6379/3")
OWN = 999_999


def client(i: int, host: str, age: int = 100, idle: int = 0, cmd: str = "get") -> str:
    return (f"id={i} addr={host}:{10000 + i % 50000} laddr=10.0.0.1:6379 fd={i + 10} name= age={age} "
            f"idle={idle} flags=N db=0 sub=0 psub=0 multi=-1 qbuf=0 cmd={cmd} user=default")


def snap(ids_by_host: dict[str, range | list[int]], *, t: float, received: int = 1000, rejected: int = 0,
         pid: int = 77, uptime: int = 5000, mono: float | None = None, own: int = OWN, connects: int = 1,
         listed: bool = True, maxclients: int = 1000):
    lines = [client(i, host) for host, ids in ids_by_host.items() for i in ids]
    n = len(lines) + 1
    info = (f"# Server\r\nredis_version:7.2.4\r\nprocess_id:{pid}\r\ntcp_port:6379\r\nuptime_in_seconds:{uptime}\r\n"
            f"# Clients\r\nconnected_clients:{n}\r\ncluster_connections:0\r\nmaxclients:{maxclients}\r\n"
            f"blocked_clients:0\r\n# Stats\r\ntotal_connections_received:{received}\r\n"
            f"rejected_connections:{rejected}\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n")
    mine = client(own, "10.9.9.9", cmd="client|list").replace("name=", "name=connguard")
    raw = RawCapture(t, info, maxclients, "\n".join(lines + [mine]) + "\n" if listed else None)
    return build_snapshot(raw, own_client_id=own, observer_connections=1, monotonic=mono, observer_connects=connects)


# -- a window of two is the classic doctor ------------------------------------------------------------------

def test_a_window_of_two_is_exactly_the_pair_form():
    a = snap({"10.0.0.1": range(1, 21), "10.0.0.2": range(100, 110)}, t=1000, received=5000)
    b = snap({"10.0.0.1": range(5, 31), "10.0.0.2": range(100, 110)}, t=1005, received=5014)
    assert diagnose([a, b], SETTINGS, TARGET) == diagnose(a, b, SETTINGS, TARGET)
    assert window_rates([a, b]) == rates(a, b)
    one = diagnose([b], SETTINGS, TARGET)
    assert one.rates is None and one == diagnose(b, None, SETTINGS, TARGET)


def test_the_target_object_keeps_the_database_in_every_suggested_command():
    # A leak: 400 connections from one host, idle for most of their lives, at 40% of maxclients.
    leaky = [client(i, "10.0.0.7", age=400 + 90 * i, idle=400 + 90 * i - 3) for i in range(1, 400)]
    window = [build_snapshot(RawCapture(t, _info(400), 1000, "\n".join(leaky) + "\n"), own_client_id=OWN,
                             observer_connections=1) for t in (1000, 1005)]
    diag = diagnose(window, SETTINGS, TARGET)
    assert diag.finding("connection_leak") is not None, diag.causes
    commands = [a.command for f in diag.findings for a in f.actions if a.command]
    runnable = [c for c in commands if c.startswith(("redis-cli", "for id", "connguard"))]
    assert runnable and all(" -n 3 " in c or "6379/3" in c for c in runnable), runnable
    assert diag.target == "redis://127.0.0.1:6379/3"


def _info(clients: int) -> str:
    return (f"# Server\r\nredis_version:7.2.4\r\nprocess_id:77\r\ntcp_port:6379\r\nuptime_in_seconds:5000\r\n"
            f"# Clients\r\nconnected_clients:{clients}\r\ncluster_connections:0\r\nmaxclients:1000\r\n"
            f"blocked_clients:0\r\n# Stats\r\ntotal_connections_received:1000\r\nrejected_connections:0\r\n"
            f"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n")


# -- the whole window, not just its ends -----------------------------------------------------------------------

def test_churn_counts_connections_that_came_and_went_between_the_ends():
    # 10.0.0.1 keeps 10 connections at both ends, but between them 30 short-lived ones came and went.
    steady = list(range(1, 11))
    window = [
        snap({"10.0.0.1": steady}, t=1000),
        snap({"10.0.0.1": steady + list(range(50, 65))}, t=1001),
        snap({"10.0.0.1": steady + list(range(70, 85))}, t=1002),
        snap({"10.0.0.1": steady}, t=1003),
    ]
    churn = Window.of(window).churn
    assert churn is not None
    host = churn["10.0.0.1"]
    assert (host.first, host.last, host.growth, host.opened, host.closed) == (10, 10, 0, 30, 30)
    ends = diagnose([window[0], window[-1]], SETTINGS, TARGET).sources[0]
    assert (ends.opened, ends.closed) == (0, 0), "the ends alone see a still pool"
    whole = diagnose(window, SETTINGS, TARGET).sources[0]
    assert (whole.opened, whole.closed, whole.growth) == (30, 30, 0)
    assert whole.churning and not ends.churning


def test_rates_sum_every_interval_and_leave_a_restart_out():
    a = snap({"h": [1]}, t=1000, received=100, rejected=10, mono=50.0)
    b = snap({"h": [1]}, t=1010, received=160, rejected=30, mono=52.0)  # wall jumped 10 s, monotonic 2 s
    c = snap({"h": [1]}, t=1012, received=20, rejected=0, pid=78, uptime=1, mono=54.0)  # restarted
    d = snap({"h": [1, 2]}, t=1014, received=40, rejected=4, pid=78, uptime=3, mono=56.0)
    w = Window.of([a, b, c, d])
    assert [len(s) for s in w.segments] == [2, 2] and w.restarts == 1
    assert restarted(b, c) and not restarted(a, b) and interval_s(a, b) == 2.0, "intervals use the monotonic clock"
    r = window_rates(w)
    assert r is not None
    assert (r.interval_s, r.connections_received, r.rejected) == (4.0, 60 + 20, 20 + 4)
    # used_min/used_max count as capacity.used does: connguard's own connection left out (one definition).
    assert (r.snapshots, r.restarts, r.used_delta, r.used_min, r.used_max) == (4, 1, 1, 1, 2)
    assert r.connections_received_per_s == 20.0 and r.rejected_per_s == 6.0
    diag = diagnose(w.snapshots, SETTINGS, TARGET)
    assert (diag.capacity.used, r.used_max) == (2, 2), "capacity.used and rates.used_max agree"
    assert any("restarted 1 time" in lim for lim in diag.limitations)
    assert diag.sources[0].growth == 1, "growth counts from the restart on: client IDs start over there"


def test_the_observers_own_reconnects_are_not_churn():
    # The observer was killed and reconnected between b and c: the server counted its connect, we do not.
    a = snap({"h": range(1, 5)}, t=1000, received=100, connects=1)
    b = snap({"h": range(1, 5)}, t=1001, received=100, connects=1)
    c = snap({"h": range(1, 5)}, t=1002, received=101, connects=2, own=OWN + 1)
    r = window_rates([a, b, c])
    assert r is not None and r.connections_received == 0
    churn = Window.of([a, b, c]).churn
    assert churn is not None and set(churn) == {"h"}, "neither of the observer's client IDs is a source"


def test_info_only_ticks_count_for_rates_but_not_for_churn():
    a = snap({"h": range(1, 5)}, t=1000, received=100)
    b = snap({"h": range(1, 5)}, t=1001, received=110, listed=False)
    c = snap({"h": range(3, 9)}, t=1002, received=120)
    w = Window.of([a, b, c])
    assert w.listed == (a, c)
    assert window_rates(w).connections_received == 20
    assert (w.churn["h"].opened, w.churn["h"].closed) == (4, 2)
    # A window whose last tick is INFO-only still diagnoses (no per-client view for that tick).
    tail = diagnose([a, c, b], SETTINGS, TARGET)
    assert tail.sources is None and tail.rates is not None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 40), max_size=25, unique=True), min_size=2, max_size=6))
def test_window_churn_is_never_less_than_the_ends_and_equals_it_for_two(id_sets):
    window = [snap({"h": sorted(ids)}, t=1000 + i) for i, ids in enumerate(id_sets)]
    whole = Window.of(window).churn["h"] if any(id_sets) else None
    ends = Window.of([window[0], window[-1]]).churn.get("h")
    if whole is None or ends is None:
        return
    assert whole.opened >= ends.opened and whole.closed >= ends.closed
    assert whole.growth == ends.growth == len(id_sets[-1]) - len(id_sets[0])
    if len(window) == 2:
        assert whole == ends


# -- census turnover over a window ---------------------------------------------------------------------------

def _census(peers: list[tuple[str, int]], t: float, time_wait: list[tuple[str, int]] = ()) -> SocketCensus:
    by_host: dict[str, int] = {}
    for ip, _ in peers:
        by_host[ip] = by_host.get(ip, 0) + 1
    return SocketCensus(6379, by_host, frozenset(peers), 0, frozenset(time_wait), taken_at=t)


def test_census_turnover_sees_sockets_that_lived_only_between_the_ends():
    pile = [("10.0.0.5", p) for p in range(100, 110)]
    quick = [("10.0.0.6", p) for p in range(200, 220)]
    first, middle, last = _census(pile, 0.0), _census(pile + quick, 1.0), _census(pile, 2.0)
    assert compare_censuses(first, last).new == 0, "the ends alone see nothing move"
    t = census_turnover([first, middle, last])
    assert (t.new, t.gone, t.window_s) == (20, 20, 2.0)
    assert t.hosts[0].host == "10.0.0.6" and t.hosts[0].connections == 0
    assert census_turnover([first, last]) == compare_censuses(first, last)
    with pytest.raises(ValueError):
        census_turnover([first])


def test_a_census_from_proc_text_round_trips_through_the_window():
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    row = "   0: 0100007F:18EB 0200007F:{port:04X} 01 00000000:00000000 00:00000000 00000000 0 0 {inode} 1\n"
    tables = [header + "".join(row.format(port=p, inode=5000 + p) for p in ports) for ports in
              (range(40000, 40005), range(40003, 40008), range(40006, 40011))]
    censuses = [census_from_tables([text], 6379, taken_at=float(i)) for i, text in enumerate(tables)]
    t = census_turnover(censuses)
    # 40005 came and went between the ends: only the middle census saw it.
    assert (t.before, t.after, t.new, t.gone) == (5, 5, 6, 6)
    ends = compare_censuses(censuses[0], censuses[-1])
    assert (ends.new, ends.gone) == (5, 5)


# -- observations: what the doctor and a replay both diagnose ---------------------------------------------------

def _obs(snapshot, *, refused=False, failure=None, census=None, refusals=0) -> Observation:
    mono = snapshot.monotonic if snapshot is not None and snapshot.monotonic is not None else 0.0
    return Observation(snapshot=snapshot, monotonic=mono, wall=snapshot.taken_at if snapshot else 0.0,
                       refused=refused, failure=failure, census=census, host=None, observer_connects=1,
                       client_list_included=snapshot is not None and snapshot.clients is not None, refusals=refusals)


def test_observations_with_snapshots_diagnose_as_their_window():
    a = snap({"h": range(1, 5)}, t=1000)
    b = snap({"h": range(1, 9)}, t=1005)
    from connguard.errors import ServerFull

    lost = _obs(None, refused=True, failure=ServerFull("full"))
    diag = diagnose_observations([_obs(a), lost, _obs(b, refusals=3)], SETTINGS, TARGET)
    assert diag == diagnose([a, b], SETTINGS, TARGET, refused_us=3)


def test_a_server_that_refused_throughout_is_judged_from_all_its_censuses():
    from connguard.errors import ServerFull

    pile = [("10.0.0.5", p) for p in range(100, 110)]
    quick = [("10.0.0.6", p) for p in range(200, 260)]
    seen = [_census(pile, 0.0), _census(pile + quick, 1.0), _census(pile, 2.0)]
    obs = [_obs(None, refused=True, failure=ServerFull("refused all 5 attempts"), census=c) for c in seen]
    diag = diagnose_observations(obs, SETTINGS, TARGET)
    assert diag.status == "critical" and not diag.reachable and diag.error == "refused all 5 attempts"
    exhausted = diag.finding("exhausted")
    assert exhausted is not None and exhausted.evidence["turnover"]["new"] == 60


def test_nothing_observed_raises_the_failure_as_the_live_run_did():
    with pytest.raises(AuthFailed, match="rejected"):
        diagnose_observations([_obs(None, failure=AuthFailed("rejected the password"))], SETTINGS, TARGET)
    with pytest.raises(ValueError):
        diagnose_observations([], SETTINGS, TARGET)


# -- the live window ---------------------------------------------------------------------------------------------
def test_the_live_window_stays_bounded_and_keeps_its_client_list_snapshots():
    from connguard.analysis.window import LiveWindow

    live = LiveWindow(span_s=60.0, max_snapshots=5, max_points=50)
    for t in range(0, 300):
        step = live.push(snap({"h": range(1, 1 + t // 10)}, t=1000 + t, mono=float(t), received=1000 + t,
                              listed=t % 7 == 0))
        kept = live.window().snapshots
        assert len(kept) <= 6, "5 kept plus the latest"
        assert kept[-1].clock == t and [s.clock for s in kept] == sorted(s.clock for s in kept)
        assert len(live.forecaster.points) <= 50
        assert step.used == t // 10, "used leaves connguard's own connection out"
        assert step.limit == 999, "and takes its slot off the limit"
    kept = live.window().snapshots
    assert kept[-1].clock - kept[1].clock < 60 <= kept[-1].clock - kept[0].clock + 60 / 4 + 7
    listed = live.window(listed_only=True).snapshots
    assert listed and all(s.clients is not None for s in listed) and listed[-1].clock == 294  # the last t % 7 == 0


def test_the_live_window_sees_a_restart_once_and_starts_the_forecast_over():
    from connguard.analysis.window import LiveWindow

    live = LiveWindow()
    for t in range(0, 40):
        live.push(snap({"h": range(1, 1 + 2 * t)}, t=1000 + t, mono=float(t), received=1000 + 2 * t, listed=False))
    assert live.forecast.seconds_to_full is not None
    moved = live.push(snap({"h": [1]}, t=1041, mono=41.0, received=3, pid=78, uptime=1, listed=False))
    assert moved.restarted and moved.rates is None and live.restarts == 1
    assert moved.forecast.seconds_to_full is None and len(live.forecaster.points) == 1
    again = live.push(snap({"h": [1, 2]}, t=1042, mono=42.0, received=4, pid=78, uptime=2, listed=False))
    assert not again.restarted and again.rates is not None and again.rates.new_per_s == 1.0
