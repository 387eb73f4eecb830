"""Per-command throughput: plain redis-py against the guarded pool, sync and asyncio, same throwaway server, one run.

    python bench/bench_guard.py [--rounds 201] [--ops 300] [--server-bin PATH] [--skip-async]

Each round runs a short block of GETs on each client, in alternating order, so bursts of load from elsewhere on
the machine hit both sides of a round alike. The verdict is the median of the per-round ratios (guarded ops/s over
plain ops/s); the guard's budget is 3% (ratio >= 0.97), sync and asyncio each. A second plain client measured the
same way (A/A) shows the noise floor of this machine. Last, the guard's own cost with no network in the way: a
pool checkout + release, plain against guarded (fastest of many blocks, so a busy machine shows less), as a share
of one plain GET.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any, Callable

import redis
import redis.asyncio as aioredis

from connguard.guard import GuardedConnectionPool, guarded_async_client, guarded_client
from connguard.lab.servers import ServerProcess, default_binary

BUDGET = 0.97


def ops_per_s(client: redis.Redis, ops: int) -> float:
    get = client.get
    start = time.perf_counter()
    for _ in range(ops):
        get("bench:key")
    return ops / (time.perf_counter() - start)


async def ops_per_s_async(client: aioredis.Redis, ops: int) -> float:
    get = client.get
    start = time.perf_counter()
    for _ in range(ops):
        await get("bench:key")
    return ops / (time.perf_counter() - start)


def alternate(rounds: int, clients: dict[str, Any], measure: Callable[[Any], float]) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in clients}
    names = list(clients)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            rates[name].append(measure(clients[name]))
    return rates


def report(kind: str, rates: dict[str, list[float]]) -> float:
    ratio = statistics.median(g / p for g, p in zip(rates["guarded"], rates["plain"]))
    noise = statistics.median(b / p for b, p in zip(rates["plain_b"], rates["plain"]))
    print(f"{kind}: plain {statistics.median(rates['plain']):,.0f} ops/s, guarded {statistics.median(rates['guarded']):,.0f} "
          f"ops/s; A/A noise floor {noise:.3f}; ratio guarded/plain: median {ratio:.3f}, overhead "
          f"{100 * (1 - ratio):.1f}% -> {'within' if ratio >= BUDGET else 'OVER'} the 3% budget")
    return ratio


def sync_rounds(url: str, port: int, rounds: int, ops: int) -> float:
    clients = {"plain": redis.Redis(host="127.0.0.1", port=port), "plain_b": redis.Redis(host="127.0.0.1", port=port),
               "guarded": guarded_client(url, name="bench")}  # default settings: leak detection on
    for client in clients.values():  # warm up: connect, fill caches
        ops_per_s(client, ops * 3)
    ratio = report("sync   ", alternate(rounds, clients, lambda c: ops_per_s(c, ops)))
    for client in clients.values():
        client.close()
    return ratio


async def async_rounds(url: str, port: int, rounds: int, ops: int) -> float:
    clients = {"plain": aioredis.Redis(host="127.0.0.1", port=port),
               "plain_b": aioredis.Redis(host="127.0.0.1", port=port),
               "guarded": guarded_async_client(url, name="bench-async")}
    for client in clients.values():
        await ops_per_s_async(client, ops * 3)
    rates: dict[str, list[float]] = {name: [] for name in clients}
    names = list(clients)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            rates[name].append(await ops_per_s_async(clients[name], ops))
    ratio = report("asyncio", rates)
    for client in clients.values():
        await client.aclose()
    return ratio


def checkout_cost(port: int, blocks: int = 60, n: int = 3000) -> None:
    """The guard's own per-command work (checkout + release), without the network's noise."""
    pools = {"plain": redis.ConnectionPool(host="127.0.0.1", port=port),
             "guarded": GuardedConnectionPool(host="127.0.0.1", port=port, name="bench-checkout")}
    best: dict[str, float] = {}
    for _ in range(blocks):
        for name, pool in pools.items():
            get, put = pool.get_connection, pool.release
            start = time.perf_counter()
            for _ in range(n):
                put(get())
            best[name] = min(best.get(name, float("inf")), (time.perf_counter() - start) / n)
    client = redis.Redis(connection_pool=pools["plain"])
    get_s = min(1 / ops_per_s(client, 500) for _ in range(20))
    extra = best["guarded"] - best["plain"]
    print(f"checkout + release: plain {best['plain'] * 1e6:.2f} us, guarded {best['guarded'] * 1e6:.2f} us: the guard "
          f"adds {extra * 1e6:.2f} us, {100 * extra / get_s:.1f}% of a plain GET ({get_s * 1e6:.0f} us; fastest blocks)")
    for pool in pools.values():
        pool.disconnect()


def run(rounds: int, ops: int, server_bin: str | None, with_async: bool) -> float:
    with ServerProcess(default_binary(server_bin)) as server:
        redis.Redis(host="127.0.0.1", port=server.port).set("bench:key", "x" * 32)
        print(f"server: {server.binary.label}; redis-py {redis.__version__}; {rounds} rounds x {ops} GETs per client, "
              "order alternating")
        ratios = [sync_rounds(server.url, server.port, rounds, ops)]
        if with_async:
            ratios.append(asyncio.run(async_rounds(server.url, server.port, rounds, ops)))
        checkout_cost(server.port)
        return min(ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=201)
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--server-bin", default=None)
    parser.add_argument("--skip-async", action="store_true")
    args = parser.parse_args(argv)
    return 0 if run(args.rounds, args.ops, args.server_bin, not args.skip_async) >= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
