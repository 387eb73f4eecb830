"""Every subcommand against the same matrix of bad input: one line on stderr, a defined exit code, no traceback.

Rows: bad URL, refused port, an HTTP port, wrong password, missing password, an ACL user without CONFIG (dry run
and --yes), an ACL user without CLIENT LIST, a server that closes half-way through a bulk reply, a server that
never answers, an empty $REDIS_URL, numbers out of range and numbers that are not finite. Columns: status,
doctor, kill, config, watch, plan, exporter (plan takes no target; the exporter only for what it checks at start). Every cell runs once per session, three at a time (the never-answering server costs the
socket timeout, 5 s, per cell); each cell is then its own test item. `python tests/test_bad_input_matrix.py`
prints the matrix and its result as the markdown table in docs/reliability.md.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import pytest

from connguard.lab.servers import ServerProcess, find_binaries, free_port, resp_command

pytestmark = pytest.mark.slow  # the module fixture runs the whole matrix (about 40 s serially)
PASSWORD = "matrix-pw"
COMMANDS = ("status", "doctor", "kill", "config", "watch", "plan", "exporter")
NO_TARGET = ("plan",)  # takes no target at all
# The exporter is a long-running server: a target it cannot observe is `connguard_up 0` on its page, not an
# exit; only what it checks at start (a bad --target URL, its numbers) belongs in this matrix.
STARTUP_ONLY = ("exporter",)
# The arguments each command needs besides a target, kept harmless: dry runs, one snapshot.
TAIL = {
    "status": ("--connect-timeout", "1"),
    "doctor": ("--once", "--connect-timeout", "1"),
    "kill": ("--source", "127.0.0.9", "--idle", "0", "--connect-timeout", "1"),
    "config": ("--timeout", "0", "--connect-timeout", "1"),
    "watch": ("--count", "1", "--interval", "0.2", "--connect-timeout", "1"),
    "plan": ("--instances", "2", "--pool-size", "10"),
    "exporter": (),
}
# One number out of range, and one not finite, per command.
OUT_OF_RANGE = {"status": ("--critical", "-0.5"), "doctor": ("--interval", "-1"), "kill": ("--max", "0"),
                "config": ("--maxclients", "-5"), "watch": ("--interval", "-1"), "plan": ("--pool-size", "0"),
                "exporter": ("--top-sources", "-1")}
NOT_FINITE = {"status": ("--warning", "nan"), "doctor": ("--idle-threshold", "inf"), "kill": ("--idle", "nan"),
              "config": ("--timeout", "inf"), "watch": ("--forecast-window", "nan"), "plan": ("--maxclients", "nan"),
              "exporter": ("--window", "nan")}

OK = (0, 1)  # a working command on an idle lab server: OK, or a WARNING the server's shape explains


@dataclass(frozen=True)
class Expect:
    exits: tuple[int, ...]
    words: str = ""  # the error kind (or words) the one stderr line must hold; "" for a working command
    report: bool = False  # a dry run that completes as a report on stdout (holding `words`), exit code as given
    forbid: str = ""  # words the line must not hold (a misleading diagnosis)


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    expect: dict[str, Expect | None]  # None: not applicable (plan takes no target)


def url_rows(words: str, startup: bool = False) -> dict[str, Expect | None]:
    """Exit 3 and one line holding `words` from every command that takes a target (`startup`: the exporter too)."""
    return {c: (None if c in NO_TARGET or (c in STARTUP_ONLY and not startup) else Expect((3,), words)) for c in COMMANDS}


def ok_rows(**special: Expect | None) -> dict[str, Expect | None]:
    """Every command that talks to a server works (OK), except those given."""
    return {c: special.get(c, None if c in NO_TARGET + STARTUP_ONLY else Expect(OK)) for c in COMMANDS}


ROWS = [
    Row("bad_url", "bad URL (`redis://127.0.0.1:notaport`)", url_rows("bad target", startup=True)),
    Row("refused", "refused port", url_rows("unreachable")),
    Row("http", "HTTP port (a tiny local HTTP server)", url_rows("not redis")),
    Row("wrong_password", "wrong password", url_rows("auth failed")),
    Row("missing_password", "missing password", url_rows("auth failed")),
    Row("acl_no_config", "ACL user without CONFIG",
        # config's dry run still reports what it would do, says CONFIG GET was denied, and exits UNKNOWN.
        ok_rows(config=Expect((3,), "denied", report=True))),
    Row("acl_no_config_yes", "ACL user without CONFIG, with `--yes`",
        {**{c: None for c in COMMANDS}, "kill": Expect(OK), "config": Expect((3,), "config refused")}),
    Row("acl_no_client_list", "ACL user without CLIENT LIST",
        ok_rows(kill=Expect((3,), "denied"))),
    # The handshake succeeded (SETNAME, SETINFO, CLIENT ID answered); INFO's reply is cut: not a handshake/TLS problem.
    Row("half_bulk", "server closes half-way through a bulk reply",
        {c: (None if c in NO_TARGET + STARTUP_ONLY else Expect((3,), "unreachable", forbid="handshake")) for c in COMMANDS}),
    Row("silent", "server never answers (read timeout)", url_rows("did not answer")),
    Row("empty_redis_url", "empty `$REDIS_URL` (no URL argument: the default, 127.0.0.1:6379)",
        url_rows("127.0.0.1:6379")),
    # The URL forms every command takes (issue 21): a bare host:port and a lone userinfo (the password) work
    # everywhere; a multi-seed URL of servers not in cluster mode and a Sentinel URL nobody answers are one line.
    Row("bare_host_port", "bare `host:port` (password from `$REDISCLI_AUTH`)", ok_rows()),
    Row("lone_userinfo", "lone userinfo is the password (`redis://PASSWORD@host:port`)", ok_rows()),
    Row("multi_seed", "multi-seed URL (`redis://a:p,b:p`) of servers not in cluster mode",
        url_rows("bad target", startup=True)),
    Row("sentinel_refused", "`redis+sentinel://` URL whose Sentinels refuse the connection", url_rows("unreachable")),
    Row("out_of_range", "number out of range", {c: Expect((3,), "") for c in COMMANDS}),
    Row("not_finite", "number not finite (nan, inf)", {c: Expect((3,), "") for c in COMMANDS}),
]

# -- fake servers ------------------------------------------------------------------------------------
class FakeServer:
    """A TCP listener on a free loopback port with one behaviour per connection; closed with the test."""

    def __init__(self, behaviour) -> None:  # type: ignore[no-untyped-def]
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.behaviour = behaviour
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.behaviour(conn)
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for conn in self.held:
            conn.close()


def _read_command(conn: socket.socket, buf: bytearray) -> list[bytes] | None:
    """One RESP array command (or an inline one) from the socket; None when the peer closed."""
    while True:
        if buf.startswith(b"*"):
            parts, pos = _parse_array(bytes(buf))
            if parts is not None:
                del buf[:pos]
                return parts
        elif b"\r\n" in buf:
            line, _, rest = bytes(buf).partition(b"\r\n")
            buf[:] = rest
            return line.split()
        chunk = conn.recv(4096)
        if not chunk:
            return None
        buf += chunk


def _parse_array(data: bytes) -> tuple[list[bytes] | None, int]:
    try:
        head, pos = data.split(b"\r\n", 1)[0], data.index(b"\r\n") + 2
        parts = []
        for _ in range(int(head[1:])):
            end = data.index(b"\r\n", pos)
            size = int(data[pos + 1:end])
            start = end + 2
            if len(data) < start + size + 2:
                return None, 0
            parts.append(data[start:start + size])
            pos = start + size + 2
        return parts, pos
    except ValueError:
        return None, 0


def half_bulk(conn: socket.socket) -> None:
    """Answers the connection handshake like Redis, then sends half of a bulk reply to the first real
    command (INFO, CONFIG, CLIENT LIST...) and closes."""
    buf = bytearray()
    while (cmd := _read_command(conn, buf)) is not None:
        name = b" ".join(cmd[:2]).upper()
        if name.startswith((b"CLIENT SETNAME", b"CLIENT SETINFO", b"CLIENT NO-EVICT", b"SELECT", b"AUTH")):
            conn.sendall(b"+OK\r\n")
        elif name.startswith(b"CLIENT ID"):
            conn.sendall(b":7\r\n")
        elif name.startswith(b"PING"):
            conn.sendall(b"+PONG\r\n")
        else:
            conn.sendall(b"$4000\r\n# Server\r\nredis_version:7.0.15\r\nprocess_id:4")
            time.sleep(0.05)
            conn.close()
            return


def silent(conn: socket.socket) -> None:
    """Accepts and never answers: the client's read must time out."""
    while conn.recv(4096):
        pass


