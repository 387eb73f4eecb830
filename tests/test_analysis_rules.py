"""The rules on synthetic production-scale Snapshots: thresholds generalize beyond the lab scenarios."""

from __future__ import annotations

import inspect
import random

from connguard.analysis.classify import BLOCKED, PUBSUB, REPLICA, SENTINEL, kind_of
from connguard.analysis.shell import Commands
from connguard.analysis.diagnosis import DoctorSettings, diagnose, diagnose_unreachable
from connguard.analysis.rates import rates
from connguard.probe import RawCapture, build_snapshot
from connguard.probe.model import HostFacts, SocketCensus

# The doctor's own connection is in these counts, as in a live probe (when the probe supports it).
OBSERVER = {"observer_connections": 1} if "observer_connections" in inspect.signature(build_snapshot).parameters else {}
PROD = DoctorSettings(interval_s=5, idle_threshold_s=300)
TARGET = "redis://127.0.0.1:6379"


def client(i: int, host: str, age: int, idle: int, *, name: str = "", flags: str = "N", cmd: str = "get",
           sub: int = 0) -> str:
    return (f"id={i} addr={host}:{10000 + i % 50000} laddr=10.0.0.1:6379 fd={i + 10} name={name} age={age} "
            f"idle={idle} flags={flags} db=0 sub={sub} psub=0 multi=-1 qbuf=0 cmd={cmd} user=default "
            f"lib-name=redis-py lib-ver=5.0.1")


def snapshot(lines: list[str], *, maxclients: int, taken_at: float = 1000.0, received: int = 10_000,
             rejected: int = 0, slaves: int = 0, cluster: int = 0, blocked: int = 0, host: HostFacts | None = None,
             client_list: bool = True, pid: int = 77):
    info = (f"# Server\r\nredis_version:7.2.4\r\nprocess_id:{pid}\r\ntcp_port:6379\r\nuptime_in_seconds:90000\r\n"
            f"# Clients\r\nconnected_clients:{len(lines) + 1 - slaves}\r\ncluster_connections:{cluster}\r\n"
            f"maxclients:{maxclients}\r\nblocked_clients:{blocked}\r\n"
            f"# Stats\r\ntotal_connections_received:{received}\r\nrejected_connections:{rejected}\r\n"
            f"# Replication\r\nrole:master\r\nconnected_slaves:{slaves}\r\n")
    own = client(999_999, "10.9.9.9", 1, 0, name="connguard", cmd="client|list")
    raw = RawCapture(taken_at, info, maxclients, "\n".join(lines + [own]) + "\n" if client_list else None)
    return build_snapshot(raw, host=host, own_client_id=999_999, **OBSERVER)


def serious(diag) -> set[str]:
    return {f.cause for f in diag.findings if f.severity != "info"}


def test_a_slow_leak_over_hours_is_named_with_its_host_from_one_snapshot():
    rng = random.Random(1)
    lines = [client(i, "10.0.0.7", age, age - rng.randint(0, 5), name="orders-worker")
             for i, age in enumerate(rng.sample(range(400, 40_000), 800))]
    lines += [client(1000 + i, f"10.0.1.{i % 5}", 90_000, rng.randint(0, 2), name="web") for i in range(100)]
    diag = diagnose(snapshot(lines, maxclients=1000), None, PROD, TARGET)
    assert serious(diag) == {"connection_leak"}
    leak = diag.finding("connection_leak")  # 901 of 1000 slots: past the runbook's 0.9 danger line
    assert leak.hosts == ("10.0.0.7",) and leak.severity == "critical" and leak.evidence["idle_over_threshold"] == 800
    assert "--source 10.0.0.7 --idle 300" in leak.actions[0].command


def test_pools_opened_at_deploy_are_oversize_not_a_leak_even_when_mostly_idle():
    rng = random.Random(2)
    lines = []
    for h in range(4):  # 4 instances x 230, opened within seconds of each other a day ago; LIFO keeps 40 busy
        for j in range(230):
            idle = rng.randint(0, 3) if j < 40 else rng.randint(3_000, 80_000)
            lines.append(client(h * 1000 + j, f"10.0.2.{h}", 86_400 + rng.randint(0, 3), idle, name="api"))
    diag = diagnose(snapshot(lines, maxclients=1000), None, PROD, TARGET)
    assert serious(diag) == {"pool_oversize"}
    pool = diag.finding("pool_oversize")
    assert pool.severity == "critical" and pool.evidence["instances"] == 4 and pool.evidence["pool_size"] == 230
    assert "max_connections=" in pool.actions[0].command


