"""`connguard kill` as an operator meets it: what a dry run shows, bad selectors, errors as one line or one
JSON object, explicit IDs, and a full server (wait for a slot; or abort a host's sockets with ss -K)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import redis

from connguard.lab.servers import free_port


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "REDISCLI_AUTH", "COLUMNS"}}
    proc = subprocess.run([sys.executable, "-m", "connguard", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def one_line(proc: subprocess.CompletedProcess[str], code: int = 3) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("connguard: "), proc.stderr
    return lines[0]


def test_a_dry_run_lists_each_client_it_would_kill_in_text_and_json(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=50)
    crowd_for(server).open(3, source="127.0.0.31", name="orders-worker-with-a-rather-long-name-for-the-table")
    time.sleep(1.1)
    ids = {c["id"]: c for c in redis.Redis(port=server.port).client_list() if c["addr"].startswith("127.0.0.31:")}
    data = json.loads(cli("kill", server.url, "--source", "127.0.0.31", "--json").stdout)
    assert data["dry_run"] is True and data["would_kill"] == 3
    assert {int(c["id"]) for c in data["targets"]} == {int(i) for i in ids}
    for c in data["targets"]:
        assert c["addr"].startswith("127.0.0.31:") and c["name"].startswith("orders-worker") and c["idle_s"] >= 1
    text = cli("kill", server.url, "--source", "127.0.0.31")
    assert text.returncode == 0
    for i, c in ids.items():
        row = next(line for line in text.stdout.splitlines() if c["addr"] in line)
        assert str(i) in row and "orders-worker-with-a-rather-long-name-for-the-table" in row and "s" in row
    # Piped output is not wrapped at 80 columns: the headline stays one line.
    assert any(line.startswith("Would kill 3 client(s)") and line.rstrip().endswith("to disconnect)")
               for line in text.stdout.splitlines())


@pytest.mark.parametrize("args, words", [
    (("--source", "notanip"), "not an IP address"),
    (("--idle", "nan"), "not a finite number"),
    (("--idle", "-1"), "out of range"),
    (("--max", "inf"), "not a finite number"),
    (("--id", "0"), "out of range"),
    (("--source", "127.0.0.1", "--force"), "--force applies only"),
])
def test_bad_selectors_are_refused_in_one_line(args, words):
    line = one_line(cli("kill", f"redis://127.0.0.1:{free_port()}", *args))
    assert words in line


def test_unreachable_in_json_is_one_error_object():
    proc = cli("kill", f"redis://:pw-S3CRET@127.0.0.1:{free_port()}", "--source", "127.0.0.1", "--json")
    assert proc.returncode == 3 and "pw-S3CRET" not in proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert (data["schema"], data["status"], data["reachable"]) == ("connguard.kill/1", "unknown", False)
    assert "refused the connection" in data["error"] and data["target"].startswith("redis://:***@")


def test_a_user_without_client_list_gets_one_line_not_a_traceback(default_binary, start_server):
    server = start_server(default_binary, maxclients=50)
    admin = redis.Redis(port=server.port)
    admin.execute_command("ACL", "SETUSER", "nolist", "on", ">pw2", "~*", "+@all", "-client|list")
    admin.close()
    line = one_line(cli("kill", f"redis://nolist:pw2@127.0.0.1:{server.port}", "--idle", "1"))
    assert "denied" in line and "CLIENT LIST" in line and "pw2" not in line
    data = json.loads(cli("kill", f"redis://nolist:pw2@127.0.0.1:{server.port}", "--idle", "1", "--json").stdout)
    assert data["reachable"] is True and data["error_kind"] == "denied"


def test_explicit_ids_touch_a_protected_client_only_with_force_and_name_it(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=50)
    crowd = crowd_for(server)
    crowd.open(1, source="127.0.0.32", kind="pubsub")
    crowd.open(1, source="127.0.0.33", name="plain")
    admin = redis.Redis(port=server.port)
    by_addr = {c["addr"].rpartition(":")[0]: int(c["id"]) for c in admin.client_list()}
    sub, plain = by_addr["127.0.0.32"], by_addr["127.0.0.33"]
    args = ("kill", server.url, "--id", str(sub), "--id", str(plain), "--id", "999999", "--json", "--yes")
    data = json.loads(cli(*args).stdout)
    assert data["killed"] == 1 and data["ids"] == [plain] and data["missing_ids"] == [999999]
    assert [(s["id"], s["reason"]) for s in data["skipped"]] == [(sub, "pub/sub subscriber")]
    forced = json.loads(cli(*args, "--force").stdout)
    assert forced["killed"] == 1 and forced["ids"] == [sub]
    assert forced["forced"][0]["protected_as"] == "pub/sub subscriber"
    assert not [c for c in admin.client_list() if c["addr"].startswith(("127.0.0.32:", "127.0.0.33:"))]
    admin.close()


def test_a_blocked_client_by_command_is_protected_as_classify_says(default_binary, start_server, crowd_for):
    """XREAD BLOCK parks a client without the `b` flag in some versions; classify.py knows it by its command."""
    server = start_server(default_binary, maxclients=50)
    crowd_for(server).open(2, source="127.0.0.34", kind="blocked")
    data = json.loads(cli("kill", server.url, "--source", "127.0.0.34", "--json").stdout)
    assert data["would_kill"] == 0 and {s["reason"] for s in data["skipped"]} == {
        "blocked in a command (use --include-blocked)"}


def test_kill_waits_for_a_slot_on_a_full_server(full_server):
    """A storm frees a slot now and then: kill rides it out with the doctor's jittered backoff."""
    server, _monitor, _crowd, leak = full_server
    threading.Timer(1.0, leak.sockets[0].close).start()
    proc = cli("kill", server.url, "--source", "127.0.0.5", "--yes", "--json", "--connect-timeout", "8")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["killed"] == 8


