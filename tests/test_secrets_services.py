"""No secret in the long-running parts either: `watch` (text is a screen, so --json, plus --record), the exporter's
pages and log lines (--password-file, --auth-file, $REDISCLI_AUTH, a /probe URL that carries a password), and the
guard's log lines and exception messages (wrong password, refused, full server, breaker open, budget exceeded,
a leak report). Same password as tests/test_secrets.py: `@:/%#?` and a random core.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from connguard.lab.servers import ServerProcess, free_port, resp_command

CORE = "Zq7S3cr3tK"
PASSWORD = f"p@ss:w/o%rd#?{CORE}&x=1"
WRONG = f"wr0ng@:/%#?{CORE[::-1]}"
ENC, WRONG_ENC = quote(PASSWORD, safe=""), quote(WRONG, safe="")
SECRETS = (PASSWORD, ENC, CORE, WRONG, WRONG_ENC, CORE[::-1])


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "REDISCLI_AUTH"}}
    env.update(extra)
    return env


@pytest.fixture
def locked(default_binary, start_server) -> ServerProcess:
    return start_server(default_binary, password=PASSWORD, maxclients=50)


# -- watch -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["url", "env", "wrong"])
def test_watch_json_and_its_recording_hold_no_password(locked: ServerProcess, tmp_path: Path, how: str):
    record = tmp_path / "watch.jsonl"
    url = {"url": f"redis://:{ENC}@127.0.0.1:{locked.port}", "env": f"redis://127.0.0.1:{locked.port}",
           "wrong": f"redis://:{WRONG_ENC}@127.0.0.1:{locked.port}"}[how]
    env = clean_env(REDISCLI_AUTH=PASSWORD) if how == "env" else clean_env()
    proc = subprocess.run([sys.executable, "-m", "connguard", "watch", url, "--json", "--count", "2", "--interval", "0.3",
                           "--record", str(record), "--connect-timeout", "1"],
                          capture_output=True, text=True, env=env, timeout=90)
    assert "Traceback" not in proc.stderr
    assert not leaks(proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[:400]
    if how == "wrong":
        assert proc.returncode == 3, proc.stderr
    else:
        assert proc.returncode in (0, 1, 2) and proc.stdout.count("\n") >= 2, proc.stderr
        assert record.exists() and not leaks(record.read_text())


# -- the exporter ------------------------------------------------------------------------------------------
class Exporter:
    """`connguard exporter` as a child process on a free loopback port; stopped by its own PID."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "connguard", "exporter", "--listen", f"127.0.0.1:{self.port}",
                                      "--connect-timeout", "1", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.communicate()[1]
                time.sleep(0.1)
        raise AssertionError("the exporter did not start listening")

    def get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.read().decode()

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
        return out + err


def test_exporter_pages_and_logs_hold_no_password(locked: ServerProcess, tmp_path: Path):
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    auth_file = tmp_path / "auth"
    auth_file.write_text(f"redis://127.0.0.1:{locked.port} {PASSWORD}\n")
    closed = free_port()
    exporters = [
        Exporter("--target", f"redis://127.0.0.1:{locked.port}", "--password-file", str(password_file), env=clean_env()),
        Exporter("--auth-file", str(auth_file), env=clean_env()),
        Exporter("--target", f"redis://127.0.0.1:{locked.port}", env=clean_env(REDISCLI_AUTH=WRONG)),
    ]
    pages = []
    try:
        pages.append(exporters[0].get("/metrics"))
        pages.append(exporters[0].get(f"/probe?target=127.0.0.1:{closed}"))
        # Refused (credentials in a probe URL), and not echoed. Encoded twice, as a careful user would: the HTTP
        # layer decodes once. (Encoded once, the decoded URL is a pasted raw password: see the xfail below.)
        pages.append(exporters[0].get(f"/probe?target={quote(f'redis://:{ENC}@127.0.0.1:{locked.port}', safe='')}"))
        pages.append(exporters[1].get(f"/probe?target=redis://127.0.0.1:{locked.port}"))
        pages.append(exporters[1].get("/"))
        pages.append(exporters[2].get("/metrics"))  # the wrong password
    finally:
        logs = [e.stop() for e in exporters]
    assert "connguard_up 1" in pages[0] and "connguard_up 1" in pages[3], "a success path was not exercised"
    assert "connguard_up 0" in pages[5], "the wrong-password path was not exercised"
    for i, page in enumerate(pages):
        assert not leaks(page), (i, page[:400])
    for i, log in enumerate(logs):
        assert "Traceback" not in log, log[-400:]
        assert not leaks(log), (i, log[:400])