def test_many_single_connection_sources_are_fanout_not_leak():
    lines = [client(i, f"10.3.{i // 250}.{i % 250}", 5 + i % 30, 3 + i % 30, name="lambda") for i in range(900)]
    diag = diagnose(snapshot(lines, maxclients=1000), None, PROD, TARGET)
    assert serious(diag) == {"serverless_fanout"}
    assert diag.finding("serverless_fanout").evidence["sources"] == 900


def _busy(n: int, hosts: int = 4) -> list[str]:
    return [client(i, f"10.4.0.{i % hosts}", 50_000, i % 2, name="checkout") for i in range(n)]


def test_a_fast_rising_rejection_rate_at_the_limit_is_a_storm():
    lines = [client(i, f"10.5.0.{i % 8}", i % 20, 0, name="app") for i in range(999)]
    first = snapshot(lines, maxclients=1000, received=500_000, rejected=1_000_000)
    second = snapshot(lines, maxclients=1000, taken_at=1005, received=502_000, rejected=1_060_000)
    diag = diagnose(first, second, PROD, TARGET)
    assert serious(diag) == {"exhausted", "retry_storm"}
    assert diag.rates.rejected_per_s == 12_000


def test_a_modest_rejection_rate_with_busy_connections_is_maxclients_too_low():
    first = snapshot(_busy(999), maxclients=1000, rejected=400, host=HostFacts(77, 65536, 65536, 1040))
    second = snapshot(_busy(999), maxclients=1000, taken_at=1005, rejected=430, host=HostFacts(77, 65536, 65536, 1040))
    diag = diagnose(first, second, PROD, TARGET)
    assert serious(diag) == {"exhausted", "maxclients_too_low"}
    raise_ = diag.finding("maxclients_too_low").actions[0]
    # Full (999 + this doctor = 1000): redis-cli would be refused; connguard config waits for a slot.
    assert raise_.command.endswith("config redis://127.0.0.1:6379 --maxclients 1500 --connect-timeout 30")
    assert raise_.changes_server and "dry run until --yes" in raise_.title


def test_raising_maxclients_never_goes_past_the_fd_limit():
    host = HostFacts(77, 1100, 1100, 1040)
    first = snapshot(_busy(999), maxclients=1000, rejected=400, host=host)
    second = snapshot(_busy(999), maxclients=1000, taken_at=1005, rejected=430, host=host)
    actions = diagnose(first, second, PROD, TARGET).finding("maxclients_too_low").actions
    assert "--maxclients 1068 " in actions[0].command  # 1100 - 32


def test_fd_limit_signature_is_a_suspicion_for_a_remote_server():
    diag = diagnose(snapshot(_busy(10), maxclients=992), None, PROD, TARGET)
    fd = diag.finding("fd_limit")
    assert fd.severity == "warning" and fd.evidence["suspected_fd_limit"] == 1024 and fd.confidence < 0.9
    assert diag.status == "warning"
    assert diagnose(snapshot(_busy(10), maxclients=10_000), None, PROD, TARGET).finding("fd_limit") is None


def test_fd_limit_barely_above_maxclients_on_this_host_is_a_warning():
    snap = snapshot(_busy(10), maxclients=10_000, host=HostFacts(77, 10_040, 10_040, 50))
    assert diagnose(snap, None, PROD, TARGET).finding("fd_limit").evidence["spare"] == 8
    roomy = snapshot(_busy(10), maxclients=10_000, host=HostFacts(77, 65_536, 65_536, 50))
    assert diagnose(roomy, None, PROD, TARGET).finding("fd_limit") is None


def test_cluster_bus_and_replicas_count_as_internal_connections():
    lines = _busy(50) + [client(5000 + i, f"10.6.0.{i}", 1000, 0, flags="S", cmd="replconf") for i in range(2)]
    diag = diagnose(snapshot(lines, maxclients=300, slaves=2, cluster=40), None, PROD, TARGET)
    f = diag.finding("internal_connections")
    # 31% in use, 208 slots free: a large share, but far from the limit, so a note, not a warning.
    assert f.evidence["internal"] == 42 and f.evidence["cluster_bus"] == 40 and f.severity == "info"
    assert diag.status == "ok"
    near = diagnose(snapshot(_busy(200) + lines[50:], maxclients=260, slaves=2, cluster=40), None, PROD, TARGET)
    assert near.finding("internal_connections").severity in ("warning", "critical"), "near the limit they matter"