def test_a_static_pile_refuses_kill_and_names_what_still_works(full_server):
    server, *_ = full_server
    line = one_line(cli("kill", server.url, "--source", "127.0.0.5", "--connect-timeout", "0.5"), code=2)
    assert "server full" in line and "--sockets --source HOST" in line


@pytest.mark.skipif(not shutil.which("ss") or os.geteuid() != 0, reason="needs ss (iproute2) and root")
def test_sockets_frees_slots_of_a_full_server_from_its_host(full_server):
    server, monitor, _crowd, _leak = full_server
    dry = cli("kill", server.url, "--sockets", "--source", "127.0.0.5", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["by_source"] == {"127.0.0.5": 9}
    assert plan["commands"] == [f"ss -K dst 127.0.0.5 sport = :{server.port}"] and "replica" in plan["effect"]
    with pytest.raises(redis.ConnectionError):  # still full: the dry run changed nothing
        redis.Redis(port=server.port, socket_timeout=2).ping()
    text = cli("kill", server.url, "--sockets", "--source", "127.0.0.5")
    assert "aborts every TCP connection from that host" in text.stdout and "ss -K dst 127.0.0.5" in text.stdout
    done = json.loads(cli("kill", server.url, "--sockets", "--source", "127.0.0.5", "--yes", "--json").stdout)
    assert done["aborted"] == 9 and done["freed_slots"] == 9 and done["errors"] == []
    fresh = redis.Redis(port=server.port, socket_timeout=2)
    assert fresh.ping()
    assert monitor.ping(), "the connection from another host was left alone"
    assert fresh.info("clients")["connected_clients"] == 2
    fresh.close()


def test_sockets_is_refused_for_a_server_on_another_host_and_with_other_selectors():
    line = one_line(cli("kill", "redis://192.0.2.10:6379", "--sockets", "--source", "10.0.0.1"))
    assert "only on the server's own host" in line
    line = one_line(cli("kill", "redis://127.0.0.1:6379", "--sockets", "--source", "10.0.0.1", "--idle", "5"))
    assert "--source only" in line
