"""The exporter against real servers: one held connection, shared scrapes, bounded series, bad targets."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from connguard.lab.servers import free_port
from connguard.lab.workloads import alias
from connguard.monitor import exporter as ex
from exporter_running import parse, run_exporter  # noqa: F401 (a fixture)

PASSWORD = "s3cr@t:/%#?pw"


def server_stats(port: int, password: str | None = None) -> dict[str, object]:
    with redis.Redis(port=port, password=password, single_connection_client=True) as r:
        return r.info("all")  # type: ignore[return-value]


def test_a_leak_is_reported_with_its_source_and_true_capacity(default_binary, start_server, crowd_for, run_exporter):
    server = start_server(default_binary, maxclients=100)
    crowd = crowd_for(server)
    crowd.open(40, source="127.0.0.5", name="orders-worker")
    crowd.open(3, source="127.0.0.6", kind="blocked")
    m = run_exporter().probe(f"redis://127.0.0.1:{server.port}")
    assert m["connguard_up"] == 1 and m["connguard_server_refusing"] == 0
    assert m["connguard_connections_used"] == 43  # the exporter's own connection left out
    assert m['connguard_connections{kind="observer"}'] == 1
    assert m['connguard_connections{kind="blocked"}'] == 3
    assert m["connguard_maxclients"] == 100 and m["connguard_headroom"] == 57
    assert m["connguard_capacity_ratio"] == pytest.approx(0.43)
    assert m['connguard_source_connections{lib="",name="orders-worker",source="127.0.0.5"}'] == 40
    assert m['connguard_client_age_seconds_count'] == 43
    from connguard.analysis.findings import CAUSES, SEVERITIES

    causes = [k for k in m if k.startswith("connguard_cause{")]
    assert len(causes) == len(CAUSES) * len(SEVERITIES) and len(CAUSES) >= 9  # every cause x severity, 0 or 1


def test_source_series_stay_bounded_by_top_sources(default_binary, start_server, crowd_for, run_exporter):
    server = start_server(default_binary, maxclients=200)
    crowd = crowd_for(server)
    for i in range(30):
        crowd.open(2 + (i == 0) * 10, source=alias(i, subnet=3))
    m = run_exporter(top_sources=5).probe(f"redis://127.0.0.1:{server.port}")
    sources = {k: v for k, v in m.items() if k.startswith("connguard_source_connections{")}
    assert len(sources) == 6  # top 5 + "other"
    assert sum(sources.values()) == 30 * 2 + 10
    assert sources['connguard_source_connections{lib="",name="",source="127.3.0.1"}'] == 12
    assert sources['connguard_source_connections{lib="",name="",source="other"}'] == 25 * 2
    assert m["connguard_sources"] == 30


def test_one_held_connection_serves_every_scrape(default_binary, start_server, run_exporter):
    server = start_server(default_binary, maxclients=50)
    running = run_exporter()
    url = f"redis://127.0.0.1:{server.port}"
    before = server_stats(server.port)["total_connections_received"]
    for _ in range(5):
        m = running.probe(url)
    after = server_stats(server.port)["total_connections_received"]
    assert after - before == 1 + 1  # the exporter's one connection, plus server_stats' own
    assert m["connguard_observer_connects_total"] == 1


def test_concurrent_scrapes_of_one_target_share_an_observation(default_binary, start_server, run_exporter):
    server = start_server(default_binary, maxclients=50)
    running = run_exporter()
    url = f"redis://127.0.0.1:{server.port}"
    running.probe(url)  # connect first
    calls = lambda: int(server_stats(server.port)["cmdstat_info"]["calls"])  # noqa: E731
    before = calls()
    with ThreadPoolExecutor(8) as pool:
        pages = list(pool.map(lambda _: running.probe(url), range(8)))
    infos = calls() - before - 1  # our own INFO to count them
    assert all(p["connguard_up"] == 1 for p in pages)
    assert 1 <= infos < 8, f"{infos} INFO calls for 8 concurrent scrapes"


def test_client_list_is_budgeted_info_is_not(default_binary, start_server, run_exporter):
    server = start_server(default_binary, maxclients=50)
    running = run_exporter(clients_every_s=3600.0)
    url = f"redis://127.0.0.1:{server.port}"
    for _ in range(4):
        m = running.probe(url)
    stats = server_stats(server.port)
    assert int(stats["cmdstat_client|list"]["calls"]) == 1
    assert int(stats["cmdstat_info"]["calls"]) >= 4
    assert m["connguard_client_list_age_seconds"] > 0
    assert m["connguard_client_list_seconds"] > 0


def test_a_full_server_keeps_reporting_over_the_held_connection(full_server, run_exporter):
    server, monitor, crowd, leak = full_server
    running = run_exporter()
    url = f"redis://127.0.0.1:{server.port}"
    crowd.close_group(leak)  # room for the exporter's one connection, then fill again
    running.probe(url)
    crowd.open(20, source="127.0.0.5")
    m = running.probe(url)
    assert m["connguard_up"] == 1
    assert m["connguard_server_refusing"] == 1
    assert m["connguard_connections_used"] == 9  # everyone but the exporter: the monitor and 8 leaked
    assert m["connguard_headroom"] == 1  # the exporter's own slot


def _http_400_server() -> int:
    """A loopback server that answers every connection with an HTTP 400 and keeps it open until the client
    hangs up. (The exporter's own ThreadingHTTPServer closes right after its 400, and whether the client then
    reads the 400 or a reset first is a race: the reason would flip between not_redis and unreachable.)"""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.0 400 Bad request\r\nContent-Length: 0\r\n\r\n")
                    while conn.recv(4096):
                        pass
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def test_bad_targets_answer_up_0_with_a_reason_never_a_500(default_binary, start_server, run_exporter, caplog):
    server = start_server(default_binary, maxclients=20, password=PASSWORD)
    running = run_exporter()
    http_port = _http_400_server()
    cases = {
        "http://127.0.0.1:80": "bad_target",
        "redis://[::1": "bad_target",
        f"redis://127.0.0.1:{free_port()}": "refused",
        f"redis://127.0.0.1:{server.port}": "auth",
        f"redis://user:{urllib.parse.quote(PASSWORD, safe='')}@127.0.0.1:{server.port}": "bad_target",
        f"redis://127.0.0.1:{server.port}?password={urllib.parse.quote(PASSWORD, safe='')}": "bad_target",
        f"redis://127.0.0.1:{http_port}": "not_redis",  # an HTTP server
        f"rediss://127.0.0.1:{server.port}": "tls",  # TLS to a plain server
    }
    with caplog.at_level(logging.INFO, logger="connguard.exporter"):
        for target, reason in cases.items():
            status, body = running.get("/probe?target=" + urllib.parse.quote(target, safe=""))
            assert status == 200
            m = parse(body)
            assert m["connguard_up"] == 0, target
            assert m[f'connguard_probe_error{{reason="{reason}"}}'] == 1, (target, body)
            assert PASSWORD not in body and "Traceback" not in body
        status, body = running.get("/probe")
        assert parse(body)['connguard_probe_error{reason="bad_target"}'] == 1
    assert PASSWORD not in caplog.text and urllib.parse.quote(PASSWORD, safe="") not in caplog.text
    assert "Traceback" not in caplog.text
    assert running.registry.held() == 0  # unreachable targets hold nothing


def test_passwords_come_from_files_never_the_query(default_binary, start_server, run_exporter, tmp_path):
    server = start_server(default_binary, maxclients=20, password=PASSWORD)
    other = start_server(default_binary, maxclients=20, password="other-pw")
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "auth").write_text(f"# per target\nredis://127.0.0.1:{other.port} other-pw\n")
    creds = ex.Credentials(default=ex.read_password_file(str(tmp_path / "pw")),
                           per_endpoint=ex.read_auth_file(str(tmp_path / "auth")))
    running = run_exporter(creds)
    assert running.probe(f"redis://127.0.0.1:{server.port}")["connguard_up"] == 1
    assert running.probe(f"127.0.0.1:{other.port}")["connguard_up"] == 1


def test_idle_targets_are_closed_and_max_targets_bounds_them(default_binary, start_server, run_exporter):
    first = start_server(default_binary, maxclients=20)
    second = start_server(default_binary, maxclients=20)
    running = run_exporter(max_targets=1, target_idle_s=1.0)
    assert running.probe(f"redis://127.0.0.1:{first.port}")["connguard_up"] == 1
    m = running.probe(f"redis://127.0.0.1:{second.port}")
    assert m["connguard_up"] == 0 and m['connguard_probe_error{reason="max_targets"}'] == 1
    assert server_stats(first.port)["connected_clients"] == 2  # the exporter's and ours
    import time

    deadline = time.monotonic() + 10
    while len(running.registry) and time.monotonic() < deadline:  # the exporter's reaper runs every 0.5 s here
        time.sleep(0.1)
    assert len(running.registry) == 0
    assert server_stats(first.port)["connected_clients"] == 1  # only ours: the exporter let go
    assert running.probe(f"redis://127.0.0.1:{second.port}")["connguard_up"] == 1


def test_metrics_page_has_the_process_and_the_default_target(default_binary, start_server, run_exporter):
    from connguard.target import parse_target

    server = start_server(default_binary, maxclients=20)
    running = run_exporter()
    running.exporter.default_target = parse_target(f"redis://127.0.0.1:{server.port}", env={})
    status, body = running.get("/metrics")
    m = parse(body)
    assert status == 200
    assert "process_cpu_seconds_total" in m and m["connguard_up"] == 1 and m["connguard_maxclients"] == 20
    with pytest.raises(urllib.error.HTTPError) as missing:
        running.get("/nothing-here")
    assert missing.value.code == 404


def test_listen_on_a_port_in_use_exits_3_with_one_line() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "connguard", "exporter", "--listen", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert result.stderr.strip().count("\n") == 0 and "address already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--top-sources", "nan"], ["--diagnose-every", "inf"], ["--max-targets", "0"],
                                  ["--target-idle", "-1"], ["--listen", "nohostport"]])
def test_bad_numbers_and_addresses_exit_3(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "connguard", "exporter", *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"(Invalid value|bad arguments)", result.stderr)


def test_the_command_serves_its_default_target_with_a_password_from_a_file(default_binary, start_server, tmp_path):
    import os
    import signal

    server = start_server(default_binary, maxclients=20, password=PASSWORD)
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDISCLI_AUTH")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "connguard", "exporter", "--listen", "127.0.0.1:0",
         "--target", f"redis://127.0.0.1:{server.port}", "--password-file", str(tmp_path / "pw")],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        line = proc.stderr.readline()  # "... listening on http://127.0.0.1:PORT (...)"
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            page = resp.read().decode()
        m = parse(page)
        assert m["connguard_up"] == 1 and m["connguard_maxclients"] == 20
        assert PASSWORD not in page
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=5)
    assert PASSWORD not in line + err and "Traceback" not in err
    assert proc.returncode == 0


def test_a_killed_connection_is_replaced_and_counted_as_ours(default_binary, start_server, run_exporter):
    server = start_server(default_binary, maxclients=20)
    running = run_exporter()
    url = f"redis://127.0.0.1:{server.port}"
    assert running.probe(url)["connguard_observer_connects_total"] == 1
    with redis.Redis(port=server.port, single_connection_client=True) as admin:
        ours = [c["id"] for c in admin.client_list() if c["name"] == "connguard"]
        assert len(ours) == 1
        admin.client_kill_filter(_id=ours[0])
    m = running.probe(url)
    assert m["connguard_up"] == 1 and m["connguard_observer_connects_total"] == 2


def test_a_server_full_before_the_first_scrape_is_refusing_and_exhausted(full_server, run_exporter):
    server, monitor, crowd, leak = full_server
    running = run_exporter(connect_timeout_s=0.5)
    m = running.probe(f"redis://127.0.0.1:{server.port}")
    assert m["connguard_up"] == 0 and m["connguard_server_refusing"] == 1
    assert m['connguard_probe_error{reason="refused"}'] == 1
    assert m["connguard_observer_refusals_total"] >= 1
    assert m['connguard_cause{cause="exhausted",severity="critical"}'] == 1  # from this host's socket census
    # Usage from the same census (the monitor and the 9 leaked), against a maxclients never seen yet.
    assert m["connguard_connections_used"] == 10 and m["connguard_connections_used_from_census"] == 1
    assert "connguard_maxclients" not in m and "connguard_capacity_ratio" not in m
