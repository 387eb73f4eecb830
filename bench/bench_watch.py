"""What `connguard watch` costs: CLIENT LIST's share of the server's time at 10k clients, and watch's CPU per tick.

Run:  python bench/bench_watch.py [--clients 10000] [--duration 60] [--server-bin PATH]

1. Starts a throwaway server and opens `--clients` real idle connections from 40 loopback aliases.
2. Runs `connguard watch --json` against it for `--duration` seconds, three ways, one after the other:
     a. the defaults (--interval 2, CLIENT LIST budget adaptive, <= 1% of server time);
     b. --interval 0.5 with the adaptive budget;
     c. --interval 0.5 --clients-every 0.5: CLIENT LIST on every tick, the same-run baseline a naive poller is.
   For each it reads the server's own INFO commandstats (`cmdstat_client|list`: calls, usec) before and after
   over a separate connection, so the share is server time spent in CLIENT LIST / wall time.
3. Watch's own CPU per tick is the child's user+sys CPU over N ticks minus a one-tick run (start-up and
   imports), divided by N-1.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time

import redis

from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerProcess, default_binary
from connguard.monitor.watch_budget import client_list_stat

SOURCES = 40


def commandstat(client: redis.Redis) -> tuple[int, int]:
    sections = {"commandstats": {k: ",".join(f"{kk}={vv}" for kk, vv in v.items())
                                 for k, v in client.info("commandstats").items()}}
    stat = client_list_stat(sections)
    return (stat[0], stat[1]) if stat else (0, 0)


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_watch(url: str, args: list[str], client: redis.Redis) -> dict[str, float]:
    """One watch run; server-side CLIENT LIST time and the child's CPU."""
    calls0, usec0 = commandstat(client)
    cpu0, t0 = child_cpu(), time.monotonic()
    done = subprocess.run([sys.executable, "-m", "connguard", "watch", url, "--json", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=3600)
    wall, cpu = time.monotonic() - t0, child_cpu() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"watch failed ({done.returncode}): {done.stderr.strip()}")
    calls1, usec1 = commandstat(client)
    calls, usec = calls1 - calls0, usec1 - usec0
    return {"wall_s": wall, "cpu_s": cpu, "ticks": len(done.stdout.splitlines()), "calls": calls,
            "server_ms": usec / 1000, "share": usec / 1e6 / wall, "ms_per_call": usec / 1000 / calls if calls else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--server-bin", default=None)
    opts = parser.parse_args()
    binary = default_binary(opts.server_bin)
    with ServerProcess(binary, maxclients=opts.clients + 200, nofile=opts.clients + 300) as server, \
            Crowd("127.0.0.1", server.port) as crowd:
        per = opts.clients // SOURCES
        for i in range(SOURCES):
            crowd.open(per if i < SOURCES - 1 else opts.clients - per * (SOURCES - 1), source=f"127.3.0.{i + 1}",
                       name=f"worker-{i % 5}")
        client = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
        used = int(client.info("clients")["connected_clients"])
        print(f"{binary.label}: {used} clients connected; {platform.processor() or platform.machine()}, "
              f"nproc {os.cpu_count()}, Python {platform.python_version()}")
        print(f"{'run':46} {'ticks':>5} {'CLIENT LISTs':>12} {'ms/call':>8} {'server share':>12} {'watch CPU/tick':>14}")
        startup = run_watch(server.url, ["--count", "1"], client)
        runs = {
            "a. defaults (--interval 2, adaptive budget)": ["--interval", "2"],
            "b. --interval 0.5, adaptive budget": ["--interval", "0.5"],
            "c. --interval 0.5, CLIENT LIST every tick": ["--interval", "0.5", "--clients-every", "0.5"],
        }
        results = {}
        for label, args in runs.items():
            interval = float(args[1])
            count = max(2, int(opts.duration / interval))
            r = run_watch(server.url, args + ["--count", str(count)], client)
            per_tick_ms = max(0.0, r["cpu_s"] - startup["cpu_s"]) / max(1, r["ticks"] - 1) * 1000
            results[label] = r
            print(f"{label:46} {r['ticks']:5.0f} {r['calls']:12.0f} {r['ms_per_call']:8.2f} {r['share']:12.3%} "
                  f"{per_tick_ms:11.1f} ms")
        client.close()
        a, b, c = results.values()
        print(f"start-up (imports, connect, one tick): {startup['cpu_s']:.2f} s CPU")
        print(f"budget vs every-tick baseline at --interval 0.5: share {b['share']:.3%} vs {c['share']:.3%} "
              f"({c['share'] / b['share'] if b['share'] else float('inf'):.1f}x less server time)")
        ok = a["share"] <= 0.01 and b["share"] <= 0.01
        print(("OK" if ok else "OVER BUDGET") + ": CLIENT LIST share <= 1% with the adaptive budget")


if __name__ == "__main__":
    main()
