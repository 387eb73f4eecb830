"""connguard's exporter against Debian's prometheus-redis-exporter at 10,000 clients from 100 loopback hosts.

Run:  python bench/bench_exporter.py [--clients 10000] [--hosts 100] [--scrapes 10] [--interval 1.0]

1. Raises this process's open-files limit to its hard limit (10k client sockets live here), starts a
   throwaway server with room for them, and opens the crowd (the lab's raw-socket clients, named per host).
2. Starts each exporter on loopback only, as a subprocess stopped by its PID:
     - connguard exporter, scraped through /probe (CLIENT LIST budgeted, at a 1 s interval every scrape
       includes it at this size), and once more with CLIENT LIST held back (--clients-every 3600: INFO only);
     - redis_exporter default, --export-client-list, and --export-client-list --export-client-port.
   Each is scraped `--scrapes` times, one scrape per `--interval`, after one warm-up scrape.
3. Per mode: median and max scrape wall time, series and bytes per scrape, new server connections per
   scrape (INFO total_connections_received), server time per scrape (INFO commandstats usec, all commands)
   and server CPU per scrape (INFO used_cpu_sys + used_cpu_user, which includes writing the replies).
4. The full server: lowers maxclients to what is connected, fills the last slot, and scrapes each exporter
   once: connguard still reports connguard_connections_used, redis_exporter reports redis_up 0. Then the
   server kills connguard's held connection: its reconnect is refused, and the next scrape reports usage from
   the socket census (connguard_connections_used_from_census 1).
5. A target that cannot be observed (a loopback listener that accepts and never answers, so an attempt costs
   the whole --connect-timeout): the first scrape makes one attempt, the scrapes that follow within the
   backoff step answer from cached state; their median and max wall time.
Prints a Markdown table; ratios are against redis_exporter --export-client-list in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass

import redis

from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerProcess, default_binary, free_port
from connguard.lab.workloads import alias

REDIS_EXPORTER = shutil.which("prometheus-redis-exporter") or shutil.which("redis_exporter")
NAMES = ("orders-worker", "api", "billing", "search", "cron")


@dataclass
class Result:
    mode: str
    walls: list[float]
    series: int
    app_series: int  # without go_*, process_*, promhttp_* (the exporter's own runtime)
    bytes: int
    new_conns: float
    server_usec: float
    server_cpu_ms: float
    list_walls: list[float]  # connguard: the scrapes that ran a CLIENT LIST themselves (sources refreshed)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def get(url: str, timeout: float = 30.0) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = resp.read()
    return time.perf_counter() - started, body


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exporter exited with {proc.returncode}")
        try:
            get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def samples(body: bytes) -> list[str]:
    return [ln for ln in body.decode().splitlines() if ln and not ln.startswith("#")]


def server_counters(admin: redis.Redis) -> tuple[int, float, float]:
    """(total_connections_received, commandstats usec over all commands, used_cpu seconds)."""
    info = admin.info("all")
    usec = sum(v["usec"] for k, v in info.items() if k.startswith("cmdstat_"))
    return int(info["total_connections_received"]), float(usec), float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def measure(mode: str, url: str, admin: redis.Redis, scrapes: int, interval: float) -> Result:
    get(url)  # warm-up: connguard connects here; redis_exporter connects on every scrape anyway
    time.sleep(interval)
    conns0, usec0, cpu0 = server_counters(admin)
    walls, list_walls, body = [], [], b""
    for _ in range(scrapes):
        wall, body = get(url)
        walls.append(wall)
        age = next((float(ln.split()[-1]) for ln in samples(body)
                    if ln.startswith("connguard_client_list_age_seconds ")), None)
        if age is not None and age <= wall:
            list_walls.append(wall)
        time.sleep(max(0.0, interval - wall))
    conns1, usec1, cpu1 = server_counters(admin)
    lines = samples(body)
    app = [ln for ln in lines if not ln.startswith(("go_", "process_", "promhttp_"))]
    return Result(mode, walls, len(lines), len(app), len(body), (conns1 - conns0) / scrapes,
                  (usec1 - usec0) / scrapes, (cpu1 - cpu0) * 1000 / scrapes, list_walls)


class Exporter:
    """One exporter subprocess on a free loopback port, stopped by its PID."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, env=env)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def connguard(port: int, extra: list[str]) -> Exporter:
    return Exporter([sys.executable, "-m", "connguard", "exporter", "--listen", f"127.0.0.1:{port}", *extra],
                    env={**os.environ})


