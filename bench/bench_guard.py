"""Per-command throughput: plain redis-py against the guarded pool, same throwaway server, one run.

    python bench/bench_guard.py [--rounds 201] [--ops 300] [--server-bin PATH]

Each round runs a short block of GETs on each client, in alternating order, so bursts of load from elsewhere on
the machine hit both sides of a round alike. The verdict is the median of the per-round ratios (guarded ops/s over
plain ops/s); the guard's budget is 3% (ratio >= 0.97). A second plain client measured the same way (A/A) shows
the noise floor of this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import redis

from connguard.guard import guarded_client
from connguard.lab.servers import ServerProcess, default_binary

BUDGET = 0.97


def ops_per_s(client: redis.Redis, ops: int) -> float:
    get = client.get
    start = time.perf_counter()
    for _ in range(ops):
        get("bench:key")
    return ops / (time.perf_counter() - start)


def run(rounds: int, ops: int, server_bin: str | None) -> float:
    with ServerProcess(default_binary(server_bin)) as server:
        plain = redis.Redis(host="127.0.0.1", port=server.port)
        plain_b = redis.Redis(host="127.0.0.1", port=server.port)
        guarded = guarded_client(server.url, name="bench")  # default settings: leak detection on
        plain.set("bench:key", "x" * 32)
        clients = {"plain": plain, "plain_b": plain_b, "guarded": guarded}
        for client in clients.values():  # warm up: connect, fill caches
            ops_per_s(client, ops * 3)
        rates: dict[str, list[float]] = {name: [] for name in clients}
        names = list(clients)
        for i in range(rounds):
            for name in names if i % 2 == 0 else reversed(names):
                rates[name].append(ops_per_s(clients[name], ops))
        ratios = [g / p for g, p in zip(rates["guarded"], rates["plain"])]
        noise = [b / p for b, p in zip(rates["plain_b"], rates["plain"])]
        ratio = statistics.median(ratios)
        print(f"server: {server.binary.label}; {rounds} rounds x {ops} GETs per client, order alternating")
        print(f"plain redis-py {redis.__version__}: median {statistics.median(rates['plain']):,.0f} ops/s")
        print(f"guarded pool:          median {statistics.median(rates['guarded']):,.0f} ops/s")
        print(f"noise floor (plain vs plain, A/A): median ratio {statistics.median(noise):.3f}")
        print(f"ratio guarded/plain: median {ratio:.3f}; overhead {100 * (1 - ratio):.1f}% -> "
              f"{'within' if ratio >= BUDGET else 'OVER'} the 3% budget")
        for client in clients.values():
            client.close()
        return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=201)
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--server-bin", default=None)
    args = parser.parse_args(argv)
    return 0 if run(args.rounds, args.ops, args.server_bin) >= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