# -- the matrix, run once ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    exit: int
    stdout: str
    stderr: str
    seconds: float


def _lab_server() -> ServerProcess:
    binaries = find_binaries()
    if not binaries:
        pytest.skip("no server binary found")
    binary = next((b for b in binaries if b.flavor == "redis" and b.version.startswith("7.")), binaries[0])
    return ServerProcess(binary, password=PASSWORD, maxclients=50).start()


def _acl(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(resp_command("AUTH", PASSWORD)
                     + resp_command("ACL", "SETUSER", "noconfig", "on", ">noconfig-pw", "~*", "&*", "+@all", "-config")
                     + resp_command("ACL", "SETUSER", "nolist", "on", ">nolist-pw", "~*", "&*", "+@all", "-client|list"))
        data = b""
        while data.count(b"\r\n") < 3:
            data += sock.recv(4096)
        assert data == b"+OK\r\n" * 3, data


def _http() -> tuple[http.server.ThreadingHTTPServer, int]:
    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


def _cells(server: ServerProcess, http_port: int, half: FakeServer, quiet: FakeServer) -> dict[tuple[str, str], tuple[tuple[str, ...], dict[str, str]]]:
    p = server.port
    urls = {
        "bad_url": "redis://127.0.0.1:notaport",
        "refused": f"redis://127.0.0.1:{free_port()}",
        "http": f"redis://127.0.0.1:{http_port}",
        "wrong_password": f"redis://:not-the-password@127.0.0.1:{p}",
        "missing_password": f"redis://127.0.0.1:{p}",
        "acl_no_config": f"redis://noconfig:noconfig-pw@127.0.0.1:{p}",
        "acl_no_client_list": f"redis://nolist:nolist-pw@127.0.0.1:{p}",
        "half_bulk": f"redis://127.0.0.1:{half.port}",
        "silent": f"redis://127.0.0.1:{quiet.port}",
        "lone_userinfo": f"redis://{PASSWORD}@127.0.0.1:{p}",
        "multi_seed": f"redis://:{PASSWORD}@127.0.0.1:{p},127.0.0.1:{p}",
        "sentinel_refused": f"redis+sentinel://127.0.0.1:{free_port()}/mymaster",
    }
    good = f"redis://:{PASSWORD}@127.0.0.1:{p}"
    cells = {}
    for row in ROWS:
        for cmd in COMMANDS:
            if row.expect[cmd] is None:
                continue
            env: dict[str, str] = {}
            where: tuple[str, ...] = () if cmd in NO_TARGET + STARTUP_ONLY else (good,)
            tail = TAIL[cmd]
            if row.key in urls:
                where = ("--target", urls[row.key]) if cmd in STARTUP_ONLY else (urls[row.key],)
            elif row.key == "empty_redis_url":
                where, env = (), {"REDIS_URL": ""}
            elif row.key == "bare_host_port":
                where, env = (f"127.0.0.1:{p}",), {"REDISCLI_AUTH": PASSWORD}
            elif row.key == "acl_no_config_yes":
                where, tail = (urls["acl_no_config"],), tail + ("--yes",)
            elif row.key in ("out_of_range", "not_finite"):
                tail = tail + (OUT_OF_RANGE if row.key == "out_of_range" else NOT_FINITE)[cmd]
            cells[(row.key, cmd)] = ((cmd, *where, *tail), env)
    return cells


def _run(args: tuple[str, ...], env_extra: dict[str, str]) -> Result:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "REDISCLI_AUTH"}}
    env.update(env_extra)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "connguard", *args], capture_output=True, text=True, env=env, timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def run_matrix() -> dict[tuple[str, str], Result]:
    server = _lab_server()
    httpd, http_port = _http()
    half, quiet = FakeServer(half_bulk), FakeServer(silent)
    try:
        _acl(server)
        cells = _cells(server, http_port, half, quiet)
        # The silent server's cells first: they only wait out a 5 s timeout while the others use the CPU.
        with ThreadPoolExecutor(max_workers=4) as pool:
            ordered = sorted(cells.items(), key=lambda cell: cell[0][0] != "silent")
            futures = {key: pool.submit(_run, *spec) for key, spec in ordered}
            return {key: fut.result() for key, fut in futures.items()}
    finally:
        half.close()
        quiet.close()
        httpd.shutdown()
        httpd.server_close()
        server.stop()