def test_classification_follows_flags_names_and_blocking_commands():
    snap = snapshot([
        client(1, "10.0.0.1", 10, 10, flags="N", cmd="xreadgroup"),
        client(2, "10.0.0.1", 10, 10, flags="b", cmd="blmove"),
        client(3, "10.0.0.2", 10, 10, flags="S", cmd="replconf"),
        client(4, "10.0.0.3", 10, 10, name="sentinel-1a2b3c4d-cmd", cmd="ping"),
        client(5, "10.0.0.3", 10, 10, name="sentinel-1a2b3c4d-pubsub", flags="P", cmd="subscribe", sub=1),
        client(6, "10.0.0.4", 10, 10, flags="P", cmd="subscribe", sub=1),
    ], maxclients=100)
    kinds = [kind_of(r) for r in snap.clients if r.id != snap.own_client_id]
    assert kinds == [BLOCKED, BLOCKED, REPLICA, SENTINEL, SENTINEL, PUBSUB]


def test_commands_never_carry_a_password():
    cmd = Commands.for_target("redis://ops:***@cache.internal:6380/2")
    assert cmd.url == "redis://ops@cache.internal:6380/2"  # the database is kept (it used to be lost here)
    assert cmd.redis_cli("CONFIG SET timeout", 300) == "redis-cli -h cache.internal -p 6380 -n 2 --user ops CONFIG SET timeout 300"
    assert "***" not in cmd.kill_ids([1, 2]) and "CLIENT KILL ID $id" in cmd.kill_ids([1, 2])


def test_a_restart_between_snapshots_gives_no_rates():
    first = snapshot(_busy(5), maxclients=100, received=5000)
    second = snapshot(_busy(5), maxclients=100, taken_at=1005, received=10, pid=78)
    assert rates(first, second) is None


def test_without_client_list_the_doctor_still_judges_from_info():
    snap = snapshot(_busy(95), maxclients=100, blocked=30, client_list=False)
    diag = diagnose(snap, None, PROD, TARGET)
    assert diag.sources is None and diag.status == "critical"
    assert diag.finding("blocked_clients").evidence["blocked_clients_info"] == 30


def test_unreachable_full_server_on_this_host_uses_the_census():
    census = SocketCensus(6379, {"10.0.0.7": 900, "10.0.0.8": 100})
    diag = diagnose_unreachable(TARGET, PROD, "refused 7 times", full=True, census=census,
                                host=HostFacts(77, 65536, 65536, 1040))
    data = diag.to_dict()
    assert data["status"] == "critical" and data["reachable"] is False and data["capacity"] is None
    assert [s["host"] for s in data["sources"]] == ["10.0.0.7", "10.0.0.8"]
    assert data["findings"][0]["cause"] == "exhausted" and data["findings"][0]["evidence"]["hosts"][0] == "10.0.0.7"


def test_the_healthy_baseline_of_a_big_quiet_server_is_ok():
    rng = random.Random(3)
    lines = [client(i, f"10.7.0.{i % 20}", 86_400 + rng.randint(0, 2), rng.randint(0, 400), name="svc")
             for i in range(400)]
    diag = diagnose(snapshot(lines, maxclients=10_000), None, PROD, TARGET)
    assert serious(diag) == set() and diag.status == "ok"


def test_a_leak_younger_than_the_idle_threshold_is_caught_by_growth_and_used_once_connections():
    old = [client(i, "10.8.0.5", 40 - i, 40 - i, name="worker") for i in range(0, 40, 2)]  # one every 2 s
    new = old + [client(100 + i, "10.8.0.5", 3 - i, 3 - i, name="worker") for i in range(3)]
    web = [client(500 + i, "10.8.0.6", 3000, 0, name="web") for i in range(10)]
    diag = diagnose(snapshot(old + web, maxclients=200), snapshot(new + web, maxclients=200, taken_at=1005), PROD, TARGET)
    leak = diag.finding("connection_leak")
    assert leak is not None and leak.hosts == ("10.8.0.5",) and leak.severity == "warning"
    assert leak.evidence["idle_over_threshold"] == 0 and leak.evidence["stale"] >= 20
    assert "--source 10.8.0.5 --idle 2" in leak.actions[0].command


