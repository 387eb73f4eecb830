"""Targets: URL forms, redaction, and the one held connection that backs off while the server is full."""

from __future__ import annotations

import time

import pytest
import redis

from connguard.errors import BadTarget, ServerFull
from connguard.target import classify_error, open_connection, parse_target


@pytest.mark.parametrize("url, scheme, host, port, path, db", [
    ("redis://cache.internal", "redis", "cache.internal", 6379, None, 0),
    ("redis://10.0.0.5:7000/3", "redis", "10.0.0.5", 7000, None, 3),
    ("rediss://cache:6380", "rediss", "cache", 6380, None, 0),
    ("redis://[::1]:6390", "redis", "::1", 6390, None, 0),
    ("unix:///var/run/redis/redis.sock?db=2", "unix", None, None, "/var/run/redis/redis.sock", 2),
    ("unix:///tmp/my%20dir/redis.sock", "unix", None, None, "/tmp/my dir/redis.sock", 0),
])
def test_every_documented_url_form_parses(url, scheme, host, port, path, db):
    t = parse_target(url, env={})
    assert (t.scheme, t.host, t.port, t.path, t.db) == (scheme, host, port, path, db)
    assert t.tls == (scheme == "rediss")


def test_the_default_is_redis_url_then_localhost():
    assert parse_target(None, env={}).redacted == "redis://127.0.0.1:6379"
    assert parse_target(None, env={"REDIS_URL": "redis://db:7001/1"}).redacted == "redis://db:7001/1"


def test_a_password_comes_from_rediscli_auth_unless_the_url_has_one():
    assert parse_target("redis://h", env={"REDISCLI_AUTH": "envpw"}).password == "envpw"
    assert parse_target("redis://:urlpw@h", env={"REDISCLI_AUTH": "envpw"}).password == "urlpw"


@pytest.mark.parametrize("url, shown", [
    ("redis://app:pa%3Ass@h:1", "redis://app:***@h:1"),
    ("redis://:pass@[::1]:1/2", "redis://:***@[::1]:1/2"),
    ("unix://:pass@/tmp/r.sock?db=1", "unix://:***@/tmp/r.sock?db=1"),
    ("redis://Zq7pass@h:1", "redis://:***@h:1"),  # a lone userinfo is the password (redis-cli's reading)
    ("redis://app:@h:1", "redis://app@h:1"),  # an empty password has nothing to hide
])
def test_passwords_never_show(url, shown):
    t = parse_target(url, env={})
    assert t.redacted == shown == str(t)
    assert "pass" not in repr(t).replace("password", "")


def test_a_lone_userinfo_is_the_password_as_redis_cli_reads_it():
    t = parse_target("redis://Zq7pass@h:1", env={})
    assert (t.username, t.password) == (None, "Zq7pass")
    assert parse_target("redis://app:pw@h", env={}).username == "app"


@pytest.mark.parametrize("bare, url", [
    ("127.0.0.1:6380", "redis://127.0.0.1:6380"),
    ("cache.internal:7000", "redis://cache.internal:7000"),
    ("[::1]:6379", "redis://[::1]:6379"),
])
def test_a_bare_host_port_is_a_redis_url(bare, url):
    assert parse_target(bare, env={}).redacted == parse_target(url, env={}).redacted == url


@pytest.mark.parametrize("text", ["fleet.txt", "cache.internal", "pw@h:1", "h:port", "a:1,b:2"])
def test_what_is_not_a_bare_host_port_is_refused_without_echoing_secrets(text):
    with pytest.raises(BadTarget) as err:
        parse_target(text, env={})
    assert "pw" not in str(err.value)


def test_the_url_half_imports_no_redis_client():
    import subprocess
    import sys
    code = "import sys, connguard.target_url, connguard.discovery.fleet_file; assert 'redis' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_bad_url_names_the_problem_without_the_password():
    with pytest.raises(BadTarget) as err:
        parse_target("redis://u:topsecret@h:port", env={})
    assert "topsecret" not in err.value.line() and "://***@h:port" in err.value.line()


@pytest.mark.parametrize("url, secret", [
    ("redis://:s3cr@t:/pw@127.0.0.1:6390", "s3cr@t:/pw"),  # an unencoded @ (and / and :) in the password
    ("redis://app:p@ss@10.0.0.5:7000/2", "p@ss"),
])
def test_an_unencoded_at_in_the_password_parses_and_never_shows(url, secret):
    t = parse_target(url, env={})
    assert t.password == secret and t.port in (6390, 7000) and secret not in t.redacted


@pytest.mark.parametrize("url, words", [
    ("redis://:s3cr@t:/pw@127.0.0.1:notaport", "cannot parse URL"),
    ("redis://us3r:s3cr@t:/pw@127.0.0.1:6379/notadb", "database"),
    ("redis://us3r:s3cr@t@127.0.0.1:6379?bogus=1", "unknown option bogus"),
])
def test_errors_never_echo_any_part_of_the_userinfo(url, words):
    with pytest.raises(BadTarget) as err:
        parse_target(url, env={})
    line = err.value.line()
    assert words in line and "s3cr" not in line and "us3r" not in line and "pw" not in line.replace("password", "")


def test_port_zero_is_refused_not_silently_6379():
    with pytest.raises(BadTarget, match="port 0"):
        parse_target("redis://127.0.0.1:0", env={})


def test_redis_py_password_query_form_is_honoured_and_hidden():
    t = parse_target("redis://127.0.0.1:6390?password=q-s3cret", env={"REDISCLI_AUTH": "envpw"})
    assert t.password == "q-s3cret" and "q-s3cret" not in t.redacted + repr(t) and "password" not in t.query
    assert parse_target("redis://:urlpw@h?password=other", env={}).password == "urlpw"


