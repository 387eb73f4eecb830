"""Bad input gets one clear line and exit 3 (a full server: exit 2), never a traceback, never a password."""

from __future__ import annotations

import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from connguard.lab.servers import ServerProcess, free_port

SECRET = "hunter2-S3CRET"


def run_status(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "REDISCLI_AUTH"}}
    clean.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "connguard", "status", *args],
                          capture_output=True, text=True, env=clean, timeout=60)
    assert SECRET not in proc.stdout + proc.stderr, "a password was printed"
    assert "Traceback" not in proc.stderr
    return proc


def one_line_error(proc: subprocess.CompletedProcess[str], code: int = 3) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("connguard: "), proc.stderr
    return lines[0]


@pytest.fixture
def http_port() -> Iterator[int]:
    """A tiny HTTP server on a free loopback port: something that answers, but not in RESP."""

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def locked(default_binary, start_server) -> ServerProcess:
    return start_server(default_binary, password=SECRET)


@pytest.mark.parametrize("url, words", [
    (f"redis://app:{SECRET}@cache:notaport", "cannot parse URL"),
    (f"http://app:{SECRET}@127.0.0.1:6379", "unsupported URL"),
    ("redis://127.0.0.1:6379/notadb", "database"),
    ("unix://", "no socket path"),
])
def test_a_url_that_does_not_parse(url: str, words: str):
    line = one_line_error(run_status(url))
    assert "bad target" in line and words in line


def test_connection_refused():
    line = one_line_error(run_status(f"redis://:{SECRET}@127.0.0.1:{free_port()}"))
    assert "refused the connection" in line and ":***@" in line


def test_a_port_that_is_not_redis(http_port: int):
    line = one_line_error(run_status(f"redis://127.0.0.1:{http_port}"))
    assert "not redis" in line and "HTTP" in line


def test_a_wrong_password(locked: ServerProcess):
    line = one_line_error(run_status(f"redis://:wrong-{SECRET}@127.0.0.1:{locked.port}"))
    assert "auth failed" in line and "rejected the username or password" in line


def test_a_wrong_password_from_the_environment(locked: ServerProcess):
    proc = run_status(f"redis://127.0.0.1:{locked.port}", env={"REDISCLI_AUTH": "x" + SECRET})
    assert "auth failed" in one_line_error(proc)


def test_a_missing_password(locked: ServerProcess):
    line = one_line_error(run_status(f"redis://127.0.0.1:{locked.port}"))
    assert "requires a password" in line and "REDISCLI_AUTH" in line


def test_tls_to_a_plain_server_fails_fast(locked: ServerProcess):
    line = one_line_error(run_status(f"rediss://:{SECRET}@127.0.0.1:{locked.port}"))
    assert "not TLS" in line and "redis://" in line  # named from the reply, not a timeout


def test_plain_to_a_tls_server_and_real_tls(default_binary, start_server, pki):
    if default_binary.origin != "path":
        pytest.skip("needs a TLS-capable redis-server")
    key, cert = pki["server.key"], pki["server"]
    tls_port = free_port()
    start_server(default_binary, maxclients=2, extra_args=(
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-auth-clients", "no"))
    url = f"rediss://127.0.0.1:{tls_port}?ssl_ca_certs={pki['ca']}"
    ok = run_status(url)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: rediss://")
    assert "not trusted" in one_line_error(run_status(f"rediss://127.0.0.1:{tls_port}"))
    assert "rediss://" in one_line_error(run_status(f"redis://127.0.0.1:{tls_port}"))
    # Full over TLS: the server closes without a word, which still means CRITICAL, not a TLS error.
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    held = [context.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=5), server_hostname="127.0.0.1")
            for _ in range(2)]
    try:
        for sock in held:
            sock.sendall(b"PING\r\n")
            assert sock.recv(16).startswith(b"+PONG")
        line = one_line_error(run_status(url, "--connect-timeout", "1"), code=2)
        assert "is at maxclients" in line
    finally:
        for sock in held:
            sock.close()


def test_a_unix_socket_that_does_not_exist(tmp_path: Path):
    line = one_line_error(run_status(f"unix://{tmp_path}/redis.sock"))
    assert "no such unix socket" in line


def test_a_server_that_stays_full_is_critical(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=3, password=SECRET)
    assert len(crowd_for(server).open(3, source="127.0.0.5").sockets) == 3
    url = f"redis://:{SECRET}@127.0.0.1:{server.port}"
    line = one_line_error(run_status(url, "--connect-timeout", "1"), code=2)
    assert "server full" in line and "is at maxclients" in line and "over 1s" in line
    proc = run_status(url, "--connect-timeout", "1", "--json")
    out = json.loads(proc.stdout)
    assert proc.returncode == 2 and (out["status"], out["reachable"]) == ("critical", False)
    assert "is at maxclients" in out["error"]


