"""A process-wide cap on the connections every pool in the process holds to one endpoint.

A slot belongs to a connection *object* from the moment a pool makes it until the pool lets it go (shed, reset,
dropped, garbage collected), whether or not its socket is open at the moment. So a pool's in-use plus idle never
exceeds the budget, and a socket the server dropped (CLIENT KILL, `timeout`) is reopened on its own slot: nothing
has to be given back and taken again, so nothing can be lost or double-counted in between.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import math
import threading
import time
import weakref
from collections import Counter
from typing import Any, Callable, Protocol

from connguard.guard.errors import BudgetExceeded

_WAIT_SLICE_S = 0.05  # waiters re-check this often, so slots freed by garbage collection are noticed too
_ASYNC_SLICE_S = 0.005  # asyncio waiters poll (a thread Condition would block the event loop)

# One checkout waits at most budget_wait_s in all (a ContextVar, so it is per thread and per asyncio task).
DEADLINE: "contextvars.ContextVar[float | None]" = contextvars.ContextVar("connguard_budget_deadline", default=None)


class Shedder(Protocol):
    def _cg_shed_one(self) -> bool:
        """Let go of one idle pooled connection (closing its socket); True if one was let go."""


class ConnectionBudget:
    """Counts slots per holder. Past `cap`, a pool that needs a new connection waits up to `wait_s` for room."""

    def __init__(self, endpoint: str, cap: int | None, wait_s: float) -> None:
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"budget={cap!r} must be an integer >= 1 (or None for no cap): a budget of {cap} admits no connection at all")
        if isinstance(wait_s, bool) or not isinstance(wait_s, (int, float)) or math.isnan(wait_s) or wait_s < 0:
            raise ValueError(f"budget_wait_s={wait_s!r} must be a number of seconds >= 0")
        self.endpoint = endpoint
        self.cap = cap
        self.wait_s = wait_s
        self._cond = threading.Condition(threading.Lock())
        self._serial = itertools.count(1)  # slot keys: never reused, unlike id(), so a late weakref callback is harmless
        self._held: dict[int, tuple[weakref.ref[Any], str]] = {}
        self._dead: list[int] = []  # filled by weakref callbacks (any thread, maybe inside GC): processed under the lock
        self._shedders: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.waiters = 0
        self.exceeded_total = 0

    # -- bookkeeping (the one place that decides) ------------------------------------------------
    def _reap(self) -> None:
        while self._dead:
            self._held.pop(self._dead.pop(), None)

    def take(self, conn: Any, holder: str) -> bool:
        """Give `conn` a slot if there is room (never waits). The slot is freed by `release` or when `conn` dies."""
        with self._cond:
            self._reap()
            if self.cap is not None and len(self._held) >= self.cap:
                return False
            key = next(self._serial)
            dead = self._dead
            self._held[key] = (weakref.ref(conn, lambda _r, k=key: dead.append(k)), holder)
        conn._cg_slot = (self, key)
        return True

    def release(self, conn: Any) -> None:
        """Idempotent: a connection that holds no slot of this budget is ignored."""
        slot = getattr(conn, "_cg_slot", None)
        if not slot or slot[0] is not self:
            return
        conn._cg_slot = None
        with self._cond:
            if self._held.pop(slot[1], None) is not None:
                self._cond.notify()

    def wake(self) -> None:
        """A pool got a connection back: its waiter may reuse it now rather than at the end of a wait slice."""
        with self._cond:
            self._cond.notify_all()

    def full(self) -> bool:
        """A lock-free hint for the pools' hot path; `take` is the real gate."""
        return self.cap is not None and len(self._held) - len(self._dead) >= self.cap

    def after_fork_in_child(self) -> None:
        """The parent's connections are not this process's: the child starts with an empty budget and a fresh lock."""
        self._cond = threading.Condition(threading.Lock())
        self._held.clear()
        self._dead.clear()
        self.waiters = 0

    def add_shedder(self, shedder: Shedder) -> None:
        """Pools register so that, under pressure, an idle connection of one can make room for another."""
        self._shedders.add(shedder)

    @property
    def used(self) -> int:
        with self._cond:
            self._reap()
            return len(self._held)

    def holders(self) -> dict[str, int]:
        with self._cond:
            self._reap()
            return dict(Counter(holder for _ref, holder in self._held.values()))

    def exceeded(self, waited_s: float) -> BudgetExceeded:
        self.exceeded_total += 1
        with self._cond:
            self._reap()
            used = len(self._held)
        return BudgetExceeded(self.endpoint, self.cap or 0, waited_s, self.holders(), used)

    def _shed(self, spare: object) -> bool:
        for shedder in list(self._shedders):
            if shedder is not spare and shedder._cg_shed_one():
                return True
        return False

    # -- waiting: one decision, a thread wait and an asyncio wait ------------------------------------
    def _next_wait(self, has_idle: Callable[[], bool], pool: object, deadline: float, start: float) -> float | None:
        """None when the pool should try again (room, or an idle connection of its own to reuse); else how long to
        wait. BudgetExceeded at the deadline. Reusing an idle connection beats making room (no churn at the server),
        so the waiting pool's own idle connections are never shed."""
        if not self.full() or has_idle() or self._shed(pool):
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise self.exceeded(time.monotonic() - start)
        return left

    def _window(self) -> tuple[float, float]:
        deadline = DEADLINE.get()
        if deadline is None:
            deadline = time.monotonic() + self.wait_s
        return deadline, deadline - self.wait_s

    def _count_waiter(self, delta: int) -> None:
        with self._cond:
            self.waiters += delta

    def wait_for_room(self, has_idle: Callable[[], bool], pool: object = None) -> None:
        """Until the pool has an idle connection to reuse or the budget a free slot (BudgetExceeded at the deadline)."""
        deadline, start = self._window()
        self._count_waiter(1)
        try:
            while (left := self._next_wait(has_idle, pool, deadline, start)) is not None:
                with self._cond:
                    self._reap()
                    if self.full():
                        self._cond.wait(min(left, _WAIT_SLICE_S))
        finally:
            self._count_waiter(-1)

    async def wait_for_room_async(self, has_idle: Callable[[], bool], pool: object = None) -> None:
        deadline, start = self._window()
        self._count_waiter(1)
        try:
            while (left := self._next_wait(has_idle, pool, deadline, start)) is not None:
                await asyncio.sleep(min(left, _ASYNC_SLICE_S))
        finally:
            self._count_waiter(-1)