def test_tls_options_are_checked_when_parsed(tmp_path):
    with pytest.raises(BadTarget, match="ssl_cert_reqs='bogus' must be one of none, optional, required"):
        parse_target("rediss://h:1?ssl_cert_reqs=bogus", env={})
    with pytest.raises(BadTarget, match="ssl_ca_certs=/nonexistent.pem: no such file"):
        parse_target("rediss://h:1?ssl_ca_certs=/nonexistent.pem", env={})
    with pytest.raises(BadTarget, match="need a TLS URL"):
        parse_target("redis://h:1?ssl_cert_reqs=none", env={})
    with pytest.raises(BadTarget, match="ssl_keyfile needs ssl_certfile"):
        (tmp_path / "k.pem").write_text("x")
        parse_target(f"rediss://h:1?ssl_keyfile={tmp_path}/k.pem", env={})
    (tmp_path / "c.pem").write_text("x")
    t = parse_target(f"rediss://h:1?ssl_certfile={tmp_path}/c.pem&ssl_keyfile={tmp_path}/k.pem&ssl_cert_reqs=NONE", env={})
    assert t.query["ssl_certfile"].endswith("c.pem") and t.query["ssl_cert_reqs"] == "NONE"


def test_endpoint_key_ignores_the_password():
    a = parse_target("redis://u:one@h:1/2", env={})
    b = parse_target("redis://u:two@h:1/2", env={})
    assert a.endpoint_key == b.endpoint_key != parse_target("rediss://u:one@h:1/2", env={}).endpoint_key


def test_a_refusal_message_is_classified_as_server_full():
    err = classify_error(ConnectionError("ERR max number of clients reached"), parse_target("redis://h", env={}))
    assert isinstance(err, ServerFull) and err.exit_code == 2


def test_connecting_to_a_full_server_backs_off_with_jitter_until_the_deadline(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=2)
    crowd = crowd_for(server)
    crowd.open(2, source="127.0.0.6")
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        time.sleep(s)

    started = time.monotonic()
    with pytest.raises(ServerFull) as err:
        open_connection(parse_target(server.url, env={}), connect_timeout_s=1.5, sleep=sleep)
    elapsed = time.monotonic() - started
    assert elapsed >= 1.4  # it kept trying until its deadline (a lower bound: a slow machine cannot break it)
    assert 2 <= len(sleeps) <= 40 and all(s >= 0.01 for s in sleeps)  # never a tight loop
    assert len(set(sleeps)) > 1  # jittered
    assert "is at maxclients" in err.value.message


def test_the_connection_is_taken_as_soon_as_a_slot_frees(default_binary, start_server, crowd_for):
    server = start_server(default_binary, maxclients=2)
    crowd = crowd_for(server)
    group = crowd.open(2, source="127.0.0.6")

    def sleep(s: float) -> None:
        if group.sockets:
            crowd.close_group(group)  # the app gives back its connections while we wait
        time.sleep(s)

    with open_connection(parse_target(server.url, env={}), connect_timeout_s=10, sleep=sleep) as conn:
        assert conn.attempts >= 2 and conn.client_id is not None
        assert conn.execute("PING") in (b"PONG", "PONG", True)


def test_an_at_sign_inside_a_query_file_path_is_not_userinfo(tmp_path):
    """The userinfo ends at an '@' only when what follows reads as a host; an '@' in ssl_ca_certs stays in the path."""
    ca = tmp_path / "redis@prod" / "ca.pem"
    ca.parent.mkdir()
    ca.write_text("")
    t = parse_target(f"rediss://cache:6380?ssl_ca_certs={ca}", env={})
    assert (t.host, t.port, t.username, t.password, t.query["ssl_ca_certs"]) == ("cache", 6380, None, None, str(ca))
    pasted = parse_target(f"rediss://:s3cr3t?x@cache:6380?ssl_ca_certs={ca}", env={})
    assert (pasted.host, pasted.password) == ("cache", "s3cr3t?x")


def test_a_tls_close_right_after_the_handshake_names_the_missing_client_certificate():
    """Captured from Redis 7.0 with tls-auth-clients yes: TLS 1.3 lets the client finish its handshake before
    the server checks for a certificate, so the first write finds the socket closed, with no alert to name it."""
    eof = redis.exceptions.ConnectionError(
        "Error 8 while writing to socket. EOF occurred in violation of protocol (_ssl.c:2427).")
    line = classify_error(eof, parse_target("rediss://127.0.0.1:6380")).line()
    assert "requires a client certificate" in line and "ssl_certfile" in line
    # With a certificate given, the same close is not blamed on a missing one.
    with_cert = parse_target("rediss://127.0.0.1:6380?ssl_certfile=/etc/hosts&ssl_keyfile=/etc/hosts")
    assert "requires a client certificate" not in classify_error(eof, with_cert).line()


def test_an_http_port_is_named_from_the_bytes_it_sent_every_time():
    """Whether the HTTP server's close reaches the handshake as an EOF, a reset or a broken pipe is a race; the
    verdict comes from what the port says, so it is the same on every try."""
    import http.server
    import threading

    from connguard.errors import NotRedis

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        target = parse_target(f"redis://127.0.0.1:{httpd.server_address[1]}", env={})
        for _ in range(40):
            with pytest.raises(NotRedis, match="it looks like HTTP"):
                open_connection(target, connect_timeout_s=1)
    finally:
        httpd.shutdown()
        httpd.server_close()