@pytest.fixture(scope="module")
def matrix() -> dict[tuple[str, str], Result]:
    return run_matrix()


def verdict(row: Row, cmd: str, got: Result) -> str | None:
    """None if the cell behaves as the contract says, else what is wrong."""
    want = row.expect[cmd]
    assert want is not None
    if "Traceback" in got.stderr:
        return "traceback: " + got.stderr.strip().splitlines()[-1]
    if got.exit not in want.exits:
        return f"exit {got.exit}, expected {'/'.join(map(str, want.exits))}: {got.stderr.strip()[:160]}"
    lines = got.stderr.strip().splitlines()
    if want.report:
        if got.stderr.strip():
            return f"a report that also wrote stderr: {got.stderr.strip()[:120]!r}"
        if want.words not in got.stdout:
            return f"the report lacks {want.words!r}: {got.stdout.strip()[:160]!r}"
    elif 3 in want.exits or 2 in want.exits:  # an error: exactly one line on stderr, nothing on stdout
        if len(lines) != 1:
            return f"{len(lines)} lines on stderr: {got.stderr.strip()[:200]!r}"
        if got.stdout.strip():
            return f"an error that also wrote stdout: {got.stdout.strip()[:120]!r}"
        if want.words and want.words not in lines[0]:
            return f"the line lacks {want.words!r}: {lines[0][:160]}"
        if want.forbid and want.forbid in lines[0]:
            return f"the line says {want.forbid!r}, which misleads: {lines[0][:160]}"
    elif not got.stdout.strip():
        return "a working command printed nothing"
    return None


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


