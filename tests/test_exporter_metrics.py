"""The metric mapping, without a server: golden captures in, Prometheus families out."""

from __future__ import annotations

import math

import pytest

from connguard.analysis.classify import classify
from connguard.analysis.diagnosis import diagnose
from connguard.analysis.sources import source_table
from connguard.monitor.exporter import render
from connguard.monitor.exporter_metrics import (
    ProbeView, families, host_rows, maxclients_lowered,
)
from connguard.monitor.exporter_targets import probe_reason
from connguard.errors import AuthFailed, BadTarget, NotRedis, ServerFull, Unreachable
from test_analysis_golden import CASES, load


def samples(metrics) -> dict[str, float]:
    out = {}
    for line in render(metrics).decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


@pytest.mark.parametrize("folder", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_host_rows_agree_with_the_doctors_source_table(folder):
    snaps, settings, _ = load(folder)
    snap = snaps[-1]
    rows, pubsub = host_rows(snap, settings.idle_threshold_s)
    table = source_table(snap, settings.idle_threshold_s, top=len(rows))
    assert [(r.host, r.connections, r.idle_over_threshold) for r in rows] == \
        [(s.host, s.connections, s.idle_over_threshold) for s in table.all]
    assert [r.name for r in rows] == [s.names[0] if s.names else "" for s in table.all]
    assert [r.lib for r in rows] == [s.libs[0] if s.libs else "" for s in table.all]
    assert pubsub == classify(snap).pubsub


@pytest.mark.parametrize("folder", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_every_golden_case_maps_to_bounded_series_and_its_causes(folder):
    snaps, settings, expected = load(folder)
    assert len(snaps) == 2
    diag = diagnose(snaps, settings, "redis://127.0.0.1:6379")
    m = samples(families(ProbeView(snapshot=snaps[-1], listed=snaps[-1], client_list_age_s=0.0, diagnosis=diag,
                                   top_sources=3, idle_threshold_s=settings.idle_threshold_s)))
    sources = [k for k in m if k.startswith("connguard_source_connections{")]
    assert len(sources) <= 4
    assert sum(m[k] for k in sources) == m["connguard_client_idle_seconds_count"]
    info = snaps[-1].info
    assert m["connguard_connections_used"] == info.connected_clients - 1 + info.connected_slaves + info.cluster_connections
    assert m["connguard_maxclients"] == snaps[-1].maxclients
    assert {f.cause for f in diag.findings} >= set(expected["expected_causes"])
    firing = {k for k, v in m.items() if k.startswith("connguard_cause{") and v == 1}
    assert firing == {f'connguard_cause{{cause="{f.cause}",severity="{f.severity}"}}' for f in diag.findings}


def test_used_is_the_true_count_and_refusing_is_the_servers_own_count():
    snaps, _, _ = load(next(c for c in CASES if c.name == "internal_connections"))
    snap = snaps[-1]
    m = samples(families(ProbeView(snapshot=snap)))
    info = snap.info
    assert m["connguard_connections_used"] == info.connected_clients - 1 + info.connected_slaves + info.cluster_connections
    assert m['connguard_connections{kind="replicas"}'] == info.connected_slaves > 0
    assert m["connguard_server_refusing"] == float(info.used >= snap.maxclients)
    assert math.isnan(m["connguard_seconds_to_exhaustion"])
    assert "connguard_source_connections" not in " ".join(m)  # no CLIENT LIST given, no per-source series


def test_a_refused_scrape_says_refusing_and_down_without_server_metrics():
    m = samples(families(ProbeView(snapshot=None, refused=True, error_reason="refused", observer_refusals=4)))
    assert m["connguard_up"] == 0 and m["connguard_server_refusing"] == 1
    assert m['connguard_probe_error{reason="refused"}'] == 1
    assert m["connguard_observer_refusals_total"] == 4
    assert "connguard_connections_used" not in m


def test_fd_limit_lowering():
    assert maxclients_lowered(992, 1024) == 1 and maxclients_lowered(10000, 20000) == 0
    assert maxclients_lowered(4064, None) == 1 and maxclients_lowered(10000, None) == 0
    assert maxclients_lowered(None, 1024) is None


def test_client_list_cost_comes_from_commandstats():
    from dataclasses import replace

    snaps, _, _ = load(CASES[0])
    sections = dict(snaps[-1].info.sections)
    sections["commandstats"] = {"cmdstat_client|list": "calls=4,usec=28000,usec_per_call=7000.00,rejected_calls=0"}
    snap = replace(snaps[-1], info=replace(snaps[-1].info, sections=sections))
    assert samples(families(ProbeView(snapshot=snap)))["connguard_client_list_seconds"] == pytest.approx(0.007)


def test_probe_error_reasons():
    assert probe_reason(BadTarget("x")) == "bad_target"
    assert probe_reason(AuthFailed("x")) == "auth"
    assert probe_reason(NotRedis("x")) == "not_redis"
    assert probe_reason(ServerFull("x")) == "refused"
    assert probe_reason(Unreachable("redis://h:1 refused the connection: nothing listens there")) == "refused"
    assert probe_reason(Unreachable("TLS handshake with rediss://h:1 failed")) == "tls"
    assert probe_reason(Unreachable("redis://h:1 did not answer in time")) == "unreachable"
    assert probe_reason(None) is None
