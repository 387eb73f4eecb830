"""Topology and the command line on real servers: the password forms never print, one way to name a target
(bare host:port, redis+sentinel:// for every command), fleets (empty, piped wide, mixed clusters and Sentinel
sets in TOML), multi-seed cluster URLs with a full first seed, a Sentinel's own port, and `watch` at a full
server (paced attempts counted by the server's rejected_connections) and across a real SENTINEL FAILOVER."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Iterator

import pytest
import redis

from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerProcess
from connguard.lab.topology import ClusterSet, SentinelProcess, SentinelSet

from conftest import BINARIES
from exporter_running import run_exporter  # noqa: F401 (a fixture)

REDIS7 = [b for b in BINARIES if b.flavor == "redis" and b.version.startswith("7.")] or BINARIES
SECRET = "Zq7pass"


def cg(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connguard", *args], capture_output=True, text=True,
                          timeout=timeout)


def info(port: int, section: str, password: str | None = None) -> dict:
    with redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5) as r:
        return r.info(section)


@pytest.fixture(scope="module")
def locked() -> Iterator[ServerProcess]:
    if not REDIS7:
        pytest.skip("no server binary found")
    server = ServerProcess(REDIS7[0], password=SECRET, maxclients=64).start()
    yield server
    server.stop()


# -- credentials ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["lone", "colon", "query"])
def test_every_password_form_logs_in_and_never_prints(locked: ServerProcess, form: str, tmp_path) -> None:
    url = {"lone": f"redis://{SECRET}@127.0.0.1:{locked.port}",  # redis-cli reads a lone userinfo as the password
           "colon": f"redis://:{SECRET}@127.0.0.1:{locked.port}",
           "query": f"redis://127.0.0.1:{locked.port}?password={SECRET}"}[form]
    plain = cg("status", url)
    as_json = cg("status", "--json", url)
    record = tmp_path / "rec.jsonl"
    recorded = cg("watch", "--json", "--count", "2", "--interval", "0.2", "--record", str(record), url)
    for proc in (plain, as_json, recorded):
        assert proc.returncode == 0, proc.stderr
        assert SECRET not in proc.stdout + proc.stderr
    assert plain.stdout.startswith(f"OK: redis://:***@127.0.0.1:{locked.port}")
    assert json.loads(as_json.stdout)["target"] == f"redis://:***@127.0.0.1:{locked.port}"
    assert SECRET not in record.read_text() and "***" in record.read_text()


def test_a_wrong_lone_password_is_auth_failed_without_the_secret(locked: ServerProcess) -> None:
    proc = cg("status", "--json", f"redis://wrong{SECRET}@127.0.0.1:{locked.port}")
    assert proc.returncode == 3 and SECRET not in proc.stdout + proc.stderr
    assert "rejected the username or password" in json.loads(proc.stdout)["error"]


# -- one way to name a target ---------------------------------------------------------------------------------
def test_a_bare_host_port_works_for_status_watch_kill_and_config(locked: ServerProcess) -> None:
    env_url = f"127.0.0.1:{locked.port}"
    env = {"REDISCLI_AUTH": SECRET}
    run = lambda *a: subprocess.run([sys.executable, "-m", "connguard", *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=60, env={**__import__("os").environ, **env})
    status = run("status", env_url)
    assert status.returncode == 0 and status.stdout.startswith(f"OK: redis://:***@{env_url}"), status.stderr
    watch = run("watch", "--json", "--count", "1", env_url)
    assert watch.returncode == 0 and json.loads(watch.stdout)["reachable"] is True, watch.stderr
    kill = run("kill", "--source", "127.0.0.99", env_url)  # a dry run: nothing from that host
    assert kill.returncode in (0, 1) and "Traceback" not in kill.stderr and "bad target" not in kill.stderr
    config = run("config", env_url)
    assert "bad target" not in config.stderr and "Traceback" not in config.stderr


# -- fleets ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "# only a comment\n\n   # another\n"])
def test_an_empty_fleet_is_one_line_and_unknown(tmp_path, text: str) -> None:
    path = tmp_path / "fleet.txt"
    path.write_text(text)
    proc = cg("fleet", "status", "--fleet", str(path))
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "names no targets" in proc.stderr


def test_a_piped_fleet_wider_than_200_columns_is_not_wrapped(locked: ServerProcess, tmp_path) -> None:
    name = "orders-" + "x" * 190
    path = tmp_path / "fleet.toml"
    path.write_text(f'[[target]]\nurl = "redis://:{SECRET}@127.0.0.1:{locked.port}"\nname = "{name}"\n')
    proc = cg("fleet", "status", str(path))  # stdout is a pipe here
    assert proc.returncode == 0, proc.stderr
    (row,) = [line for line in proc.stdout.splitlines() if line[:1].isdigit()]
    assert name in row and len(row) > 200 and " ok " in row.lower()  # the whole row on one line, status included
    assert all(line.strip() != "x" * len(line.strip()) for line in proc.stdout.splitlines() if line.strip())


# -- Sentinel ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[SentinelSet]:
    if not REDIS7:
        pytest.skip("no server binary found")
    with SentinelSet(REDIS7[0], replicas=1, sentinels=1, maxclients=100) as s:
        yield s


def test_status_on_a_sentinel_port_says_it_is_a_sentinel_with_its_masters(sentinel_set: SentinelSet) -> None:
    port = sentinel_set.sentinel_servers[0].port
    proc = cg("status", f"127.0.0.1:{port}")
    assert proc.returncode == 0, proc.stderr
    assert "this is a Sentinel monitoring mymaster (127.0.0.1:" in proc.stdout
    assert f"redis+sentinel://127.0.0.1:{port}/mymaster" in proc.stdout
    doc = json.loads(cg("status", "--json", f"redis://127.0.0.1:{port}").stdout)
    assert doc["sentinel"]["masters"] == [f"mymaster (127.0.0.1:{sentinel_set.primary.port})"]  # type: ignore[union-attr]


def test_a_wrong_master_name_lists_the_known_ones(sentinel_set: SentinelSet) -> None:
    port = sentinel_set.sentinel_servers[0].port
    proc = cg("status", f"redis+sentinel://127.0.0.1:{port}/nosuch")
    assert proc.returncode == 3 and "the Sentinels know mymaster" in proc.stderr


@pytest.mark.parametrize("command", [("kill", "--source", "127.0.0.99"), ("config",), ("watch", "--json", "--count", "1")])
def test_single_server_commands_take_a_sentinel_url(sentinel_set: SentinelSet, command: tuple[str, ...]) -> None:
    proc = cg(*command, sentinel_set.url)
    assert "bad target" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    if command[0] == "watch":
        doc = json.loads(proc.stdout)
        assert doc["reachable"] and doc["primary"] == f"127.0.0.1:{sentinel_set.primary.port}"  # type: ignore[union-attr]


def test_the_exporter_probe_takes_a_sentinel_url_and_a_bare_host_port(sentinel_set: SentinelSet, run_exporter) -> None:
    exporter = run_exporter()
    port = sentinel_set.sentinel_servers[0].port
    primary = sentinel_set.primary.port  # type: ignore[union-attr]
    via_sentinel = exporter.probe(f"redis+sentinel://127.0.0.1:{port}/{sentinel_set.master_name}")
    bare = exporter.probe(f"127.0.0.1:{primary}")
    assert via_sentinel["connguard_up"] == 1 and bare["connguard_up"] == 1
    assert via_sentinel["connguard_maxclients"] == bare["connguard_maxclients"] == 100
    assert exporter.probe(f"redis+sentinel://127.0.0.1:{port}/nosuch")["connguard_up"] == 0


class LockedSentinel(SentinelProcess):
    """A Sentinel with requirepass (set in its config file, as an operator would)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.password = f"s-{SECRET}"  # for the readiness PING

    def command(self) -> list[str]:
        cmd = super().command()
        conf = cmd[1]
        with open(conf, "a", encoding="utf-8") as fh:
            fh.write(f"requirepass s-{SECRET}\n")
        return cmd


