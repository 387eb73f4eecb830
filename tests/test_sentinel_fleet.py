"""A real primary, two replicas and three Sentinels: `connguard fleet` finds them from a redis+sentinel:// URL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from connguard.discovery.sentinel import discover_sentinel
from connguard.discovery.sentinel_url import parse_sentinel_url
from connguard.lab.servers import free_port
from connguard.lab.topology import SentinelSet

from conftest import LAB_SENTINELS_PASSWORD

PASSWORD = LAB_SENTINELS_PASSWORD


@pytest.fixture
def sentinels(lab_sentinels: SentinelSet) -> SentinelSet:
    """The session's primary, two replicas and three Sentinels (conftest.py)."""
    return lab_sentinels


def cg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connguard", *args], capture_output=True, text=True, timeout=60)


def test_discovery_finds_the_primary_both_replicas_and_all_sentinels(sentinels: SentinelSet) -> None:
    topo = discover_sentinel(parse_sentinel_url(sentinels.url))
    assert sentinels.primary is not None
    by_role = {role: sorted(m.target.port for m in topo.members if m.role == role)
               for role in ("primary", "replica", "sentinel")}
    assert by_role == {"primary": [sentinels.primary.port],
                       "replica": sorted(r.port for r in sentinels.replica_servers),
                       "sentinel": sorted(s.port for s in sentinels.sentinel_servers)}
    data = [m for m in topo.members if m.role != "sentinel"]
    assert all(m.target.password == PASSWORD for m in data)  # carried to the data nodes ...
    assert all(m.target.password is None for m in topo.members if m.role == "sentinel")  # ... not to Sentinels
    assert topo.selected(all_members=False) == tuple(m for m in topo.members if m.role == "primary")


@pytest.mark.parametrize("cmd", [("fleet", "doctor"), ("doctor",)], ids=["fleet-doctor", "doctor"])
def test_doctor_on_the_primary_counts_the_sentinel_links_as_internal(cmd: tuple[str, ...], sentinels: SentinelSet) -> None:
    proc = cg(*cmd, "--once", "--json", sentinels.url)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["schema"] == "connguard.fleet/1" and out["kind"] == "sentinel" and out["exit_code"] == 0
    (primary,) = out["targets"]
    assert primary["schema"] == "connguard.doctor/1" and primary["member"]["role"] == "primary"
    assert primary["server"]["role"] == "master"
    classes = primary["classes"]
    # Each Sentinel holds two links (cmd and pubsub) to the primary; both count, with the two replicas.
    assert classes["sentinel"] == 6 and classes["replicas"] == 2
    assert classes["internal"] == 8
    assert out["summary"]["sentinel_links"] == 6
    assert PASSWORD not in proc.stdout + proc.stderr


@pytest.mark.parametrize("cmd", [("fleet", "status"), ("status",)], ids=["fleet-status", "status"])
def test_all_members_observes_replicas_and_sentinels_in_one_table(cmd: tuple[str, ...], sentinels: SentinelSet) -> None:
    proc = cg(*cmd, "--all-members", sentinels.url)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("OK: sentinel redis+sentinel://:***@") and "6 members" in lines[0]
    roles = [r for line in lines[1:] for r in ("primary", "replica", "sentinel") if f" {r} " in f"{line} "]
    assert sorted(roles) == ["primary", "replica", "replica", "sentinel", "sentinel", "sentinel"]
    assert PASSWORD not in proc.stdout + proc.stderr


def test_an_unknown_master_name_is_one_line_exit_3(sentinels: SentinelSet) -> None:
    proc = cg("fleet", "doctor", "--once", sentinels.url.replace("/mymaster", "/nosuchmaster"))
    assert proc.returncode == 3
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert "no Sentinel knows a master named 'nosuchmaster'" in proc.stderr
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr


def test_a_sentinel_url_without_a_master_name_is_one_line_exit_3(sentinels: SentinelSet) -> None:
    proc = cg("fleet", "status", "--json", sentinels.url.replace("/mymaster", ""))
    assert proc.returncode == 3 and "no master name" in proc.stderr
    assert json.loads(proc.stdout)["status"] == "unknown"
    assert len(proc.stderr.strip().splitlines()) == 1 and PASSWORD not in proc.stdout + proc.stderr


def test_a_dead_sentinel_in_the_url_is_a_named_warning_and_the_others_answer(sentinels: SentinelSet) -> None:
    dead = free_port()
    url = sentinels.url.replace("redis+sentinel://:" + PASSWORD + "@", f"redis+sentinel://:{PASSWORD}@127.0.0.1:{dead},")
    proc = cg("fleet", "status", url)
    assert proc.returncode == 1, proc.stderr  # one Sentinel fewer: a warning, and the primary is still observed
    assert f"sentinel 127.0.0.1:{dead}" in proc.stderr and "refused" in proc.stderr
    assert "primary" in proc.stdout and PASSWORD not in proc.stdout + proc.stderr


def test_a_sentinel_line_in_a_fleet_file_expands_to_its_primary(sentinels: SentinelSet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert sentinels.primary is not None
    path = tmp_path / "fleet.toml"
    path.write_text(f'[[target]]\nurl = "{sentinels.url}"\nname = "orders"\ngroup = "prod"\n')
    proc = cg("fleet", "status", "--json", "--fleet", str(path))
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["kind"] == "fleet", proc.stderr
    (primary,) = out["targets"]
    assert primary["member"]["name"] == f"orders/127.0.0.1:{sentinels.primary.port}"
    assert primary["member"]["role"] == "primary" and primary["member"]["group"] == "prod"
    assert PASSWORD not in proc.stdout + proc.stderr


def test_a_sentinel_url_that_points_at_a_plain_server_is_one_line_exit_3(sentinels: SentinelSet) -> None:
    assert sentinels.primary is not None
    replica = sentinels.replica_servers[0].port
    proc = cg("fleet", "status", f"redis+sentinel://127.0.0.1:{replica}/mymaster")
    assert proc.returncode == 3 and "auth failed" in proc.stderr and "?sentinel_password=" in proc.stderr
    # The data password is never sent to a Sentinel, so it does not get in either: still the Sentinel hint.
    proc = cg("fleet", "status", f"redis+sentinel://:{PASSWORD}@127.0.0.1:{replica}/mymaster")
    assert proc.returncode == 3 and "?sentinel_password=" in proc.stderr and PASSWORD not in proc.stderr
    # With a Sentinel password that works there, connguard gets in and finds it is no Sentinel.
    proc = cg("fleet", "status", f"redis+sentinel://127.0.0.1:{replica}/mymaster?sentinel_password={PASSWORD}")
    assert proc.returncode == 3 and f"sentinel 127.0.0.1:{replica} is not a Sentinel" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr


def test_doctor_on_all_members_sees_the_sentinel_links_on_the_replicas_too(sentinels: SentinelSet) -> None:
    proc = cg("fleet", "doctor", "--once", "--all-members", "--json", sentinels.url)
    out = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    by_role: dict[str, list[dict]] = {}
    for t in out["targets"]:
        by_role.setdefault(t["member"]["role"], []).append(t)
    assert {k: len(v) for k, v in by_role.items()} == {"primary": 1, "replica": 2, "sentinel": 3}
    assert all(t["reachable"] and t["schema"] == "connguard.doctor/1" for t in out["targets"])
    for replica in by_role["replica"]:
        assert replica["server"]["role"] == "slave"
        assert replica["classes"]["sentinel"] == 6 and replica["classes"]["primary_link"] == 1
    assert out["summary"]["sentinel_links"] >= 6 * 3  # primary and both replicas, at least
    assert PASSWORD not in proc.stdout + proc.stderr