PROBE_QUERY_ECHO = (
    "target.py (owner: defects), seen through the exporter: /probe?target=redis://:<once-encoded password>@host is "
    "decoded once by the HTTP layer into a raw password holding '?', which parse_target does not split off as "
    "userinfo; the exporter's log line 'probe refused: ... cannot parse URL ...' then holds the password's tail")


def test_a_probe_url_with_a_once_encoded_password_is_not_logged(locked: ServerProcess, tmp_path: Path):
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    exporter = Exporter("--password-file", str(password_file), env=clean_env())
    try:
        page = exporter.get(f"/probe?target=redis://:{ENC}@127.0.0.1:{locked.port}")
    finally:
        log = exporter.stop()
    assert "connguard_up" in page or "connguard_probe_error" in page
    assert not leaks(page) and not leaks(log), log[-400:]


# -- the guard ---------------------------------------------------------------------------------------------
def test_guard_logs_and_exceptions_hold_no_password(default_binary, start_server, caplog, fresh_guard_registry):
    from connguard.guard import GuardSettings, guarded_client

    caplog.set_level(logging.DEBUG)
    full = start_server(default_binary, password=PASSWORD, maxclients=2)
    messages: list[str] = []

    def attempt(client: redis.Redis, *cmd: str) -> None:
        try:
            client.execute_command(*cmd)
        except Exception as exc:  # every error a caller can see: its text, its repr, its chain
            chain = exc
            while chain is not None:
                messages.extend([str(chain), repr(chain), type(chain).__name__])
                chain = chain.__cause__ or chain.__context__  # type: ignore[assignment]

    settings = GuardSettings(budget=1, budget_wait_s=0.2, leak_threshold_s=0.2, reset_timeout_s=0.3)
    ok = guarded_client(f"redis://:{ENC}@127.0.0.1:{full.port}", settings=settings)
    wrong = guarded_client(f"redis://:{WRONG_ENC}@127.0.0.1:{full.port}", settings=GuardSettings())
    refused = guarded_client(f"redis://:{ENC}@127.0.0.1:{free_port()}", settings=GuardSettings())
    try:
        ok.ping()
        attempt(wrong, "PING")  # wrong password
        attempt(refused, "PING")  # nothing listens
        held = ok.connection_pool.get_connection()  # the one budget slot, held past the leak threshold
        attempt(ok, "PING")  # budget exceeded
        time.sleep(0.5)
        ok.connection_pool.release(held)
        ok.close()
        # Fill the server (maxclients 2) from outside, then ask for a new connection: refusal, breaker open.
        # (db 1: another endpoint, so the budget of 1 above does not answer first.)
        hold = [socket.create_connection(("127.0.0.1", full.port)) for _ in range(2)]
        for s in hold:
            s.sendall(resp_command("AUTH", PASSWORD) + resp_command("PING"))
            s.recv(64)
        other = guarded_client(f"redis://:{ENC}@127.0.0.1:{full.port}/1", settings=GuardSettings())
        attempt(other, "PING")
        attempt(other, "PING")
        other.close()
        for s in hold:
            s.close()
    finally:
        for c in (ok, wrong, refused):
            c.close()
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    seen = "\n".join(messages)
    kinds = " ".join(messages)
    # Every path was really taken: auth failure, refusal, budget, max-clients refusal or the breaker it opened.
    assert "AuthenticationError" in kinds and "BudgetExceeded" in kinds, kinds[:600]
    assert "MaxClientsError" in kinds or "CircuitOpenError" in kinds, kinds[:600]
    assert "leak" in logged.lower(), "the leak report path was not exercised"
    assert not leaks(seen), [m for m in messages if leaks(m)][:3]
    assert not leaks(logged), [r.getMessage() for r in caplog.records if leaks(r.getMessage())][:3]
