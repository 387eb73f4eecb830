"""Restricted ACL users: without CONFIG the doctor reads maxclients from INFO; without CLIENT LIST it
works from INFO alone and says what it could not see."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

import doctor_scenarios as ds

BINARIES = ds.binaries_for_tests()
pytestmark = pytest.mark.skipif(not BINARIES, reason="no server binary found")


@pytest.fixture(params=BINARIES, ids=[b.label for b in BINARIES])
def acl_server(request, start_server, crowd_for):
    server = start_server(request.param, maxclients=50)
    admin = redis.Redis(port=server.port)
    admin.execute_command("ACL", "SETUSER", "noconfig", "on", ">pw1", "~*", "&*", "+@all", "-config")
    admin.execute_command("ACL", "SETUSER", "nolist", "on", ">pw2", "~*", "&*", "+@all", "-client|list")
    admin.close()
    crowd = crowd_for(server)
    crowd.open(30, source="127.0.0.40", kind="blocked", name="queue-worker")
    return server


def doctor_json(url: str) -> tuple[int, dict]:
    out = subprocess.run([sys.executable, "-m", "connguard", "doctor", url, "--json", "--once", "--idle-threshold", "2"],
                         capture_output=True, text=True, timeout=60)
    return out.returncode, json.loads(out.stdout)


@pytest.mark.timeout(60)
def test_without_config_maxclients_comes_from_info(acl_server):
    code, data = doctor_json(f"redis://noconfig:pw1@127.0.0.1:{acl_server.port}")
    assert data["reachable"] is True and data["capacity"]["maxclients"] == 50
    assert data["capacity"]["maxclients_source"] == "info"
    assert any("CONFIG GET maxclients denied" in x for x in data["limitations"])
    assert "blocked_clients" in [f["cause"] for f in data["findings"]]
    assert code == 1 and "pw1" not in json.dumps(data)


@pytest.mark.timeout(60)
def test_without_client_list_it_works_from_info_and_says_what_it_missed(acl_server):
    code, data = doctor_json(f"redis://nolist:pw2@127.0.0.1:{acl_server.port}")
    assert data["reachable"] is True and data["sources"] is None
    assert any("CLIENT LIST denied" in x for x in data["limitations"])
    blocked = next(f for f in data["findings"] if f["cause"] == "blocked_clients")
    assert blocked["evidence"]["blocked_clients_info"] == 30, "INFO alone still shows the blocked clients"
    assert data["capacity"]["used"] in (30, 31) and code == 1  # 30 blocked (+ this doctor, where counted)


@pytest.mark.timeout(60)
def test_an_info_only_user_is_not_locked_out_by_client_setname(acl_server):
    """Allowed INFO but not CLIENT SETNAME: the connection stays unnamed instead of failing as 'not redis'."""
    admin = redis.Redis(port=acl_server.port)
    admin.execute_command("ACL", "SETUSER", "infoonly", "on", ">pw3", "-@all", "+info", "+ping")
    admin.close()
    code, data = doctor_json(f"redis://infoonly:pw3@127.0.0.1:{acl_server.port}")
    assert data["reachable"] is True and data["error"] is None, data["error"]
    assert data["capacity"]["maxclients"] == 50 and data["sources"] is None
    assert "blocked_clients" in [f["cause"] for f in data["findings"]] and code == 1
