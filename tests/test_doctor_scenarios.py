"""The doctor names the right cause on real servers (Redis 6.2, 7.0, Valkey 9.1), one live scenario per cause."""

from __future__ import annotations

import functools
import re

import pytest

import doctor_scenarios as ds
from connguard.analysis.diagnosis import Diagnosis

# Every server found: Redis 7.0 and Valkey 9.1 (the minimum) and Redis 6.2, where every cause exists
# too (6.2 has no lib-name: CLIENT SETINFO is refused there and the rules go by names and idle times).
BINARIES = ds.find_binaries()
pytestmark = pytest.mark.skipif(not BINARIES, reason="no server binary found")
SERIOUS = ("warning", "critical")


def serious_causes(diag: Diagnosis) -> set[str]:
    return {f.cause for f in diag.findings if f.severity in SERIOUS}


@functools.lru_cache(maxsize=None)
def run(name: str, binary) -> tuple[ds.Live, Diagnosis]:
    """Each scenario runs once per server version; the tests below read the same live diagnosis."""
    with ds.SCENARIOS[name](binary) as live:
        return live, live.doctor()


# One xdist group per version: the tests that read one cached scenario run on the worker that ran it.
@pytest.fixture(params=[pytest.param(b, marks=pytest.mark.xdist_group(f"scenarios-{b.label}")) for b in BINARIES],
                ids=[b.label for b in BINARIES])
def server_binary(request):
    return request.param


CAUSES = ["connection_leak", "pool_oversize", "serverless_fanout", "retry_storm", "maxclients_too_low",
          "fd_limit", "internal_connections", "blocked_clients"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", CAUSES)
def test_each_cause_is_named_and_nothing_else_at_warning(name, server_binary):
    live, diag = run(name, server_binary)
    assert serious_causes(diag) == set(live.expected), [(f.cause, f.severity, f.summary) for f in diag.findings]
    main = diag.finding(name)
    assert main is not None and main.severity in SERIOUS and 0 < main.confidence <= 1
    for host in live.offenders:
        assert host in main.hosts, f"{host} not named in {main.evidence}"
    assert main.actions, "every finding says what to do next"
    assert diag.status == ("critical" if "exhausted" in live.expected else "warning")


@pytest.mark.timeout(60)
def test_a_leak_is_killed_by_id_with_a_timeout_safety_net(server_binary):
    live, diag = run("connection_leak", server_binary)
    leak = diag.finding("connection_leak")
    assert leak.evidence["per_host"][0]["host"] == "127.0.0.5"
    assert leak.evidence["used_delta"] > 0, "the leak was growing while the doctor watched"
    commands = [a.command or "" for a in leak.actions]
    assert any(c.startswith("connguard kill ") and "--source 127.0.0.5 --idle 2" in c for c in commands)
    raw = next(c for c in commands if "CLIENT KILL ID" in c)
    assert not re.search(r"\d+\.\d+\.\d+\.\d+:\d{2,5}\b.*CLIENT KILL|CLIENT KILL ADDR", raw), "never by ip:port"
    ids = [int(x) for x in raw.split(";")[0].split()[3:]]
    clients = {s.host: s for s in diag.sources}
    assert len(ids) == min(50, clients["127.0.0.5"].idle_over_threshold)
    timeout = next(a for a in leak.actions if "CONFIG SET timeout" in (a.command or ""))
    assert timeout.changes_server and "pub/sub" in timeout.title and "blocked" in timeout.title
    assert all(a.changes_server for a in leak.actions if "KILL" in (a.command or "") or "kill" in (a.command or ""))


@pytest.mark.timeout(60)
def test_oversized_pools_get_n_times_m_sizing_not_a_kill(server_binary):
    _live, diag = run("pool_oversize", server_binary)
    pool = diag.finding("pool_oversize")
    assert pool.evidence["instances"] == 4 and pool.evidence["pool_size"] == 22
    assert pool.evidence["opened_together"] and pool.evidence["similar_blocks"]
    assert "4 x 22" in pool.summary
    assert not any("KILL" in (a.command or "") for a in pool.actions)


@pytest.mark.timeout(60)
def test_fanout_recommends_a_proxy_or_module_level_client_not_a_kill(server_binary):
    _live, diag = run("serverless_fanout", server_binary)
    fan = diag.finding("serverless_fanout")
    assert fan.evidence["sources"] >= 50
    text = " ".join(a.title for a in fan.actions).lower()
    assert "proxy" in text and "module level" in text
    assert not any("kill" in (a.command or "").lower() for a in fan.actions)


@pytest.mark.timeout(60)
def test_storm_and_too_low_are_told_apart_by_the_rejection_rate(server_binary):
    _l, storm = run("retry_storm", server_binary)
    _l, low = run("maxclients_too_low", server_binary)
    assert storm.rates.rejected_per_s > 10 * max(low.rates.rejected_per_s, 1)
    s = storm.finding("retry_storm")
    assert any("guard" in (a.command or "") or "backoff" in a.title for a in s.actions)
    # A full server refuses redis-cli; then the raise is `connguard config --maxclients N`, which waits for a slot.
    raise_ = [a for a in low.finding("maxclients_too_low").actions
              if "CONFIG SET maxclients" in (a.command or "") or "--maxclients" in (a.command or "")]
    assert raise_ and raise_[0].changes_server
    words = raise_[0].command.split()
    value = int(words[words.index("--maxclients") + 1] if "--maxclients" in words else words[-1])
    assert 40 < value <= low.capacity.fd_limit - 32


@pytest.mark.timeout(60)
def test_fd_limit_is_a_warning_even_at_low_usage(server_binary):
    _live, diag = run("fd_limit", server_binary)
    fd = diag.finding("fd_limit")
    assert diag.capacity.maxclients == 96 and diag.capacity.ratio < 0.2
    assert fd.severity == "warning" and fd.evidence["fd_limit"] == 128 and fd.evidence["spare"] == 0
    assert any("prlimit" in (a.command or "") for a in fd.actions)


@pytest.mark.timeout(60)
def test_internal_connections_are_counted_with_a_reserve(server_binary):
    _live, diag = run("internal_connections", server_binary)
    f = diag.finding("internal_connections")
    assert f.evidence["replicas"] == 3 and f.evidence["sentinel"] == 2
    assert "100-200" in f.summary
    assert diag.classes.internal == 5


@pytest.mark.timeout(60)
def test_a_healthy_server_has_no_warnings_and_exit_ok(server_binary):
    _live, diag = run("healthy", server_binary)
    assert serious_causes(diag) == set()
    assert diag.status == "ok"


@pytest.mark.timeout(60)
def test_leak_and_blocked_clients_are_both_reported(server_binary):
    _live, diag = run("mixed", server_binary)
    assert {"connection_leak", "blocked_clients"} <= serious_causes(diag)
    leak = diag.finding("connection_leak")
    assert leak.hosts == ("127.0.0.5",), "blocked consumers are not leak candidates"
    assert "127.0.0.40" in diag.finding("blocked_clients").hosts


@pytest.mark.timeout(60)
def test_a_slow_subscriber_is_named_output_buffer_bloat_with_its_host(server_binary):
    binary = server_binary  # Redis 6.2 too: omem, tot-mem and INFO memory exist there
    live, diag = run("output_buffer_bloat", binary)
    assert serious_causes(diag) == {"output_buffer_bloat"}, [(f.cause, f.severity, f.summary) for f in diag.findings]
    f = diag.finding("output_buffer_bloat")
    assert f.severity == "warning" and f.hosts == ("127.0.0.88",), f.evidence
    top = f.evidence["top"][0]
    assert top["kind"] == "pubsub" and top["sub"] == 1 and top["name"] == "price-feed" and top["cmd"] == "subscribe"
    assert top["omem"] > 8 * 2 ** 20 and 0 < top["share_of_used_memory"] <= 1
    assert f.evidence["clients"] == 1, "the quiet subscriber and the web clients are not offenders"
    assert f.evidence["mem_clients_normal"] >= top["omem"] and f.evidence["used_memory"] > top["omem"]
    commands = [a.command or "" for a in f.actions]
    assert any('CONFIG SET client-output-buffer-limit "pubsub 32mb 8mb 60"' in c for c in commands)
    kill = next(c for c in commands if c.startswith("connguard kill "))
    assert "--output-buffer-over 1048576" in kill
    assert any(c.startswith("for id in ") and f" {top['id']};" in c for c in commands)
    if binary.flavor == "valkey":  # Valkey 8.0+ counts clients dropped at the limit
        assert f.evidence["client_output_buffer_limit_disconnections"] == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["burst_leak", "burst_leak_named"])
