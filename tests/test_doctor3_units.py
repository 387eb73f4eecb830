"""Issue 20 without a server: ranking by slots held, parsers for PassiveOpens, CONFIG GET and CLUSTER NODES,
the --pubsub selector's rules, and the refusing member leading a cluster summary."""

from __future__ import annotations

import pytest

from connguard.analysis.diagnosis import diagnose
from connguard.analysis.findings import Finding
from connguard.analysis.ranking import rank
from connguard.discovery.model import Member
from connguard.discovery.summary import Row, summarize
from connguard.probe.client_list import parse_client_list
from connguard.probe.host import parse_passive_opens
from connguard.probe.server_config import parse_cluster_nodes, parse_config_reply
from connguard.remedy.kill import KillFilter, plan_kill
from connguard.target import parse_target
from test_analysis_rules import PROD, TARGET, client, snapshot

SNMP = ("Ip: Forwarding DefaultTTL\nIp: 1 64\n"
        "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab\n"
        "Tcp: 1 200 120000 -1 99870 99298 554 136249 337\n")


def test_passive_opens_is_read_by_its_column_name():
    assert parse_passive_opens(SNMP) == 99298
    assert parse_passive_opens("Tcp: A B\nTcp: 1 2\n") is None


def test_config_get_replies_in_either_protocol_and_cluster_nodes_without_myself():
    assert parse_config_reply([b"timeout", b"90"]) == {"timeout": "90"}
    assert parse_config_reply({b"tcp-keepalive": b"0"}) == {"tcp-keepalive": "0"}
    nodes = parse_cluster_nodes(
        "a1 10.0.0.1:6379@16379 myself,master - 0 0 1 connected 0-5460\n"
        "b2 10.0.0.2:6379@16379 master - 0 0 2 connected 5461-10922\n"
        "c3 10.0.0.3:6379@16379 slave b2 0 0 2 connected\n"
        "d4 :0@0 master,noaddr - 0 0 0 disconnected\n")
    assert nodes == {"10.0.0.2": "primary", "10.0.0.3": "replica"}


def _f(cause: str, severity: str, confidence: float, slots: int) -> Finding:
    return Finding(cause, severity, confidence, cause, {"slots_held": slots})


def test_the_cause_holding_more_slots_ranks_first_at_the_same_severity():
    ranked = rank([_f("internal_connections", "warning", 0.9, 11), _f("pool_oversize", "warning", 0.6, 75),
                   _f("connection_leak", "warning", 0.7, 45), _f("exhausted", "critical", 1.0, 0)])
    assert [f.cause for f in ranked] == ["exhausted", "pool_oversize", "connection_leak", "internal_connections"]


def test_at_87_percent_internal_links_rank_below_the_pools_that_fill_the_server():
    lines = [client(h * 100 + j, f"10.0.2.{h}", 86_400, 86_400 if j > 4 else 0, name="api")
             for h in range(3) for j in range(25)]
    lines += [client(5000 + i, "10.6.0.1", 1000, 0, flags="S", cmd="replconf") for i in range(3)]
    lines += [client(6000 + i, "10.6.0.2", 1000, 0, name=f"sentinel-1a2b3c4{i}-cmd", cmd="ping") for i in range(6)]
    diag = diagnose(snapshot(lines, maxclients=97, slaves=3), None, PROD, TARGET)
    assert 0.86 <= diag.capacity.ratio <= 0.9
    causes = [f.cause for f in diag.findings if f.severity != "info"]
    assert causes.index("pool_oversize") < causes.index("internal_connections"), causes


def _subscribers() -> tuple:
    text = "\n".join([
        "id=1 addr=10.0.0.5:1 name=s age=10 idle=10 flags=P sub=1 psub=0 cmd=subscribe",
        "id=2 addr=10.0.0.5:2 name=s age=9 idle=9 flags=N sub=0 psub=0 cmd=get",
        "id=3 addr=10.0.0.6:3 name=sentinel-1a2b3c4d-pubsub age=9 idle=0 flags=P sub=1 psub=0 cmd=subscribe",
        "id=4 addr=10.0.0.5:4 name=m age=9 idle=0 flags=O sub=0 psub=0 cmd=monitor",
    ])
    return parse_client_list(text).records()


def test_pubsub_selects_only_subscribers_never_sentinel_or_monitor():
    plan = plan_kill(_subscribers(), KillFilter(sources=("10.0.0.5", "10.0.0.6"), pubsub=True), None)
    assert plan.ids == (1,) and "--pubsub" in plan.forced[0].reason
    with pytest.raises(ValueError, match="--pubsub needs"):
        KillFilter(idle_min_s=5, pubsub=True)


def _row(port: int, status: str, ratio: float | None, cause: str | None) -> Row:
    member = Member(parse_target(f"redis://127.0.0.1:{port}", env={}), role="primary")
    return Row(member=member, status=status, payload={}, ratio=ratio, top_cause=cause, used=None, maxclients=None)


def test_a_cluster_summary_names_the_refusing_node_first_and_counts_it_as_100_percent():
    rows = [_row(i, "warning", 0.82, "internal_connections") for i in range(1, 6)]
    rows.append(_row(9, "critical", None, "exhausted"))
    summary = summarize("cluster", rows)
    assert summary.cause_summary.startswith(f"{rows[-1].member.label} refuses connections: exhausted")
    assert summary.nearest is rows[-1] and summary.causes[0] == "exhausted"


def test_kernel_arrivals_are_a_host_wide_rate_attributed_by_the_sampled_sockets():
    from connguard.analysis.rules.exhausted import kernel_arrivals
    from connguard.probe.census import CensusTurnover, HostTurnover
    from connguard.probe.model import HostFacts

    first = HostFacts(7, 1024, 1024, 10, passive_opens=1_000, passive_opens_at=10.0)
    last = HostFacts(7, 1024, 1024, 10, passive_opens=24_136, passive_opens_at=12.0)
    hosts = (HostTurnover("10.0.0.21", 2, 12, 11, 0), HostTurnover("10.0.0.22", 1, 4, 4, 0))
    t = CensusTurnover(6379, 2.0, 60, 60, 60, hosts, 0, 0, 60)
    got = kernel_arrivals(first, last, t)
    assert got["per_s"] == 11568.0 and got["accepted"] == 23_136
    assert got["by_host_estimate"] == {"10.0.0.21": 8676.0, "10.0.0.22": 2892.0}
    assert "network namespace" in got["scope"]
    assert kernel_arrivals(first, first, t) is None and kernel_arrivals(None, last, t) is None