def test_a_sentinel_that_wants_a_password_is_auth_failed_with_the_sentinel_password_hint() -> None:
    if not REDIS7:
        pytest.skip("no server binary found")
    primary = ServerProcess(REDIS7[0], password=SECRET).start()
    sentinel = LockedSentinel(REDIS7[0], primary_port=primary.port, primary_password=SECRET).start()
    try:
        base = f"redis+sentinel://:{SECRET}@127.0.0.1:{sentinel.port}/mymaster"
        proc = cg("status", base)  # the data password is NOT tried on the Sentinel
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "auth failed" in proc.stderr and "?sentinel_password=" in proc.stderr
        assert SECRET not in proc.stdout + proc.stderr
        ok = cg("status", f"{base}?sentinel_password=s-{SECRET}")
        assert ok.returncode == 0 and SECRET not in ok.stdout + ok.stderr, ok.stderr
    finally:
        sentinel.stop()
        primary.stop()


def test_watch_follows_the_primary_across_a_real_sentinel_failover() -> None:
    if not REDIS7:
        pytest.skip("no server binary found")
    with SentinelSet(REDIS7[0], replicas=1, sentinels=1, maxclients=100) as s:
        old, new = s.primary.port, s.replica_servers[0].port  # type: ignore[union-attr]
        watch = subprocess.Popen([sys.executable, "-m", "connguard", "watch", "--json", "--interval", "0.5",
                                  "--count", "80", s.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = json.loads(watch.stdout.readline())  # type: ignore[union-attr]
            assert first["primary"] == f"127.0.0.1:{old}" and first["primary_switches"] == []
            with redis.Redis(host="127.0.0.1", port=s.sentinel_servers[0].port, socket_timeout=5) as sentinel:
                sentinel.execute_command("SENTINEL", "FAILOVER", s.master_name)
            switched = None
            for line in watch.stdout:  # type: ignore[union-attr]
                doc = json.loads(line)
                if doc["primary_switches"]:
                    switched = doc
                    break
            assert switched is not None, watch.stderr.read()  # type: ignore[union-attr]
            assert switched["primary"] == f"127.0.0.1:{new}"
            assert switched["primary_switches"][0]["primary"] == f"127.0.0.1:{new}"
            later = [json.loads(line) for _, line in zip(range(4), watch.stdout)]  # type: ignore[union-attr]
            assert later and all(d["reachable"] and d["primary"] == f"127.0.0.1:{new}" for d in later)
        finally:
            watch.kill()
            watch.wait(10)


# -- clusters ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_clusters() -> Iterator[tuple[ClusterSet, ClusterSet]]:
    if not REDIS7:
        pytest.skip("no server binary found")
    with ClusterSet(REDIS7[0], primaries=2, maxclients=40) as a, ClusterSet(REDIS7[0], primaries=1, maxclients=40) as b:
        yield a, b


def test_a_mixed_toml_fleet_puts_each_cluster_and_sentinel_set_in_its_own_group(
        two_clusters: tuple[ClusterSet, ClusterSet], sentinel_set: SentinelSet, locked: ServerProcess, tmp_path) -> None:
    a, b = two_clusters
    sentinel_hosts = ",".join(f"127.0.0.1:{x.port}" for x in sentinel_set.sentinel_servers)
    path = tmp_path / "fleet.toml"
    path.write_text(f'''
[[target]]
url = "redis://127.0.0.1:{a.nodes[0].port},127.0.0.1:{a.nodes[1].port}"
cluster = true
name = "orders"

[[target]]
url = "127.0.0.1:{b.nodes[0].port}"
cluster = true

[[target]]
url = "redis://{sentinel_hosts}"
sentinel = true
master = "{sentinel_set.master_name}"

[[target]]
url = "redis://:{SECRET}@127.0.0.1:{locked.port}"
name = "sessions"
''')
    proc = cg("fleet", "status", "--json", str(path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    groups = {t["member"]["target"].rsplit(":", 1)[1]: t["member"]["group"] for t in doc["targets"]}
    assert groups[str(a.nodes[0].port)] == groups[str(a.nodes[1].port)] == "orders"
    assert groups[str(b.nodes[0].port)] == f"127.0.0.1:{b.nodes[0].port}"  # named by its seed
    assert groups[str(sentinel_set.primary.port)] == sentinel_set.master_name  # type: ignore[union-attr]
    assert groups[str(locked.port)] is None
    assert SECRET not in proc.stdout + proc.stderr


def test_cluster_and_fleet_flags_keep_each_seed_in_its_own_group(two_clusters: tuple[ClusterSet, ClusterSet],
                                                                 tmp_path) -> None:
    a, b = two_clusters
    path = tmp_path / "seeds.txt"
    path.write_text(f"127.0.0.1:{a.nodes[0].port}\nredis://127.0.0.1:{b.nodes[0].port}\n")
    doc = json.loads(cg("status", "--cluster", "--json", "--fleet", str(path)).stdout)
    groups = {t["member"]["group"] for t in doc["targets"]}
    assert groups == {f"127.0.0.1:{a.nodes[0].port}", f"127.0.0.1:{b.nodes[0].port}"}
    assert len(doc["targets"]) == 3


def test_a_multi_seed_url_with_a_full_first_seed_asks_the_next(two_clusters: tuple[ClusterSet, ClusterSet]) -> None:
    a, _ = two_clusters
    first, second = a.nodes[0].port, a.nodes[1].port
    crowd = Crowd("127.0.0.1", first)
    try:
        crowd.open(60, source="127.0.0.21")  # node 1 is full: it refuses the seed connection
        proc = cg("status", "--json", "--connect-timeout", "2", f"redis://127.0.0.1:{first},127.0.0.1:{second}")
        doc = json.loads(proc.stdout)
        assert doc["kind"] == "cluster" and len(doc["targets"]) == 2, proc.stderr
        assert f"seed 127.0.0.1:{first}" in proc.stderr and "maxclients" in proc.stderr
        assert proc.returncode == 2  # the full node is critical; the run did not end at it
    finally:
        crowd.close()


# -- watch at a full server ---------------------------------------------------------------------------------------
def test_watch_started_on_a_full_server_waits_paces_its_attempts_and_keeps_the_first_free_slot() -> None:
    if not REDIS7:
        pytest.skip("no server binary found")
    server = ServerProcess(REDIS7[0], maxclients=12).start()
    crowd = Crowd("127.0.0.1", server.port)
    try:
        with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5, single_connection_client=True) as held:
            held.ping()
            group = crowd.open(20, source="127.0.0.31")  # full: the rest are refused
            assert group.refused > 0
            before = held.info("stats")["rejected_connections"]
            watch = subprocess.Popen([sys.executable, "-m", "connguard", "watch", "--json", "--interval", "0.5",
                                      "--count", "60", server.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
            lines = []
            for line in watch.stdout:  # type: ignore[union-attr]
                lines.append(json.loads(line))
                if len(lines) == 24:
                    break
            waited = held.info("stats")["rejected_connections"] - before
            span = lines[-1]["ts"] - lines[0]["ts"]
            assert all(not d["reachable"] for d in lines)  # no slot: the census view, not an exit
            assert lines[-1]["used"] is not None  # from this host's socket census
            # at most one attempt per backoff step (0.25, 0.5, 1, 2 s), then one per 2 s
            assert 2 <= waited <= 4 + span / 2, (waited, span)
            crowd.close_group(group)  # slots free: watch takes one and keeps it
            rest = [json.loads(line) for line in watch.stdout]  # type: ignore[union-attr]
            assert watch.wait(30) == 0, watch.stderr.read()  # type: ignore[union-attr]
        got = next(i for i, d in enumerate(rest) if d["reachable"])
        assert all(d["reachable"] for d in rest[got:])
    finally:
        crowd.close()
        server.stop()