def test_a_pool_growing_under_load_is_busy_and_not_a_leak():
    before = [client(i, "10.8.0.7", 40 - i, 0, name="api") for i in range(0, 40, 2)]
    after = before + [client(100 + i, "10.8.0.7", 3, 0, name="api") for i in range(5)]
    diag = diagnose(snapshot(before, maxclients=200), snapshot(after, maxclients=200, taken_at=1005), PROD, TARGET)
    assert diag.finding("connection_leak") is None and diag.status == "ok"


def test_a_pool_grown_at_past_peaks_and_now_idle_is_not_called_a_leak():
    rng = random.Random(4)
    # Opened over a day at peaks, used for hours after, idle for the last 10-60 minutes (LIFO pool bottom).
    lines = [client(i, "10.9.0.3", age, rng.randint(600, 3600), name="web")
             for i, age in enumerate(rng.sample(range(20_000, 86_400), 60))]
    first = snapshot(lines, maxclients=1000)
    diag = diagnose(first, snapshot(lines, maxclients=1000, taken_at=1005), PROD, TARGET)
    assert diag.finding("connection_leak") is None and diag.status == "ok"


def test_the_headline_names_findings_by_the_numbers_they_are_printed_with():
    from io import StringIO

    from rich.console import Console

    from connguard.render.text import render_text, verdict

    lines = [client(i, f"10.5.0.{i % 8}", i % 20, 0, name="app") for i in range(999)]
    first = snapshot(lines, maxclients=1000, received=500_000, rejected=1_000_000)
    second = snapshot(lines, maxclients=1000, taken_at=1005, received=502_000, rejected=1_060_000)
    diag = diagnose(first, second, PROD, TARGET)
    assert [f.cause for f in diag.findings][:2] == ["exhausted", "retry_storm"]
    assert verdict(diag) == "2 problems found; the server is full (1. exhausted), main cause: 2. retry_storm."
    out = StringIO()
    render_text(diag, Console(file=out, width=10_000))
    text = out.getvalue()
    assert "1. CRITICAL exhausted" in text and "2. CRITICAL retry_storm" in text


def test_below_the_warning_line_reserve_advice_is_a_check_never_a_raise():
    lines = _busy(3) + [client(5000 + i, f"10.6.1.{i}", 1000, 0, flags="S", cmd="replconf") for i in range(2)]
    diag = diagnose(snapshot(lines, maxclients=100, slaves=2), None, PROD, TARGET)
    f = diag.finding("internal_connections")
    assert f is not None and f.severity == "info" and diag.capacity.ratio < 0.8
    words = (f.summary + " ".join(a.title + (a.command or "") for a in f.actions)).lower()
    assert "check" in words and "raise" not in words and "config set" not in words


def test_pool_sizes_use_the_warning_line_from_capacity():
    from connguard.analysis.capacity import WARNING_RATIO

    rng = random.Random(2)
    lines = [client(h * 1000 + j, f"10.0.2.{h}", 86_400 + rng.randint(0, 3), rng.randint(3_000, 80_000), name="api")
             for h in range(4) for j in range(230)]
    pool = diagnose(snapshot(lines, maxclients=1000), None, PROD, TARGET).finding("pool_oversize")
    per_host = int(pool.actions[0].command.split("max_connections=")[1].split(",")[0])
    other = pool.evidence["other_used"]
    assert 4 * per_host + other < WARNING_RATIO * 1000 <= 4 * (per_host + 1) + other
    assert "80%" in pool.actions[0].title and "70%" not in pool.actions[0].title


def test_kill_and_the_doctor_share_one_definition_of_protected_clients():
    from connguard.analysis.classify import protection_reason
    from connguard.remedy import kill

    assert not hasattr(kill, "protection_reason") or kill.protection_reason is protection_reason
    snap = snapshot([client(1, "10.0.0.1", 10, 10, flags="N", cmd="xread")], maxclients=100)
    rec = next(r for r in snap.clients if r.id == 1)
    assert protection_reason(rec, None) == "blocked in a command (use --include-blocked)"
    assert protection_reason(rec, None, include_blocked=True) is None
