"""No secret in any output: every command, text and --json, on success and on every error path, with a
password full of URL metacharacters (`@:/%#?`) given percent-encoded in the URL, in $REDIS_URL, as the URL's
user:password, and in $REDISCLI_AUTH. The password (and its percent-encoded form, and its random core)
must appear nowhere: not on stdout, not on stderr, not in a `doctor --record` file.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pytest

from connguard.lab.servers import ServerProcess, free_port, resp_command

CORE = "Zq7S3cr3tK"  # random enough to appear nowhere else
PASSWORD = f"p@ss:w/o%rd#?{CORE}&x=1"
WRONG = f"wr0ng@:/%#?{CORE[::-1]}"
SECRETS = (PASSWORD, quote(PASSWORD, safe=""), CORE, WRONG, quote(WRONG, safe=""), CORE[::-1])

ENC, WRONG_ENC = quote(PASSWORD, safe=""), quote(WRONG, safe="")


@dataclass(frozen=True)
class Run:
    label: str
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    exits: tuple[int, ...] = (0, 1, 2)  # what this path must exit with: success paths must not be UNKNOWN


def run_cli(run: Run) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "REDISCLI_AUTH"}}
    env.update(run.env)
    return subprocess.run([sys.executable, "-m", "connguard", *run.args], capture_output=True, text=True,
                          env=env, timeout=90)


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def check_all(runs: list[Run]) -> None:
    """Run every case (three at a time), then report every leak and every wrong exit at once."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run_cli, runs))
    problems = []
    for run, proc in zip(runs, results):
        found = leaks(proc.stdout + proc.stderr)
        if found:
            problems.append(f"{run.label}: printed {found!r}: {(proc.stdout + proc.stderr)[:300]!r}")
        if "Traceback" in proc.stderr:
            problems.append(f"{run.label}: traceback: {proc.stderr[-300:]!r}")
        if proc.returncode not in run.exits:
            problems.append(f"{run.label}: exit {proc.returncode}, expected {run.exits}: {proc.stderr[:200]!r}")
    assert not problems, "\n".join(problems)


def every_command(url: str | None, tag: str, env: dict[str, str], exits: tuple[int, ...]) -> list[Run]:
    """status, doctor, kill (dry run), config (dry run): text and --json each."""
    where = (url,) if url else ()
    commands = {
        "status": ("status", *where, "--connect-timeout", "0.5"),
        "doctor": ("doctor", *where, "--once", "--connect-timeout", "0.5"),
        "kill": ("kill", *where, "--source", "127.0.0.9", "--idle", "0", "--connect-timeout", "0.5"),
        "config": ("config", *where, "--timeout", "0", "--connect-timeout", "0.5"),
    }
    return [Run(f"{name}{' --json' if as_json else ''} [{tag}]", args + (("--json",) if as_json else ()), env, exits)
            for name, args in commands.items() for as_json in (False, True)]


@pytest.fixture
def locked(default_binary, start_server) -> ServerProcess:
    return start_server(default_binary, password=PASSWORD, maxclients=50)


@pytest.fixture
def http_port() -> Iterator[int]:
    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
def test_the_password_never_shows_when_the_command_succeeds(locked: ServerProcess):
    port = locked.port
    runs = (every_command(f"redis://:{ENC}@127.0.0.1:{port}", "URL", {}, (0, 1, 2))
            + every_command(f"redis://default:{ENC}@127.0.0.1:{port}", "URL user:password", {}, (0, 1, 2))
            + every_command(f"redis://127.0.0.1:{port}", "$REDISCLI_AUTH", {"REDISCLI_AUTH": PASSWORD}, (0, 1, 2))
            + every_command(None, "$REDIS_URL", {"REDIS_URL": f"redis://:{ENC}@127.0.0.1:{port}"}, (0, 1, 2)))
    check_all(runs)


