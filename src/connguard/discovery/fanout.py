"""Run one function over many items on a bounded set of workers, results in input order.

Threads, not asyncio: every per-target step (connect, INFO, CLIENT LIST, /proc) is blocking redis-py or
file I/O, and the work is mostly waiting, so `concurrency` workers overlap it on any core count.

A worker is a slot for I/O, not a thread that also waits out a doctor's window: `fan_out` hands `work` a `pause`
that gives the slot back for the wait and takes one again after it. So the interval between a target's samples
occupies no worker, and 100 targets with a 1 s window take about one window, not 100 / concurrency of them."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

from connguard.settings import DEFAULT_CONCURRENCY, MAX_CONCURRENCY  # noqa: F401 (their home; re-exported)

T = TypeVar("T")
R = TypeVar("R")
Pause = Callable[[float], None]

MAX_WAITING = 1024  # targets in flight at once (each a thread, mostly asleep in a pause); more start as these end


def fan_out(items: Sequence[T], work: Callable[[T], R], *, concurrency: int = DEFAULT_CONCURRENCY) -> list[R]:
    """`[work(i) for i in items]` with at most `concurrency` running at once. `work` must not raise:
    each item's failure belongs in its own result, so one bad target never stops the others."""
    return fan_out_pausing(items, lambda item, _pause: work(item), concurrency=concurrency)


def fan_out_pausing(items: Sequence[T], work: Callable[[T, Pause], R], *,
                    concurrency: int = DEFAULT_CONCURRENCY) -> list[R]:
    """`[work(i, pause) for i in items]` with at most `concurrency` doing I/O at once. `work` waits only through
    `pause(seconds)`, which frees its worker for the wait: a doctor's window interval is a timer, not a worker."""
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY} (got {concurrency})")
    if len(items) <= 1:
        return [work(item, time.sleep) for item in items]
    slots = threading.BoundedSemaphore(concurrency)

    def pause(seconds: float) -> None:
        slots.release()
        try:
            time.sleep(seconds)
        finally:
            slots.acquire()  # the next sample waits for a free worker, as any I/O does

    def run(item: T) -> R:
        with slots:
            return work(item, pause)

    threads = min(len(items), MAX_WAITING)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="connguard-fleet") as pool:
        return list(pool.map(run, items))