def redis_exporter(port: int, server_port: int, extra: list[str]) -> Exporter:
    assert REDIS_EXPORTER
    return Exporter([REDIS_EXPORTER, "-redis.addr", f"redis://127.0.0.1:{server_port}",
                     "-web.listen-address", f"127.0.0.1:{port}", *extra])


def blackhole() -> tuple[socket.socket, int]:
    """A loopback port whose kernel completes the TCP handshake (listen backlog) but nobody ever answers."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    return sock, sock.getsockname()[1]


def down_target(scrapes: int = 10) -> tuple[float, list[float]]:
    """(first scrape, the cached scrapes after it) wall times of connguard against a target that never answers."""
    hole, hole_port = blackhole()
    port = free_port()
    exp = connguard(port, ["--connect-timeout", "2"])
    try:
        wait_http(f"http://127.0.0.1:{port}/", exp.proc)
        url = f"http://127.0.0.1:{port}/probe?target=" + urllib.parse.quote(f"redis://127.0.0.1:{hole_port}", safe="")
        first, _ = get(url)
        walls = []
        for _ in range(scrapes):
            wall, body = get(url)
            assert b"connguard_up 0.0" in body
            walls.append(wall)
            time.sleep(0.02)
        return first, walls
    finally:
        exp.stop()
        hole.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=10_000)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--scrapes", type=int, default=10)
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    if REDIS_EXPORTER is None:
        sys.exit("prometheus-redis-exporter not found (Debian: apt-get install prometheus-redis-exporter)")
    hard = raise_nofile()
    if hard < args.clients + 200:
        sys.exit(f"open-files hard limit {hard} is below {args.clients} clients + 200")
    binary = default_binary()
    results: list[Result] = []
    full: list[tuple[str, str]] = []
    with ServerProcess(binary, maxclients=args.clients + 100, nofile=hard) as server, \
            Crowd("127.0.0.1", server.port) as crowd:
        per_host = args.clients // args.hosts
        started = time.monotonic()
        for i in range(args.hosts):
            crowd.open(per_host, source=alias(i, subnet=4), name=NAMES[i % len(NAMES)])
        opened = crowd.connected
        print(f"# {opened} clients from {args.hosts} hosts opened in {time.monotonic() - started:.1f} s "
              f"on {binary.label}", file=sys.stderr)
        time.sleep(1.1)
        admin = redis.Redis(port=server.port, single_connection_client=True)
        target = urllib.parse.quote(f"redis://127.0.0.1:{server.port}", safe="")
        modes = [
            ("connguard /probe (CLIENT LIST budgeted)", "cg", []),
            ("connguard /probe, INFO only (--clients-every 3600)", "cg", ["--clients-every", "3600"]),
            ("redis_exporter default", "re", []),
            ("redis_exporter --export-client-list", "re", ["-export-client-list"]),
            ("redis_exporter --export-client-list --export-client-port", "re",
             ["-export-client-list", "-export-client-port"]),
        ]
        for mode, kind, extra in modes:
            port = free_port()
            exp = connguard(port, extra) if kind == "cg" else redis_exporter(port, server.port, extra)
            url = (f"http://127.0.0.1:{port}/probe?target={target}" if kind == "cg"
                   else f"http://127.0.0.1:{port}/metrics")
            try:
                wait_http(f"http://127.0.0.1:{port}/", exp.proc)
                results.append(measure(mode, url, admin, args.scrapes, args.interval))
                print(f"# {mode}: done", file=sys.stderr)
            finally:
                exp.stop()

        # The full server: connguard holds its connection from before; redis_exporter must connect per scrape.
        cg_port, re_port = free_port(), free_port()
        cg = connguard(cg_port, [])
        re_ = redis_exporter(re_port, server.port, [])
        try:
            wait_http(f"http://127.0.0.1:{cg_port}/", cg.proc)
            wait_http(f"http://127.0.0.1:{re_port}/", re_.proc)
            get(f"http://127.0.0.1:{cg_port}/probe?target={target}")  # connguard connects while there is room
            connected = int(admin.info("clients")["connected_clients"])
            admin.config_set("maxclients", connected + 1)
            crowd.open(5, source="127.0.0.9")  # takes the last slot; the rest are refused
            _, cg_body = get(f"http://127.0.0.1:{cg_port}/probe?target={target}")
            _, re_body = get(f"http://127.0.0.1:{re_port}/metrics")
            pick = lambda body, names: [ln for ln in samples(body) if ln.split("{")[0].split(" ")[0] in names]  # noqa: E731
            full.append(("connguard", "; ".join(pick(cg_body, {"connguard_up", "connguard_server_refusing",
                                                                "connguard_connections_used", "connguard_maxclients"}))))
            full.append(("redis_exporter", "; ".join(pick(re_body, {"redis_up", "redis_connected_clients",
                                                                     "redis_config_maxclients"})) or "(no redis_ series)"))
            # The server drops connguard's held connection and a client takes the slot: the reconnect is refused,
            # usage comes from /proc.
            for client in admin.client_list():
                if client["name"].startswith("connguard"):
                    admin.execute_command("CLIENT", "KILL", "ID", client["id"])
            crowd.open(3, source="127.0.0.9")  # someone else takes the freed slot before connguard is back
            wall, cg_body = get(f"http://127.0.0.1:{cg_port}/probe?target={target}")
            full.append((f"connguard, its connection killed ({wall * 1000:.0f} ms)", "; ".join(pick(cg_body, {
                "connguard_up", "connguard_server_refusing", "connguard_connections_used",
                "connguard_connections_used_from_census", "connguard_maxclients"}))))
        finally:
            cg.stop()
            re_.stop()
            admin.close()

    base = next(r for r in results if r.mode == "redis_exporter --export-client-list")
    print(f"\nMachine: {platform.processor() or platform.machine()}, nproc {os.cpu_count()}, Python "
          f"{platform.python_version()}, {binary.label}, {args.clients} clients from {args.hosts} hosts, "
          f"{args.scrapes} scrapes at {args.interval:g} s\n")
    print("| exporter | median scrape | max | median of scrapes that ran CLIENT LIST | vs --export-client-list "
          "(median) | series (without go_/process_) | bytes | new server connections / scrape "
          "| server command time / scrape | server CPU / scrape |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base_med = statistics.median(base.walls)
    for r in results:
        med = statistics.median(r.walls)
        with_list = (f"{statistics.median(r.list_walls) * 1000:.1f} ms ({len(r.list_walls)} of {len(r.walls)})"
                     if r.list_walls else ("every scrape" if "export-client-list" in r.mode else "none"))
        print(f"| {r.mode} | {med * 1000:.1f} ms | {max(r.walls) * 1000:.1f} ms | {with_list} | "
              f"{base_med / med:.2f}x | {r.series} ({r.app_series}) | {r.bytes:,} | "
              f"{r.new_conns:.2f} | {r.server_usec / 1000:.2f} ms | {r.server_cpu_ms:.1f} ms |")
    print("\nSeries: ours are bounded by --top-sources (10 + other) whatever the client count; the table's last "
          "column is INFO used_cpu_sys + used_cpu_user per scrape, the one before it INFO commandstats usec "
          "(both include one INFO of the bench's own per mode).")
    print("\nFull server (maxclients lowered to what is connected, last slot taken):\n")
    for who, text in full:
        print(f"- {who}: `{text}`")
    first, cached = down_target()
    print(f"\nA target that never answers (--connect-timeout 2): first scrape {first * 1000:.0f} ms (one attempt); "
          f"the next {len(cached)} scrapes, from cached state within the backoff step: median "
          f"{statistics.median(cached) * 1000:.1f} ms, max {max(cached) * 1000:.1f} ms.")


if __name__ == "__main__":
    main()
