"""Issue 20 on real servers (Redis 7.0 and Valkey 9.1): subscriber piles, a leak under a storm, advice that
respects `timeout`, full primaries with Sentinels and replicas, a full cluster node, MONITOR piles and a
healthy Sentinel primary. The doctor runs as an operator would run it; kill commands run as printed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import doctor3_scenarios as d3
import doctor_scenarios as ds
from connguard.analysis.diagnosis import Diagnosis
from connguard.cli import main as cli
from connguard.doctor import run_doctor
from connguard.target import parse_target

BINARIES = ds.binaries_for_tests()
pytestmark = pytest.mark.skipif(not BINARIES, reason="no server binary found")
SERIOUS = ("warning", "critical")


@pytest.fixture(params=BINARIES, ids=[b.label for b in BINARIES])
def server_binary(request):
    return request.param


def serious(diag: Diagnosis) -> set[str]:
    return {f.cause for f in diag.findings if f.severity in SERIOUS}


def commands(diag: Diagnosis) -> list[str]:
    return [a.command or "" for f in diag.findings for a in f.actions]


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.mark.timeout(90)
def test_a_subscriber_pile_is_a_leak_killed_with_the_pubsub_selector(server_binary):
    with d3.subscriber_pile(server_binary) as live:
        diag = live.doctor()
        leak = diag.finding("connection_leak")
        assert leak is not None and leak.severity in SERIOUS, [(f.cause, f.summary) for f in diag.findings]
        assert leak.hosts == (d3.SUBSCRIBER_HOST,) and leak.evidence["kind"] == "pubsub"
        assert "no leak" not in " ".join(f.summary for f in diag.findings)
        kill = next(c for c in commands(diag) if c.startswith("connguard kill"))
        assert f"--source {d3.SUBSCRIBER_HOST} --pubsub" in kill
        # The printed command, run as printed (a dry run): it reaches the subscribers and nothing else.
        code, out = run_cli(*kill.split()[1:], "--json")
        payload = json.loads(out)
        assert code == 0 and payload["would_kill"] >= 26 and payload["dry_run"]
        assert {t["kind"] for t in payload["targets"]} == {"pubsub"}
        assert all("chosen by --pubsub" in f["protected_as"] for f in payload["forced"])
        code, out = run_cli(*kill.split()[1:], "--yes", "--json")
        killed = json.loads(out)["killed"]
        assert code == 0 and killed >= 26
        assert len(d3.client_ids(live.server.port, "P")) <= 10, "only the late subscribers are left"


@pytest.mark.timeout(90)
def test_a_leak_under_a_storm_is_the_root_and_the_storm_the_amplifier(server_binary):
    with d3.leak_under_storm(server_binary) as live:
        diag = live.doctor()
    assert {"connection_leak", "retry_storm", "exhausted"} <= serious(diag), [(f.cause, f.severity) for f in diag.findings]
    causes = [f.cause for f in diag.findings]
    assert causes[0] == "exhausted" and causes.index("connection_leak") < causes.index("retry_storm")
    leak, storm = diag.finding("connection_leak"), diag.finding("retry_storm")
    assert leak.summary.startswith("Root cause") and leak.evidence["role"] == "root"
    assert storm.summary.startswith("Amplifier") and leak.evidence["slots_held"] >= 45
    assert "stop the retry storm" in leak.actions[0].title.lower(), "the storm goes first, and says why"
    assert d3.LEAK_HOST in leak.hosts


@pytest.mark.timeout(90)
def test_a_doctor_without_a_held_slot_still_names_the_pile_under_a_storm(server_binary):
    """Without a held connection the doctor is usually refused and judges from /proc (censuses and the
    kernel's PassiveOpens); when the storm frees a slot at the right moment it gets in. Either way the pile is
    the root and the storm the amplifier."""
    with d3.leak_under_storm(server_binary, hold=False) as live:
        diag = run_doctor(parse_target(live.url), live.settings, connect_timeout_s=0.5)
    assert {"exhausted", "retry_storm", "connection_leak"} <= serious(diag), [(f.cause, f.summary) for f in diag.findings]
    leak, storm = diag.finding("connection_leak"), diag.finding("retry_storm")
    assert leak.hosts == (d3.LEAK_HOST,) and leak.summary.startswith("Root cause")
    assert diag.finding("exhausted").actions[0].title.startswith("Order of relief: 1. stop the retry storm")
    if diag.reachable:
        assert storm.evidence["rejected_per_s"] > storm.evidence["connections_received_per_s"]
        return
    arrivals = storm.evidence["kernel_arrivals"]
    assert arrivals is not None and "network namespace" in arrivals["scope"]
    caught = storm.evidence["new_connections"] / max(storm.evidence["window_s"], 0.01)
    assert arrivals["per_s"] > caught, "the kernel sees the refused attempts the census cannot catch"


@pytest.mark.timeout(90)
def test_a_leak_on_a_server_with_timeout_90_is_never_told_to_set_300(server_binary):
    with d3.leak_with_timeout(server_binary) as live:
        diag = live.doctor()
    leak = diag.finding("connection_leak")
    assert leak is not None and leak.severity in SERIOUS
    text = " ".join(a.title + " " + (a.command or "") for a in leak.actions)
    assert "timeout 300" not in text and "--timeout 300" not in text
    assert "timeout 90 is already in place" in text
    assert "CONFIG SET tcp-keepalive 300" in text, "tcp-keepalive 0 is read and corrected"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("hold", [False, True], ids=["refused", "held"])
def test_a_full_sentinel_primary_gets_no_advice_against_its_sentinels_or_replicas(server_binary, hold):
    with d3.sentinel_primary(server_binary, full=True, hold=hold) as (live, topo):
        diag = live.doctor(connect_timeout_s=1.0)
        code, out = run_cli("kill", live.url, "--sockets", "--source", "127.0.0.1")
        forced_code, forced_out = run_cli("kill", live.url, "--sockets", "--source", "127.0.0.1", "--force", "--json")
    assert diag.status == "critical"
    assert not [c for c in commands(diag) if "--source 127.0.0.1" in c], commands(diag)
    assert any(f"--source {d3.PILE_HOST}" in c for c in commands(diag)), "the app pile is still the target"
    assert code == 3 and "Sentinel" in out and "replica" in out and "--force" in out
    assert forced_code == 0 and "Sentinel" in json.loads(forced_out)["internal_forced"]["127.0.0.1"]


@pytest.mark.timeout(150)
def test_a_full_cluster_node_counts_its_bus_and_spares_its_replica(server_binary):
    with d3.full_cluster_node(server_binary) as (live, cluster):
        diag = live.doctor(connect_timeout_s=1.0)
        others = [run_doctor(parse_target(n.url), ds.SETTINGS, once=True) for n in cluster.nodes[1:]]
    ex = diag.finding("exhausted")
    assert not diag.reachable and ex is not None
    assert ex.evidence["cluster_bus_slots"] == 2 * (len(cluster.nodes) - 1)
    assert ex.evidence["maxclients_estimate"] == 40, ex.summary
    assert not [c for c in commands(diag) if "--source 127.0.0.1" in c]
    from connguard.discovery.model import Member
    from connguard.discovery.summary import row_from_doctor, summarize

    rows = [row_from_doctor(Member(parse_target(n.url), role="primary"), d.to_dict())
            for n, d in zip(cluster.nodes, [diag, *others])]
    summary = summarize("cluster", rows)
    assert summary.cause_summary.startswith(f"{rows[0].member.label} refuses connections")
    assert summary.cause in ("exhausted", "imbalance") and rows[0].maxclients == 40


@pytest.mark.timeout(90)
def test_monitor_sessions_are_named_with_a_kill_that_reaches_them(server_binary):
    with d3.monitor_pile(server_binary) as live:
        diag = live.doctor()
        mon = diag.finding("monitor_sessions")
        assert mon is not None and mon.severity in SERIOUS and mon.hosts == (d3.MONITOR_HOST,)
        kill = next(a.command for a in mon.actions if a.command)
        assert "--force" in kill and kill.count("--id") == 4
        code, out = run_cli(*kill.split()[1:], "--json")
    payload = json.loads(out)
    assert code == 0 and payload["would_kill"] == 4 and {t["kind"] for t in payload["targets"]} == {"monitor"}


@pytest.mark.timeout(90)
def test_a_healthy_sentinel_primary_is_ok(server_binary):
    with d3.sentinel_primary(server_binary, full=False) as (live, topo):
        code, out = run_cli("doctor", live.url, "--json", "--interval", "0.5")
    payload = json.loads(out)
    assert code == 0 and payload["status"] == "ok", [(f["cause"], f["severity"]) for f in payload["findings"]]
