"""Never a WARNING or CRITICAL verdict without a finding that explains it.

The cases from the issues (5 hosts x 44 busy connections on maxclients 250; 5 x 40 on 220; 85 of 100 over
4 moderately busy hosts), then a property over generated client populations: Snapshots built from generated
CLIENT LIST text and INFO with the probe's own parsers, diagnosed purely."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time

from hypothesis import HealthCheck, given, settings, strategies as st

from connguard.analysis.capacity import WARNING_RATIO
from connguard.analysis.diagnosis import DoctorSettings, diagnose
from connguard.probe import RawCapture, build_snapshot
from connguard.target import parse_target

PROD = DoctorSettings(interval_s=5, idle_threshold_s=300)
TARGET = "redis://127.0.0.1:6379"
OWN_ID = 999_999


def run_diagnosis(first, second=None):
    """Today's diagnose(first, second, settings, target); the window form diagnose(window, settings, Target)."""
    params = list(inspect.signature(diagnose).parameters)
    if params[0] == "window":
        return diagnose([first] + ([second] if second else []), PROD, parse_target(TARGET, env={}))
    return diagnose(first, second, PROD, TARGET)


def client(i: int, host: str, age: int, idle: int, *, name: str = "app", flags: str = "N", cmd: str = "get",
           sub: int = 0) -> str:
    return (f"id={i} addr={host}:{10000 + i % 50000} laddr=10.0.0.1:6379 fd={i + 10} name={name} age={age} "
            f"idle={min(idle, age)} flags={flags} db=0 sub={sub} psub=0 multi=-1 qbuf=0 cmd={cmd} user=default "
            f"lib-name=redis-py lib-ver=5.0.1")


def snapshot(lines: list[str], *, maxclients: int, taken_at: float = 1000.0, received: int = 10_000,
             rejected: int = 0, slaves: int = 0, blocked: int = 0):
    info = (f"# Server\r\nredis_version:7.2.4\r\nprocess_id:77\r\ntcp_port:6379\r\nuptime_in_seconds:90000\r\n"
            f"# Clients\r\nconnected_clients:{len(lines) + 1 - slaves}\r\ncluster_connections:0\r\n"
            f"maxclients:{maxclients}\r\nblocked_clients:{blocked}\r\n"
            f"# Stats\r\ntotal_connections_received:{received}\r\nrejected_connections:{rejected}\r\n"
            f"# Replication\r\nrole:master\r\nconnected_slaves:{slaves}\r\n")
    own = client(OWN_ID, "10.9.9.9", 1, 0, name="connguard", cmd="client|list")
    raw = RawCapture(taken_at, info, maxclients, "\n".join(lines + [own]) + "\n")
    return build_snapshot(raw, own_client_id=OWN_ID, observer_connections=1)


def busy_blocks(hosts: int, per_host: int, *, age: int = 3600) -> list[str]:
    """Fixed blocks opened together, each connection running a command every couple of seconds."""
    return [client(h * 1000 + j, f"10.1.0.{h + 1}", age + j % 3, j % 3) for h in range(hosts) for j in range(per_host)]


def serious(diag) -> list:
    return [f for f in diag.findings if f.severity != "info"]


def test_five_busy_blocks_of_44_on_250_name_pool_oversize_with_both_fixes():
    diag = run_diagnosis(snapshot(busy_blocks(5, 44), maxclients=250))
    assert diag.status == "warning" and diag.capacity.ratio == 0.88
    pool = diag.finding("pool_oversize")
    assert pool is not None and pool.severity == "warning" and pool.evidence["pools"] == "busy"
    assert "busy" in pool.summary and "pipeline" in pool.summary
    commands = [a.command or "" for a in pool.actions]
    cap = next(c for c in commands if "max_connections=" in c)
    per_host = int(cap.split("max_connections=")[1].split(",")[0])
    assert 5 * per_host < WARNING_RATIO * 250, "capped pools stay under the 0.8 line"
    assert any("CONFIG SET maxclients" in c for c in commands), "the other fix: room within the fd limit"
    assert diag.findings[0].cause == "pool_oversize"


def test_five_busy_blocks_of_40_on_220_are_critical_pool_oversize():
    diag = run_diagnosis(snapshot(busy_blocks(5, 40), maxclients=220))
    assert diag.status == "critical" and diag.finding("pool_oversize").severity == "critical"


def test_idle_blocks_say_idle():
    lines = [client(h * 1000 + j, f"10.2.0.{h + 1}", 3600, 900) for h in range(5) for j in range(44)]
    pool = run_diagnosis(snapshot(lines, maxclients=250)).finding("pool_oversize")
    assert pool.evidence["pools"] == "idle" and "mostly idle" in pool.summary


