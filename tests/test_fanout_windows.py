"""discovery.fanout: a target's wait between samples holds no worker, so windows overlap (no timing asserted)."""

from __future__ import annotations

import threading

import pytest

from connguard.discovery.fanout import fan_out, fan_out_pausing


def test_waiting_targets_hold_no_worker_and_io_stays_bounded() -> None:
    items, concurrency = list(range(12)), 3
    lock = threading.Lock()
    state = {"io": 0, "max_io": 0}
    reached = set()
    everyone_waiting = threading.Event()

    def work(item: int, pause) -> bool:  # type: ignore[no-untyped-def]
        with lock:  # "I/O": at most `concurrency` of these at once
            state["io"] += 1
            state["max_io"] = max(state["max_io"], state["io"])
        threading.Event().wait(0.005)  # the I/O itself, with the GIL released: others could start theirs now
        with lock:
            state["io"] -= 1
            reached.add(item)
            if len(reached) == len(items):
                everyone_waiting.set()
        # The window's wait: every target gets to wait at the same time, which a worker-holding sleep would forbid
        # (only `concurrency` could be here; the rest would queue behind them until their waits gave up).
        for _ in range(400):
            if everyone_waiting.is_set():
                return True
            pause(0.01)
        return False

    results = fan_out_pausing(items, work, concurrency=concurrency)
    assert results == [True] * len(items)
    assert state["max_io"] <= concurrency


def test_results_keep_input_order_and_plain_fan_out_is_unchanged() -> None:
    assert fan_out(list(range(20)), lambda i: i * i, concurrency=4) == [i * i for i in range(20)]
    assert fan_out_pausing(["a"], lambda item, pause: (pause(0), item)[1]) == ["a"]
    with pytest.raises(ValueError):
        fan_out([1, 2], lambda i: i, concurrency=0)