@pytest.mark.slow
def test_the_password_never_shows_on_any_error_path(locked: ServerProcess, http_port: int):
    closed = free_port()
    runs = (every_command(f"redis://:{WRONG_ENC}@127.0.0.1:{locked.port}", "wrong password in URL", {}, (3,))
            + every_command(f"redis://127.0.0.1:{locked.port}", "wrong $REDISCLI_AUTH", {"REDISCLI_AUTH": WRONG}, (3,))
            + every_command(f"redis://:{ENC}@127.0.0.1:{closed}", "refused", {}, (3,))
            + every_command(f"redis://127.0.0.1:{closed}", "refused, $REDISCLI_AUTH", {"REDISCLI_AUTH": PASSWORD}, (3,))
            + every_command(f"redis://:{ENC}@127.0.0.1:notaport", "bad URL", {}, (3,))
            + every_command(f"redis://:{ENC}@127.0.0.1:{http_port}", "HTTP port", {}, (3,))
            + every_command(f"redis://:{ENC}@127.0.0.1:{locked.port}/notadb", "bad db", {}, (3,)))
    check_all(runs)


def test_the_password_never_shows_when_the_server_is_full(default_binary, start_server):
    full = start_server(default_binary, password=PASSWORD, maxclients=1)
    holder = socket.create_connection(("127.0.0.1", full.port), timeout=5)
    try:
        holder.sendall(resp_command("AUTH", PASSWORD) + resp_command("PING"))
        data = b""
        while b"+PONG" not in data:  # the one slot is taken once the server answered
            chunk = holder.recv(64)
            assert chunk, data
            data += chunk
        runs = (every_command(f"redis://:{ENC}@127.0.0.1:{full.port}", "full", {}, (2,))
                + every_command(f"redis://127.0.0.1:{full.port}", "full, $REDISCLI_AUTH", {"REDISCLI_AUTH": PASSWORD}, (2,)))
        check_all(runs)
    finally:
        holder.close()


URL_QUERY_ECHO = ("target.py (owner: defects): _split_userinfo looks for the userinfo's '@' only before the first '?', so "
                  "a pasted password holding '?' (and an '@' before it) is cut at the earlier '@' and the rest is "
                  "printed as host: \"cannot parse URL 'redis://***@ss:w/o%rd#?<password rest>@127.0.0.1:…'\" "
                  "in every command's error line and --json error")


def test_a_pasted_unencoded_password_never_shows(locked: ServerProcess):
    """People paste `redis://:p@ss:w/o%rd#?...@host` as is. Whether it parses or not, it must not be printed."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked.port}"
    check_all([Run(r.label, r.args, r.env, (0, 1, 2, 3)) for r in every_command(url, "pasted raw", {}, (0, 1, 2, 3))])


def test_a_doctor_recording_holds_no_password(locked: ServerProcess, tmp_path: Path):
    """`doctor --record` writes raw observations (INFO, CLIENT LIST) to a file people attach to tickets."""
    record = tmp_path / "session.jsonl"
    base = ("doctor", "--samples", "2", "--interval", "0.2", "--record", str(record))
    check_all([
        Run("doctor --record [URL]", (*base[:1], f"redis://:{ENC}@127.0.0.1:{locked.port}", *base[1:])),
        Run("doctor --record --json [$REDISCLI_AUTH]", (*base[:1], f"redis://127.0.0.1:{locked.port}", *base[1:], "--json"),
            {"REDISCLI_AUTH": PASSWORD}),
        Run("doctor --record [wrong password]", (*base[:1], f"redis://:{WRONG_ENC}@127.0.0.1:{locked.port}", *base[1:]),
            exits=(3,)),
    ])
    text = record.read_text()
    assert text.count("\n") >= 2, "the recording is empty: nothing was checked"
    assert not leaks(text), leaks(text)
    replay = subprocess.run([sys.executable, "-m", "connguard", "doctor", "--replay", str(record)],
                            capture_output=True, text=True, timeout=60)
    assert not leaks(replay.stdout + replay.stderr)