def test_85_of_100_over_four_moderately_busy_hosts_names_a_cause():
    sizes = (31, 24, 18, 12)
    lines = [client(h * 1000 + j, f"10.3.0.{h + 1}", 500 + 97 * j, (j * 7) % 60) for h, n in enumerate(sizes)
             for j in range(n)]
    diag = run_diagnosis(snapshot(lines, maxclients=100))
    assert diag.status == "warning" and serious(diag), [f.cause for f in diag.findings]


def test_pressure_without_any_shape_gets_capacity_pressure_and_the_arithmetic():
    # One host, connections opened over the day and in use: no leak, no block, no storm, no refusals.
    lines = [client(j, "10.4.0.1", 100 + 300 * j, j % 5) for j in range(84)]
    diag = run_diagnosis(snapshot(lines, maxclients=100))
    assert diag.status == "warning"
    found = serious(diag)
    assert found and found[0].cause in ("capacity_pressure", "pool_oversize")
    if found[0].cause == "capacity_pressure":
        assert "10.4.0.1" in found[0].summary and any("CONFIG SET maxclients" in (a.command or "")
                                                        for a in found[0].actions)


# -- the property ------------------------------------------------------------------------------------

HOST = st.fixed_dictionaries({
    "count": st.integers(1, 60),
    "busy": st.sampled_from(["busy", "idle", "mixed", "once"]),
    "ages": st.sampled_from(["tight", "spread", "young"]),
    "kind": st.sampled_from(["normal"] * 6 + ["pubsub", "blocked"]),
})


def population(hosts: list[dict], seed: int) -> list[str]:
    lines, i = [], 0
    for h, spec in enumerate(hosts):
        for j in range(spec["count"]):
            i += 1
            k = (seed + 31 * i) % 997
            age = {"tight": 5000 + k % 3, "spread": 60 + k * 90, "young": 1 + k % 20}[spec["ages"]]
            idle = {"busy": k % 3, "idle": 300 + k * 5, "mixed": k % 900, "once": age}[spec["busy"]]
            flags, cmd, sub = {"normal": ("N", "get", 0), "pubsub": ("P", "subscribe", 1),
                               "blocked": ("b", "blpop", 0)}[spec["kind"]]
            lines.append(client(i, f"10.{h // 200}.{h % 200}.{1 + h % 50}", age, idle, flags=flags, cmd=cmd, sub=sub))
    return lines


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hosts=st.lists(HOST, min_size=1, max_size=25), seed=st.integers(0, 10_000),
       fill=st.floats(0.6, 1.05), rejected=st.sampled_from([0, 0, 5, 50_000]),
       grow=st.integers(0, 10), two=st.booleans())
def test_a_ratio_at_or_over_the_warning_line_always_has_a_finding(hosts, seed, fill, rejected, grow, two):
    lines = population(hosts, seed)
    maxclients = max(1, int(len(lines) / fill))
    first = snapshot(lines, maxclients=maxclients, rejected=rejected)
    second = None
    if two:
        extra = [client(500_000 + g, "10.250.0.1", 1, 1) for g in range(grow)]
        second = snapshot(lines + extra, maxclients=maxclients, taken_at=1005, rejected=rejected * 2,
                          received=10_000 + grow)
    diag = run_diagnosis(first, second)
    ratio = diag.capacity.ratio
    if ratio is not None and ratio >= PROD.warning_ratio:
        assert diag.findings, f"ratio {ratio} with no finding"
    if diag.status in ("warning", "critical"):
        assert serious(diag), f"{diag.status} at {ratio} explained only by {[f.cause for f in diag.findings]}"


# -- live: the issue's own case on a real server -------------------------------------------------------

def test_live_five_hosts_with_busy_blocks_near_the_limit_name_pool_oversize(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=250)
    crowd = crowd_for(server)
    for h in range(5):
        group = crowd.open(44, source=f"127.0.7.{h + 1}", kind="active", name=f"api-{h}")
        assert len(group.sockets) == 44
    time.sleep(1.0)
    out = subprocess.run([sys.executable, "-m", "connguard", "doctor", server.url, "--json", "--interval", "1"],
                         capture_output=True, text=True, timeout=60)
    data = json.loads(out.stdout)
    assert out.returncode == 1 and data["status"] == "warning", out.stderr
    causes = [f["cause"] for f in data["findings"] if f["severity"] != "info"]
    assert causes and causes[0] == "pool_oversize", causes
    pool = data["findings"][0]
    assert pool["evidence"]["pools"] == "busy" and pool["evidence"]["instances"] == 5
    assert any("max_connections=" in (a["command"] or "") for a in pool["actions"])
    assert any("CONFIG SET maxclients" in (a["command"] or "") for a in pool["actions"])
