"""Cluster recovery: plain RedisCluster against the guarded one, on a real 3-node `--cluster-enabled` cluster.

    PYTHONPATH=src python bench/bench_cluster_recovery.py [--rounds 3] [--workers 8] [--full-s 3] [--after-s 2]

Each round, for each client (order alternating): the client serves a key on node A (so its pool holds a live
connection there, as a running app's would), a leak from another host fills A to maxclients, `workers` threads keep
GETting keys on A, then the leak is cleared. Measured at A's own counters (INFO stats, over a monitor connection
opened before the leak): the connection attempts A saw while full from this one process, in the first second (the
workers that all connected before the first refusal came back) and per second after it; and, from the
workers, the recovery: clear -> every worker served again and no command failing any more.

The verdict (issue 23): guarded recovery within 1.5x plain RedisCluster's (median over rounds; never asked below
RECOVERY_FLOOR_S, as both are a few of the workers' 10-30 ms pauses), with at most 1 attempt per second at the full node.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass

import redis
from redis.cluster import RedisCluster

from connguard.guard import guarded_cluster_client
from connguard.guard.registry import REGISTRY
from connguard.lab.crowd import Crowd
from connguard.lab.servers import default_binary
from connguard.lab.topology import ClusterSet

RECOVERY_FACTOR = 1.5
RECOVERY_FLOOR_S = 0.1  # five of the workers' 10-30 ms pauses: below it the ratio measures the pause, not the client
MAX_ATTEMPTS_PER_S = 1.0
LEAK_SOURCE = "127.0.0.15"
MAXCLIENTS = 48


@dataclass(frozen=True)
class Round:
    arm: str
    attempts_per_s: float  # at the full node, from this process, after the first second (its rejected + received)
    first_s_attempts: int  # in the first second: workers that connected before the first refusal came back
    recovery_s: float | None  # clear -> every worker served and no command failing (None: not within after_s)
    ok_full: int


def _stats(node: redis.Redis) -> tuple[int, int, int]:
    info = node.info()
    used = int(info["connected_clients"]) + int(info.get("connected_slaves", 0)) + int(info.get("cluster_connections", 0))
    return used, int(info["rejected_connections"]), int(info["total_connections_received"])


def one_round(arm: str, cluster: ClusterSet, workers: int, full_s: float, after_s: float) -> Round:
    node = cluster.nodes[0]
    monitor = redis.Redis(host="127.0.0.1", port=node.port, single_connection_client=True)
    monitor.ping()
    REGISTRY.reset()
    client = (guarded_cluster_client(cluster.url, leak_threshold_s=None) if arm == "guard"
              else RedisCluster(host="127.0.0.1", port=node.port))
    keys = [k for k in (f"cg:bench:{i}" for i in range(20_000)) if client.get_node_from_key(k).port == node.port][:workers]
    for k in keys:
        client.set(k, "x")  # the pool now holds a live connection to node A
    crowd = Crowd("127.0.0.1", node.port)
    stop = threading.Event()
    cleared: list[float] = []
    served: dict[int, float] = {}
    last_error = [0.0]
    ok = [0]

    def work(n: int) -> None:
        rng = random.Random(n)

        def pause() -> None:
            # 10-30 ms, jittered: a fixed 20 ms lines every worker up into waves that meet the pool at the same
            # instant, which measures the collision, not the client. Requests in a real app arrive independently.
            stop.wait(rng.uniform(0.01, 0.03))

        while not stop.is_set():
            try:
                client.get(keys[n])
            except (redis.RedisError, IndexError):
                last_error[0] = time.monotonic()
                pause()
                continue
            ok[0] += 1
            if cleared and n not in served:
                served[n] = time.monotonic() - cleared[0]
            pause()

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(workers)]
    try:
        used, _, _ = _stats(monitor)
        leak = crowd.open(max(0, MAXCLIENTS - used), source=LEAK_SOURCE)
        _, rejected0, received0 = _stats(monitor)
        for t in threads:
            t.start()
        time.sleep(1.0)
        _, rejected_1s, received_1s = _stats(monitor)
        time.sleep(full_s - 1.0)
        _, rejected1, received1 = _stats(monitor)
        ok_full = ok[0]
        crowd.close_group(leak)
        cleared.append(time.monotonic())
        time.sleep(after_s)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        crowd.close()
        client.close()
        monitor.close()
    first = (rejected_1s - rejected0) + (received_1s - received0)
    steady = (rejected1 - rejected_1s) + (received1 - received_1s)
    recovery = None
    if len(served) == workers:
        recovery = max(max(served.values()), max(0.0, last_error[0] - cleared[0]))
    return Round(arm, steady / (full_s - 1.0), first, recovery, ok_full)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--full-s", type=float, default=4.0)
    parser.add_argument("--after-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.getLogger("connguard.guard").setLevel(logging.ERROR)
    binary = default_binary()
    rounds: list[Round] = []
    with ClusterSet(binary, primaries=3, maxclients=MAXCLIENTS) as cluster:
        for i in range(args.rounds):
            for arm in ("plain", "guard") if i % 2 == 0 else ("guard", "plain"):
                r = one_round(arm, cluster, args.workers, args.full_s, args.after_s)
                rounds.append(r)
                rec = "never" if r.recovery_s is None else f"{r.recovery_s:.3f}s"
                print(f"round {i + 1} {arm:5}: {r.first_s_attempts:5} attempts in the first second, then "
                      f"{r.attempts_per_s:7.1f}/s at the full node, "
                      f"{r.ok_full} ok while full, recovered {rec}")
    print(f"{binary.label}, 3-node cluster, maxclients {MAXCLIENTS}, {args.workers} workers, full {args.full_s:g}s, "
          f"redis-py {redis.__version__}; median of {args.rounds} rounds, order alternating")

    def med(arm: str, attr: str) -> float | None:
        values = [getattr(r, attr) for r in rounds if r.arm == arm]
        if any(v is None for v in values):
            return None
        return statistics.median(values)

    plain_s, guard_s = med("plain", "recovery_s"), med("guard", "recovery_s")
    plain_rate, guard_rate = med("plain", "attempts_per_s"), med("guard", "attempts_per_s")
    print(f"plain RedisCluster: {plain_rate:.1f} attempts/s at the full node, recovery "
          f"{'never' if plain_s is None else f'{plain_s:.3f}s'}")
    print(f"guarded cluster:    {guard_rate:.2f} attempts/s at the full node, recovery "
          f"{'never' if guard_s is None else f'{guard_s:.3f}s'}")
    if guard_s is None or plain_s is None:
        print("no verdict: a client did not recover within --after-s")
        return 1
    limit = max(RECOVERY_FLOOR_S, RECOVERY_FACTOR * plain_s)
    ratio = guard_s / plain_s if plain_s else float("inf")
    ok = guard_s <= limit and guard_rate <= MAX_ATTEMPTS_PER_S
    print(f"recovery guarded/plain: {ratio:.2f}x (limit {limit:.2f}s = max({RECOVERY_FLOOR_S}s, "
          f"{RECOVERY_FACTOR}x plain)); attempts at the full node {guard_rate:.2f}/s (limit {MAX_ATTEMPTS_PER_S:g}/s) -> "
          f"{'within' if ok else 'OVER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
