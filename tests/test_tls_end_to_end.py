"""TLS end to end: status, doctor and kill (dry run) over rediss:// with a throwaway CA, client certificates and an
explicit opt-out of verification; each mismatch is one line and exit 3; a full server over TLS is `exhausted`.

The PKI (a CA, a server certificate for IP 127.0.0.1 signed by it, a client certificate, and a second,
unrelated CA) is the session-scoped `pki` fixture of conftest.py. Servers keep their plain port (the lab's readiness check pings
it) and add `--tls-port`.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from connguard.lab.servers import ServerBinary, ServerProcess, free_port
from exporter_running import run_exporter  # noqa: F401 (a fixture)

from connguard.guard import guarded_client


COMMANDS = {
    "status": ("status", "--connect-timeout", "1"),
    "doctor": ("doctor", "--once", "--connect-timeout", "1"),
    "kill": ("kill", "--source", "127.0.0.9", "--idle", "0", "--connect-timeout", "1"),
}


def tls_server(start_server, binary: ServerBinary, pki: dict[str, Path], auth_clients: str, maxclients: int = 50) -> tuple[ServerProcess, int]:
    if binary.origin != "path":
        pytest.skip("needs a TLS-capable redis-server on PATH")
    port = free_port()
    server = start_server(binary, maxclients=maxclients, extra_args=(
        "--tls-port", str(port), "--tls-cert-file", str(pki["server"]), "--tls-key-file", str(pki["server.key"]),
        "--tls-ca-cert-file", str(pki["ca"]), "--tls-auth-clients", auth_clients))
    return server, port


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "REDISCLI_AUTH"}}
    return subprocess.run([sys.executable, "-m", "connguard", *args], capture_output=True, text=True, env=env, timeout=90)


def run_each(cases: dict[str, tuple[str, ...]]) -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {label: pool.submit(run, *args) for label, args in cases.items()}
        return {label: fut.result() for label, fut in futures.items()}


def every_command(url: str, extra: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    return {name: (args[0], url, *args[1:], *extra) for name, args in COMMANDS.items()}


def assert_works(procs: dict[str, subprocess.CompletedProcess[str]], what: str) -> None:
    for name, proc in procs.items():
        assert "Traceback" not in proc.stderr, (what, name, proc.stderr)
        assert proc.returncode in (0, 1), (what, name, proc.returncode, proc.stderr)
        assert "rediss://127.0.0.1:" in proc.stdout, (what, name, proc.stdout[:200])


def one_line(proc: subprocess.CompletedProcess[str], code: int = 3) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stdout[:200], proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("connguard: "), proc.stderr
    return lines[0]


def test_every_command_works_over_tls_with_a_ca_file_and_with_client_certificates(default_binary, start_server, pki):
    _, optional = tls_server(start_server, default_binary, pki, "optional")
    _, required = tls_server(start_server, default_binary, pki, "yes")
    ca = f"ssl_ca_certs={pki['ca']}"
    certs = f"{ca}&ssl_certfile={pki['client']}&ssl_keyfile={pki['client.key']}"
    procs = run_each({
        **{f"{k} [CA file]": v for k, v in every_command(f"rediss://127.0.0.1:{optional}?{ca}").items()},
        **{f"{k} [client certificate]": v for k, v in every_command(f"rediss://127.0.0.1:{required}?{certs}").items()},
        **{f"{k} --json [client certificate]": v for k, v in every_command(f"rediss://127.0.0.1:{required}?{certs}", ("--json",)).items()},
    })
    assert_works({k: p for k, p in procs.items() if "--json" not in k}, "TLS")
    for name, proc in procs.items():
        if "--json" in name:
            assert proc.returncode in (0, 1) and json.loads(proc.stdout)["target"].startswith("rediss://127.0.0.1:"), proc.stderr


def test_verification_can_be_switched_off_explicitly(default_binary, start_server, pki):
    _, optional = tls_server(start_server, default_binary, pki, "optional")
    procs = run_each(every_command(f"rediss://127.0.0.1:{optional}?ssl_cert_reqs=none"))
    assert_works(procs, "ssl_cert_reqs=none")


def test_switching_verification_off_is_said_on_stderr(default_binary, start_server, pki):
    """Issue 13 item 2: the opt-out (`?ssl_cert_reqs=none` or `--insecure`) works, and says so on stderr each run."""
    _, optional = tls_server(start_server, default_binary, pki, "optional")
    procs = run_each({
        **{f"{k} [ssl_cert_reqs=none]": v for k, v in every_command(f"rediss://127.0.0.1:{optional}?ssl_cert_reqs=none").items()},
        **{f"{k} [--insecure]": v for k, v in every_command(f"rediss://127.0.0.1:{optional}", ("--insecure",)).items()},
        "watch [--insecure]": ("watch", f"rediss://127.0.0.1:{optional}", "--insecure", "--json", "--count", "1"),
    })
    for name, proc in procs.items():
        assert "Traceback" not in proc.stderr and proc.returncode in (0, 1), (name, proc.returncode, proc.stderr)
        assert "verification is off" in proc.stderr.lower(), (name, proc.stderr)
        how = name.split("[", 1)[1].rstrip("]")
        assert how in proc.stderr, (name, proc.stderr)
    # Without the opt-out, the same server's self-signed CA is refused: --insecure is what made the difference.
    assert "not trusted" in one_line(run("status", f"rediss://127.0.0.1:{optional}", "--connect-timeout", "1"))


def test_insecure_on_a_plain_url_is_one_usage_line():
    assert "not a TLS URL" in one_line(run("status", "redis://127.0.0.1:1", "--insecure"))


@pytest.mark.slow
def test_each_tls_mismatch_is_one_clear_line_and_exit_3(default_binary, start_server, pki):
    plain_server, optional = tls_server(start_server, default_binary, pki, "optional")
    ca = f"ssl_ca_certs={pki['ca']}"
    cases = {  # (a missing client certificate has its own test below)
        "plain to TLS": (f"redis://127.0.0.1:{optional}", "rediss://"),
        "TLS to plain": (f"rediss://127.0.0.1:{plain_server.port}?{ca}", "not TLS"),
        "unknown CA": (f"rediss://127.0.0.1:{optional}?ssl_ca_certs={pki['other-ca']}", "not trusted"),
        "wrong hostname": (f"rediss://localhost:{optional}?{ca}", "localhost"),
    }
    procs = run_each({f"{cmd} [{what}]": (args[0], url, *args[1:])
                      for what, (url, _) in cases.items() for cmd, args in COMMANDS.items()})
    problems = []
    for label, proc in procs.items():
        what = label.split("[", 1)[1].rstrip("]")
        try:
            line = one_line(proc)
            assert cases[what][1] in line, f"the line does not say {cases[what][1]!r}: {line}"
        except AssertionError as exc:
            problems.append(f"{label}: {exc}")
    assert not problems, "\n".join(problems)


def test_a_full_server_over_tls_is_exhausted_not_a_tls_error(default_binary, start_server, pki):
    """Over TLS a full server closes without a word (docs/redis-facts.md): still `exhausted`, exit 2."""
    _, port = tls_server(start_server, default_binary, pki, "optional", maxclients=2)
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    held = [context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="127.0.0.1")
            for _ in range(2)]
    try:
        for sock in held:
            sock.sendall(b"PING\r\n")
            assert sock.recv(16).startswith(b"+PONG")
        url = f"rediss://127.0.0.1:{port}?ssl_ca_certs={pki['ca']}"
        procs = run_each({"doctor": ("doctor", url, "--once", "--connect-timeout", "1", "--json"),
                          "status": ("status", url, "--connect-timeout", "1"),
                          "kill": ("kill", url, "--source", "127.0.0.9", "--connect-timeout", "1")})
        report = json.loads(procs["doctor"].stdout)
        assert procs["doctor"].returncode == 2, procs["doctor"].stderr
        assert (report["status"], report["reachable"]) == ("critical", False)
        assert "exhausted" in {f["cause"] for f in report["findings"]}
        assert "handshake" not in (report.get("error") or "").lower(), report.get("error")
        for name in ("status", "kill"):
            line = one_line(procs[name], code=2)
            assert "maxclients" in line and "TLS handshake" not in line, line
    finally:
        for sock in held:
            sock.close()


MISSING_CERT_AS_FULL = (
    "target.py (owner: defects): _is_refusal counts any EOF/reset over TLS as a full server's silent refusal, also "
    "after a *completed* handshake. A full Redis closes before the handshake (acceptCommonHandler runs before "
    "connAccept); a close after it is something else, e.g. the 'certificate required' alert of --tls-auth-clients "
    "yes losing the race with the close (seen live in about 1 run in 4 without ssl_certfile): connguard then retries "
    "for --connect-timeout and says 'server full', exit 2 (CRITICAL), instead of exit 3")


@pytest.fixture
def closes_after_handshake(pki) -> Iterator[int]:
    """A TLS port that completes the handshake with the real server certificate, then closes without a word:
    what the client sees when a server's 'certificate required' alert loses the race with its close."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki["server"]), str(pki["server.key"]))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                continue
            try:
                with context.wrap_socket(raw, server_side=True):
                    pass  # handshake done; close at once
            except (OSError, ssl.SSLError):
                raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_a_close_after_a_completed_tls_handshake_is_not_a_full_server(pki, closes_after_handshake: int):
    proc = run("status", f"rediss://127.0.0.1:{closes_after_handshake}?ssl_ca_certs={pki['ca']}", "--connect-timeout", "1")
    line = one_line(proc, code=3)
    assert "server full" not in line, line


def test_the_exporter_and_the_guard_work_over_tls_with_client_certificates(default_binary, start_server, pki,
                                                                          run_exporter):
    _, required = tls_server(start_server, default_binary, pki, "yes")
    ca = f"rediss://127.0.0.1:{required}?ssl_ca_certs={pki['ca']}"
    url = f"{ca}&ssl_certfile={pki['client']}&ssl_keyfile={pki['client.key']}"
    refused = run_exporter().probe(ca)  # without the client certificate first: targets are kept by endpoint
    seen = run_exporter().probe(url)
    assert seen["connguard_up"] == 1 and seen["connguard_maxclients"] == 50, seen
    assert refused["connguard_up"] == 0
    assert [k for k in refused if k.startswith("connguard_probe_error")] == ['connguard_probe_error{reason="tls"}'], refused
    client = guarded_client(url, budget=2)
    try:
        client.set("tls-key", "v")
        assert client.get("tls-key") == b"v" and client.ping() is True
    finally:
        client.close()
