"""No advice ever targets a known Sentinel, replica or cluster-node host: a property over generated client
populations (CLIENT LIST text and INFO parsed by the probe's own parsers), held and refused alike."""

from __future__ import annotations

import dataclasses
import re

from hypothesis import HealthCheck, given, settings, strategies as st

from connguard.analysis.diagnosis import DoctorSettings, diagnose, diagnose_unreachable
from connguard.analysis.internal_links import internal_hosts
from connguard.probe import RawCapture, build_snapshot
from connguard.probe.census import CensusTurnover, HostTurnover
from connguard.probe.model import HostFacts, ServerConfig, SocketCensus
from connguard.target import parse_target

PROD = DoctorSettings(interval_s=5, idle_threshold_s=300)
TARGET = parse_target("redis://127.0.0.1:6379", env={})
OWN_ID = 999_999
HOSTS = [f"10.1.0.{i}" for i in range(1, 9)]
SOURCE = re.compile(r"--source\s+(\S+)")

population = st.lists(st.tuples(
    st.sampled_from(HOSTS),
    st.sampled_from(["app", "sentinel", "replica", "pubsub", "monitor", "blocked"]),
    st.integers(1, 40),  # connections
    st.integers(1, 90_000),  # age
    st.floats(0, 1),  # idle as a share of age
), min_size=1, max_size=8)


def line(i: int, host: str, kind: str, age: int, idle: int) -> str:
    name, flags, cmd, sub = "api", "N", "get", 0
    if kind == "sentinel":
        name, cmd = "sentinel-1a2b3c4d-cmd", "ping"
    elif kind == "replica":
        flags, cmd = "S", "replconf"
    elif kind == "pubsub":
        flags, cmd, sub = "P", "subscribe", 1
    elif kind == "monitor":
        flags, cmd = "O", "monitor"
    elif kind == "blocked":
        flags, cmd = "b", "blpop"
    return (f"id={i} addr={host}:{10000 + i} laddr=10.0.0.1:6379 fd={i + 10} name={name} age={age} idle={idle} "
            f"flags={flags} db=0 sub={sub} psub=0 multi=-1 qbuf=0 omem=0 cmd={cmd} user=default")


def build(groups, *, maxclients: int, cluster_nodes: dict[str, str], peers: dict[str, str], taken_at: float,
          grow: int = 0):
    lines, i = [], 1
    replicas = []
    for host, kind, n, age, idle_share in groups:
        for _ in range(n + (grow if kind == "app" else 0)):
            lines.append(line(i, host, kind, age, int(age * idle_share)))
            i += 1
        if kind == "replica":
            replicas.append(host)
    slaves = sum(n for _, kind, n, _, _ in groups if kind == "replica")
    slave_lines = "".join(f"slave{k}:ip={h},port=6380,state=online,offset=1,lag=0\r\n" for k, h in enumerate(replicas))
    info = (f"# Server\r\nredis_version:7.2.4\r\nprocess_id:77\r\ntcp_port:6379\r\nuptime_in_seconds:90000\r\n"
            f"# Clients\r\nconnected_clients:{len(lines) + 1 - slaves}\r\ncluster_connections:0\r\n"
            f"maxclients:{maxclients}\r\nblocked_clients:0\r\n"
            f"# Stats\r\ntotal_connections_received:1000\r\nrejected_connections:{50 if grow else 0}\r\n"
            f"# Replication\r\nrole:master\r\nconnected_slaves:{slaves}\r\n{slave_lines}")
    own = (f"id={OWN_ID} addr=10.9.9.9:1 laddr=10.0.0.1:6379 fd=5 name=connguard age=1 idle=0 flags=N db=0 sub=0 "
           "psub=0 multi=-1 qbuf=0 cmd=client|list user=default")
    raw = RawCapture(taken_at, info, maxclients, "\n".join(lines + [own]) + "\n", (),
                     ServerConfig(timeout_s=0, tcp_keepalive_s=300, cluster_nodes=cluster_nodes))
    host = HostFacts(pid=77, fd_limit_soft=20_000, fd_limit_hard=20_000, open_fds=10, internal_peers=peers)
    return build_snapshot(raw, host=host, own_client_id=OWN_ID, observer_connections=1), set(replicas)


def targeted(diag) -> set[str]:
    return {h for f in diag.findings for a in f.actions for h in SOURCE.findall(a.command or "")}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=population, maxclients=st.integers(20, 400), node=st.sampled_from(HOSTS), peer=st.sampled_from(HOSTS),
       grow=st.integers(0, 6))
def test_no_action_targets_a_sentinel_replica_or_cluster_node_host(groups, maxclients, node, peer, grow):
    nodes, peers = {node: "primary"}, {peer: "Sentinel"}
    first, _ = build(groups, maxclients=maxclients, cluster_nodes=nodes, peers=peers, taken_at=1000.0)
    second, replicas = build(groups, maxclients=maxclients, cluster_nodes=nodes, peers=peers, taken_at=1005.0,
                             grow=grow)
    diag = diagnose([first, second], PROD, TARGET)
    known = internal_hosts(second)
    sentinels = {h for h, kind, *_ in groups if kind == "sentinel"}
    assert sentinels | replicas | {node, peer} <= set(known)
    assert not targeted(diag) & set(known), [(f.cause, [a.command for a in f.actions]) for f in diag.findings]


@settings(max_examples=100, deadline=None)
@given(counts=st.dictionaries(st.sampled_from(HOSTS), st.integers(1, 80), min_size=1, max_size=6),
       churn=st.dictionaries(st.sampled_from(HOSTS), st.integers(0, 40), max_size=6),
       internal=st.sets(st.sampled_from(HOSTS), min_size=1, max_size=3))
def test_a_refused_doctor_never_aborts_sockets_of_internal_hosts(counts, churn, internal):
    peers = {h: "replica" for h in internal}
    census = SocketCensus(port=6379, by_host=counts, taken_at=2.0)
    hosts = tuple(HostTurnover(h, counts.get(h, 0), churn.get(h, 0), churn.get(h, 0), 0) for h in set(counts) | set(churn))
    total = sum(counts.values())
    turnover = CensusTurnover(port=6379, window_s=2.0, before=total, after=total, accepted=total, hosts=hosts,
                              time_wait_before=0, time_wait_after=0, accepted_min=total)
    first = HostFacts(77, 20_000, 20_000, 10, passive_opens=1000, passive_opens_at=0.0, internal_peers=peers)
    last = dataclasses.replace(first, passive_opens=9000, passive_opens_at=2.0)
    diag = diagnose_unreachable(TARGET, PROD, "max number of clients reached", full=True, census=census, host=last,
                                turnover=turnover, first_host=first)
    assert not targeted(diag) & internal
