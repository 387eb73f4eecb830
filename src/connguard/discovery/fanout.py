"""Run one function over many items on a bounded thread pool, results in input order.

Threads, not asyncio: every per-target step (connect, INFO, CLIENT LIST, /proc) is blocking redis-py or
file I/O, and the work is mostly waiting, so a pool of `concurrency` threads overlaps it on any core count."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CONCURRENCY = 16
MAX_CONCURRENCY = 512  # each worker holds one connection and a thread; more only thrashes


def fan_out(items: Sequence[T], work: Callable[[T], R], *, concurrency: int = DEFAULT_CONCURRENCY) -> list[R]:
    """`[work(i) for i in items]` with at most `concurrency` running at once. `work` must not raise:
    each item's failure belongs in its own result, so one bad target never stops the others."""
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY} (got {concurrency})")
    if concurrency == 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix="connguard-fleet") as pool:
        return list(pool.map(work, items))