def test_errors_in_json_mode_are_one_object_with_status_unknown():
    proc = run_status(f"redis://127.0.0.1:{free_port()}", "--json")
    out = json.loads(proc.stdout)
    assert proc.returncode == 3 and (out["status"], out["reachable"]) == ("unknown", False)
    assert "refused" in out["error"]


def test_tls_client_certificates_are_sent_and_their_absence_is_named(default_binary, start_server, pki):
    if default_binary.origin != "path":
        pytest.skip("needs a TLS-capable redis-server")
    tls_port = free_port()
    start_server(default_binary, maxclients=20, extra_args=(
        "--tls-port", str(tls_port), "--tls-cert-file", str(pki["server"]), "--tls-key-file", str(pki["server.key"]),
        "--tls-auth-clients", "yes", "--tls-ca-cert-file", str(pki["ca"])))
    base = f"rediss://127.0.0.1:{tls_port}?ssl_ca_certs={pki['ca']}"
    line = one_line_error(run_status(base, "--connect-timeout", "1"))
    assert "requires a client certificate" in line and "ssl_certfile" in line
    ok = run_status(f"{base}&ssl_certfile={pki['client']}&ssl_keyfile={pki['client.key']}")
    assert ok.returncode == 0 and ok.stdout.startswith("OK: rediss://"), ok.stderr


@pytest.mark.parametrize("query, words", [
    ("ssl_cert_reqs=bogus", "ssl_cert_reqs='bogus' must be one of"),
    ("ssl_ca_certs=/nonexistent.pem", "ssl_ca_certs=/nonexistent.pem: no such file"),
    ("ssl_certfile=/nonexistent.pem", "ssl_certfile=/nonexistent.pem: no such file"),
])
def test_bad_tls_options_are_one_line_not_a_traceback_or_a_unix_socket(query, words):
    line = one_line_error(run_status(f"rediss://:{SECRET}@127.0.0.1:{free_port()}?{query}"))
    assert "bad target" in line and words in line and "unix socket" not in line


def test_an_unencoded_at_in_the_password_reaches_the_server_and_is_never_echoed(default_binary, start_server):
    server = start_server(default_binary, password=f"{SECRET}@t:/pw")
    ok = run_status(f"redis://:{SECRET}@t:/pw@127.0.0.1:{server.port}")
    assert ok.returncode == 0 and ok.stdout.startswith("OK: redis://:***@127.0.0.1:")
    line = one_line_error(run_status(f"redis://:{SECRET}@t:/pw@127.0.0.1:{server.port}/x"))
    assert "database" in line and "pw@" not in line and "t:/" not in line


def test_port_zero_and_the_password_query_form(locked: ServerProcess):
    assert "port 0" in one_line_error(run_status("redis://127.0.0.1:0"))
    ok = run_status(f"redis://127.0.0.1:{locked.port}?password={SECRET}")
    assert ok.returncode == 0, ok.stderr


def test_an_info_only_user_continues_unnamed_and_says_so(default_binary, start_server):
    import redis

    server = start_server(default_binary, maxclients=50)
    with redis.Redis(port=server.port) as admin:
        admin.execute_command("ACL", "SETUSER", "infoonly", "on", ">i-pass", "-@all", "+info", "+ping")
    proc = run_status(f"redis://infoonly:i-pass@127.0.0.1:{server.port}", "--json")
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["reachable"] is True and out["maxclients"] == 50
    assert any("CLIENT SETNAME denied" in x and "unnamed" in x for x in out["limitations"])


def test_a_user_without_info_gets_one_line_denied_not_a_traceback(default_binary, start_server):
    import redis

    server = start_server(default_binary, maxclients=50)
    with redis.Redis(port=server.port) as admin:
        admin.execute_command("ACL", "SETUSER", "pingonly", "on", ">p-pass", "-@all", "+ping")
    url = f"redis://pingonly:p-pass@127.0.0.1:{server.port}"
    line = one_line_error(run_status(url))
    assert "denied" in line and "status needs INFO" in line
    out = json.loads(run_status(url, "--json").stdout)
    assert (out["status"], out["reachable"], out["error_kind"]) == ("unknown", True, "denied")
    proc = subprocess.run([sys.executable, "-m", "connguard", "config", url, "--timeout", "300"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr and "denied" in proc.stderr
