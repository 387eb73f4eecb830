"""Per-command throughput: plain redis-py against the guarded pool, sync and asyncio, same throwaway server, one run.

    python bench/bench_guard.py [--rounds 300] [--ops 300] [--epochs 10] [--server-bin PATH] [--skip-async]

Each round runs a short block of GETs on each client. The order rotates through every permutation of the clients,
so each sits first, middle and last equally often (a fixed middle seat measured 2-3% slow on its own), and bursts
of load from elsewhere on the machine hit every side of a round alike. The verdict is the median of the per-round ratios (guarded ops/s over
plain ops/s); the guard's budget is 3% (ratio >= 0.97), sync and asyncio each. A second plain client measured the
same way (A/A) shows the noise floor of this machine. Last, the guard's own cost with no network in the way: a
pool checkout + release, plain against guarded (fastest of many blocks, so a busy machine shows less), as a share
of one plain GET.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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


def orders(clients: dict[str, Any], rounds: int) -> list[tuple[str, ...]]:
    """The clients' order in each round: every permutation in turn."""
    permutations = list(itertools.permutations(clients))
    return [permutations[i % len(permutations)] for i in range(rounds)]


def alternate(rounds: int, clients: dict[str, Any], measure: Callable[[Any], float]) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in clients}
    for order in orders(clients, rounds):
        for name in order:
            rates[name].append(measure(clients[name]))
    return rates


def report(kind: str, rates: dict[str, list[float]]) -> float:
    ratio = statistics.median(g / p for g, p in zip(rates["guarded"], rates["plain"]))
    noise = statistics.median(b / p for b, p in zip(rates["plain_b"], rates["plain"]))
    print(f"{kind}: plain {statistics.median(rates['plain']):,.0f} ops/s, guarded {statistics.median(rates['guarded']):,.0f} "
          f"ops/s; A/A noise floor {noise:.3f}; ratio guarded/plain: median {ratio:.3f}, overhead "
          f"{100 * (1 - ratio):.1f}% -> {'within' if ratio >= BUDGET else 'OVER'} the 3% budget")
    return ratio


def sync_clients(url: str, port: int, epoch: int) -> dict[str, Any]:
    made = {"plain": lambda: redis.Redis(host="127.0.0.1", port=port),
            "plain_b": lambda: redis.Redis(host="127.0.0.1", port=port),
            "guarded": lambda: guarded_client(url, name=f"bench-{epoch}")}  # default settings: leak detection on
    return made_in_turn(made, epoch)


def async_clients(url: str, port: int, epoch: int) -> dict[str, Any]:
    made = {"plain": lambda: aioredis.Redis(host="127.0.0.1", port=port),
            "plain_b": lambda: aioredis.Redis(host="127.0.0.1", port=port),
            "guarded": lambda: guarded_async_client(url, name=f"bench-async-{epoch}")}
    return made_in_turn(made, epoch)


def made_in_turn(made: dict[str, Callable[[], Any]], epoch: int) -> dict[str, Any]:
    """Fresh clients, made in a different order each epoch. Where an object lands in memory moves a client's speed
    by 1-2% for the life of the process (two identical plain clients differed that much): new objects each epoch
    average that out instead of pinning it on one side."""
    names = list(made)
    names = names[epoch % len(names):] + names[:epoch % len(names)]
    return {name: made[name]() for name in names}


def sync_rounds(url: str, port: int, rounds: int, ops: int, epochs: int) -> float:
    rates: dict[str, list[float]] = {"plain": [], "plain_b": [], "guarded": []}
    for epoch in range(epochs):
        clients = sync_clients(url, port, epoch)
        for client in clients.values():  # warm up: connect, fill caches
            ops_per_s(client, ops * 3)
        for name, got in alternate(max(6, rounds // epochs), clients, lambda c: ops_per_s(c, ops)).items():
            rates[name] += got
        for client in clients.values():
            client.close()
    return report("sync   ", rates)


async def async_rounds(url: str, port: int, rounds: int, ops: int, epochs: int) -> float:
    rates: dict[str, list[float]] = {"plain": [], "plain_b": [], "guarded": []}
    for epoch in range(epochs):
        clients = async_clients(url, port, epoch)
        for client in clients.values():
            await ops_per_s_async(client, ops * 3)
        for order in orders(clients, max(6, rounds // epochs)):
            for name in order:
                rates[name].append(await ops_per_s_async(clients[name], ops))
        for client in clients.values():
            await client.aclose()
    return report("asyncio", rates)


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


def run(rounds: int, ops: int, server_bin: str | None, with_async: bool, epochs: int) -> float:
    with ServerProcess(default_binary(server_bin)) as server:
        redis.Redis(host="127.0.0.1", port=server.port).set("bench:key", "x" * 32)
        print(f"server: {server.binary.label}; redis-py {redis.__version__}; {rounds} rounds x {ops} GETs per client, "
              f"order rotating, fresh clients in each of {epochs} epochs")
        ratios = [sync_rounds(server.url, server.port, rounds, ops, epochs)]
        if with_async:
            ratios.append(asyncio.run(async_rounds(server.url, server.port, rounds, ops, epochs)))
        checkout_cost(server.port)
        return min(ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--server-bin", default=None)
    parser.add_argument("--epochs", type=int, default=10, help="fresh clients this many times (default 10)")
    parser.add_argument("--skip-async", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.ops < 1 or args.epochs < 1:
        parser.error("--rounds, --ops and --epochs must be >= 1")
    return 0 if run(args.rounds, args.ops, args.server_bin, not args.skip_async, args.epochs) >= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
