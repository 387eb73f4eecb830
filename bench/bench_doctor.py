"""Time `connguard doctor --once` against a server holding 10,000 client connections.

Prints: the in-process time (connect, INFO, CONFIG GET, CLIENT LIST, parse, diagnose), the end-to-end
time of `python -m connguard doctor --once --json` as a subprocess, and the server-side time of each
CLIENT LIST read from SLOWLOG (slowlog-log-slower-than 0 on the throwaway server).

    python bench/bench_doctor.py [--clients 10000] [--runs 3] [--server-bin PATH]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import redis

from connguard.analysis.diagnosis import DoctorSettings
from connguard.doctor import run_doctor
from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerProcess, default_binary
from connguard.target import parse_target


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def open_crowd(port: int, clients: int) -> Crowd:
    crowd = Crowd("127.0.0.1", port)
    per_source = 1000
    for i in range(0, clients, per_source):
        n = min(per_source, clients - i)
        crowd.open(n, source=f"127.0.{10 + i // per_source}.1", name=f"app-{i // per_source}")
    return crowd


def client_list_server_times(admin: redis.Redis) -> list[float]:
    """Server time (ms) of every CLIENT LIST in the slowlog, oldest first."""
    entries = admin.slowlog_get(1024)
    return [e["duration"] / 1000 for e in reversed(entries)
            if [a.decode().lower() if isinstance(a, bytes) else str(a).lower() for a in e["command"].split()[:2]]
            == ["client", "list"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-bin")
    args = parser.parse_args()
    raise_nofile(args.clients + 1000)
    binary = default_binary(args.server_bin)
    with ServerProcess(binary, maxclients=args.clients + 100) as server:
        admin = redis.Redis(port=server.port)
        admin.config_set("slowlog-log-slower-than", 0)
        admin.config_set("slowlog-max-len", 1024)
        t0 = time.perf_counter()
        crowd = open_crowd(server.port, args.clients)
        opened = time.perf_counter() - t0
        try:
            print(f"server: {binary.label}; {crowd.connected} client connections opened in {opened:.1f}s")
            target = parse_target(server.url)
            settings = DoctorSettings(interval_s=0)
            admin.slowlog_reset()
            inproc = []
            for _ in range(args.runs):
                t = time.perf_counter()
                diag = run_doctor(target, settings, once=True)
                inproc.append(time.perf_counter() - t)
            print(f"in-process run_doctor --once: median {statistics.median(inproc) * 1000:.0f} ms, "
                  f"max {max(inproc) * 1000:.0f} ms over {args.runs} runs "
                  f"(status {diag.status}, {sum(s.connections for s in diag.sources or ())} clients in top sources)")
            e2e = []
            for _ in range(args.runs):
                t = time.perf_counter()
                out = subprocess.run([sys.executable, "-m", "connguard", "doctor", server.url, "--once", "--json"],
                                     capture_output=True, text=True, timeout=60)
                e2e.append(time.perf_counter() - t)
            print(f"subprocess `connguard doctor --once --json`: median {statistics.median(e2e) * 1000:.0f} ms, "
                  f"max {max(e2e) * 1000:.0f} ms (exit {out.returncode})")
            text = []
            for _ in range(args.runs):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "connguard", "doctor", server.url, "--once"],
                               capture_output=True, text=True, timeout=60)
                text.append(time.perf_counter() - t)
            print(f"subprocess `connguard doctor --once` (rich text): median {statistics.median(text) * 1000:.0f} ms, "
                  f"max {max(text) * 1000:.0f} ms")
            e2e += text
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import connguard.cli"], check=True)
            print(f"  of which Python start + imports: {(time.perf_counter() - t) * 1000:.0f} ms")
            server_ms = client_list_server_times(admin)
            if server_ms:
                print(f"server time of CLIENT LIST (SLOWLOG): median {statistics.median(server_ms):.1f} ms, "
                      f"max {max(server_ms):.1f} ms over {len(server_ms)} calls")
            ok = max(e2e) <= 1.0
            print(f"budget: doctor --once <= 1 s wall at {args.clients} clients: {'PASS' if ok else 'FAIL'}")
            return 0 if ok else 1
        finally:
            crowd.close()
            admin.close()


if __name__ == "__main__":
    sys.exit(main())