def test_a_burst_leak_that_stopped_growing_is_named_a_leak_with_its_host(name, server_binary):
    live, diag = run(name, server_binary)
    assert serious_causes(diag) == {"connection_leak"}, [(f.cause, f.severity, f.summary) for f in diag.findings]
    leak = diag.finding("connection_leak")
    assert leak.hosts == ("127.0.0.7",) and leak.severity == "warning"
    assert leak.evidence["used_delta"] == 0, "the burst was over before the doctor looked"
    signals = " ".join(leak.evidence["burst"]["127.0.0.7"])
    assert ("no client name" in signals) == (name == "burst_leak")
    if name == "burst_leak_named":
        assert "opened" in signals and "apart" in signals
    commands = [a.command or "" for a in leak.actions]
    kill = next(c for c in commands if c.startswith("connguard kill "))
    assert "--source 127.0.0.7 --idle" in kill
    idle = int(kill.split("--idle ")[1].split()[0])
    assert idle >= 2, "the kill reaches the burst, not the busy pool beside it (a PING every 0.5 s)"
    ids = [int(x) for x in next(c for c in commands if "CLIENT KILL ID" in c).split(";")[0].split()[3:]]
    assert len(ids) == 30


@pytest.mark.timeout(60)
def test_a_static_pile_over_half_the_limit_is_a_leak_or_an_abandoned_pool(server_binary):
    _live, diag = run("abandoned_pile", server_binary)
    assert serious_causes(diag) == {"connection_leak"}, [(f.cause, f.severity, f.summary) for f in diag.findings]
    leak = diag.finding("connection_leak")
    assert leak.hosts == ("127.0.0.9",) and leak.evidence["abandoned_pile"] == ["127.0.0.9"]
    assert "abandoned pool" in leak.summary
    assert any((a.command or "").startswith("connguard kill ") and "--source 127.0.0.9" in (a.command or "")
               for a in leak.actions)


@pytest.mark.timeout(60)
def test_a_growing_fanout_warns_below_the_line_with_its_forecast(server_binary):
    _live, diag = run("fanout_growing", server_binary)
    fan = diag.finding("serverless_fanout")
    assert diag.capacity.ratio < 0.8, "the point is a warning before the 0.8 line"
    assert fan.severity == "warning" and serious_causes(diag) == {"serverless_fanout"}
    grow = fan.evidence["growing"]
    assert grow["used_delta"] >= 2 and grow["per_min"] > 0 and grow["seconds_to_full"] > 0
    assert "growing" in fan.summary and "full in about" in fan.summary
    assert any("maxclients" in (a.command or "") for a in fan.actions)