CELLS = [(row, cmd) for row in ROWS for cmd in COMMANDS if row.expect[cmd] is not None]


@pytest.mark.parametrize("row, cmd", [pytest.param(row, cmd, id=f"{row.key}-{cmd}") for row, cmd in CELLS])
def test_bad_input_gets_one_line_and_its_exit_code(matrix, row: Row, cmd: str):
    if row.key == "empty_redis_url" and _listening(6379):
        pytest.skip("something listens on 127.0.0.1:6379, the default target")
    got = matrix[(row.key, cmd)]
    problem = verdict(row, cmd, got)
    assert problem is None, f"{row.title} / {cmd}: {problem}"


def test_the_never_answering_server_is_given_up_on_within_the_socket_timeout(matrix):
    """The read timeout is 5 s (open_connection's socket_timeout_s); nothing waits much longer."""
    for cmd in ("status", "doctor", "kill", "config", "watch"):
        assert matrix[("silent", cmd)].seconds < 20, (cmd, matrix[("silent", cmd)].seconds)


def markdown(results: dict[tuple[str, str], Result]) -> str:
    """The matrix as a table: per cell the exit code, pass/fail, and the error kind; then one example line per row."""
    out = ["| input | " + " | ".join(f"`{c}`" for c in COMMANDS) + " |", "|---|" + "---|" * len(COMMANDS)]
    examples = []
    for row in ROWS:
        cells = []
        for cmd in COMMANDS:
            if row.expect[cmd] is None:
                cells.append("n/a")
                continue
            got = results[(row.key, cmd)]
            problem = verdict(row, cmd, got)
            mark = "ok" if problem is None else "FAIL"
            err = got.stderr.strip().splitlines()[0] if got.stderr.strip() else ""
            kind = err.removeprefix("connguard: ").split(":", 1)[0] if err else "report"
            cells.append(f"{got.exit} {mark} ({kind})")
            if err and len(examples) < len(ROWS) and not any(e.startswith(f"- {row.title}:") for e in examples):
                examples.append(f"- {row.title}: `{err}`")
        out.append(f"| {row.title} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n\nOne stderr line per row, as printed:\n\n" + "\n".join(examples)


if __name__ == "__main__":
    print(markdown(run_matrix()))
