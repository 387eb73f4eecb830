"""A process-wide cap on open connections to one endpoint, shared by every pool and client that talks to it."""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
import time
import weakref
from collections import Counter
from typing import Any, Callable, Protocol

from connguard.guard.errors import BudgetExceeded

_WAIT_SLICE_S = 0.05  # waiters re-check this often, so slots freed by garbage collection are noticed too

# One checkout waits at most budget_wait_s in all: the pool's wait for room and the connection's wait for a slot
# share this deadline (a ContextVar, so it is per thread and per asyncio task).
DEADLINE: "contextvars.ContextVar[float | None]" = contextvars.ContextVar("connguard_budget_deadline", default=None)



class Shedder(Protocol):
    def shed_idle(self) -> bool:
        """Close one idle pooled connection; True if one was closed."""


class ConnectionBudget:
    """Counts open sockets per holder. Past `cap` a new connection waits up to `wait_s`, then BudgetExceeded."""

    def __init__(self, endpoint: str, cap: int | None, wait_s: float) -> None:
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"budget={cap!r} must be an integer >= 1 (or None for no cap): a budget of {cap} admits no connection at all")
        if isinstance(wait_s, bool) or not isinstance(wait_s, (int, float)) or math.isnan(wait_s) or wait_s < 0:
            raise ValueError(f"budget_wait_s={wait_s!r} must be a number of seconds >= 0")
        self.endpoint = endpoint
        self.cap = cap
        self.wait_s = wait_s
        self._cond = threading.Condition(threading.Lock())
        self._held: dict[int, tuple[weakref.ref[Any], str]] = {}
        self._dead: list[int] = []  # filled by weakref callbacks (any thread, maybe inside GC): processed under the lock
        self._shedders: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._reserved = 0  # slots set aside for connections about to open
        self.waiters = 0
        self.exceeded_total = 0

    # -- bookkeeping -------------------------------------------------------------------------
    def _deadline(self) -> float:
        deadline = DEADLINE.get()
        return deadline if deadline is not None else time.monotonic() + self.wait_s

    def after_fork_in_child(self) -> None:
        """The parent's sockets are not this process's: redis-py reopens its own, so the child starts with an empty
        budget (and a fresh lock, in case another thread held it at fork)."""
        self._cond = threading.Condition(threading.Lock())
        self._held.clear()
        self._dead.clear()
        self._reserved = 0
        self.waiters = 0

    def add_shedder(self, shedder: Shedder) -> None:
        """Pools register so that, under pressure, an idle connection elsewhere can be closed to make room."""
        self._shedders.add(shedder)

    def _reap(self) -> None:
        while self._dead:
            self._held.pop(self._dead.pop(), None)

    def _take(self, conn: object, holder: str) -> bool:
        self._reap()
        key = id(conn)
        if key in self._held:
            return True
        slot = getattr(conn, "_cg_slot", None)
        if slot and slot[0] is self:
            slot.clear()  # claim the slot its pool set aside when it made this connection
            self._reserved -= 1
        elif self.cap is not None and len(self._held) + self._reserved >= self.cap:
            return False
        dead = self._dead
        self._held[key] = (weakref.ref(conn, lambda _r, k=key: dead.append(k)), holder)
        return True

    def try_acquire(self, conn: object, holder: str) -> bool:
        with self._cond:
            return self._take(conn, holder)

    def release(self, conn: object) -> None:
        """Idempotent: a connection that holds no slot is ignored. Also returns a slot reserved for it, unused."""
        with self._cond:
            slot = getattr(conn, "_cg_slot", None)
            if slot and slot[0] is self:
                slot.clear()
                self._reserved -= 1
                self._cond.notify()
            if self._held.pop(id(conn), None) is not None:
                self._cond.notify()

    def full(self) -> bool:
        """A lock-free hint for the pool's hot path; `acquire` is the real gate."""
        return self.cap is not None and len(self._held) + self._reserved >= self.cap

    def reserve(self) -> list[Any] | None:
        """Set a slot aside for a connection a pool is making (the token goes on it as `_cg_slot`); its first
        connect claims it, `release` returns it unused. Checking for room and taking a slot is one step, or
        threads that arrive together all see room, then shed each other's idle sockets to make it."""
        with self._cond:
            self._reap()
            if self.cap is not None and len(self._held) + self._reserved >= self.cap:
                return None
            self._reserved += 1
            return [self]


    def _wait_count(self, delta: int) -> None:
        with self._cond:
            self.waiters += delta

    def wait_for_room(self, has_idle: Callable[[], bool], holder: str, pool: object = None) -> None:
        """Pool-level wait: until the caller's pool has an idle connection to reuse, or a slot frees up.
        Reusing an idle connection beats closing it and opening another (no churn at the server), so the
        waiting pool's own idle connections are never shed here (one returned just now is the one to reuse)."""
        deadline = self._deadline()
        start = deadline - self.wait_s
        self._wait_count(1)
        try:
            while self.full() and not has_idle():
                if self._shed(pool):
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._exceeded(time.monotonic() - start)
                with self._cond:
                    self._reap()
                    self._cond.wait(min(left, 0.005))
        finally:
            self._wait_count(-1)

    async def wait_for_room_async(self, has_idle: Callable[[], bool], pool: object = None) -> None:
        deadline = self._deadline()
        start = deadline - self.wait_s
        self._wait_count(1)
        try:
            while self.full() and not has_idle():
                if self._shed(pool):
                    continue
                if time.monotonic() >= deadline:
                    raise self._exceeded(time.monotonic() - start)
                await asyncio.sleep(0.005)
        finally:
            self._wait_count(-1)

    @property
    def used(self) -> int:
        with self._cond:
            self._reap()
            return len(self._held)

    def holders(self) -> dict[str, int]:
        with self._cond:
            self._reap()
            return dict(Counter(holder for _ref, holder in self._held.values()))

    def _shed(self, spare: object = None) -> bool:
        for shedder in list(self._shedders):
            if shedder is not spare and shedder.shed_idle():
                return True
        return False

    def exceeded(self, waited_s: float) -> BudgetExceeded:
        return self._exceeded(waited_s)

    def _exceeded(self, waited_s: float) -> BudgetExceeded:
        self.exceeded_total += 1
        return BudgetExceeded(self.endpoint, self.cap or 0, waited_s, self.holders())

    # -- acquiring -------------------------------------------------------------------------
    def acquire(self, conn: object, holder: str) -> None:
        """Take a slot for `conn`, waiting up to wait_s. Raises BudgetExceeded naming endpoint and holders."""
        if self.try_acquire(conn, holder):
            return
        deadline = self._deadline()
        start = deadline - self.wait_s
        self._wait_count(1)
        try:
            while True:
                if self._shed() and self.try_acquire(conn, holder):
                    return
                with self._cond:
                    if self._take(conn, holder):
                        return
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, _WAIT_SLICE_S))
        finally:
            self._wait_count(-1)
        raise self._exceeded(time.monotonic() - start)

    async def acquire_async(self, conn: object, holder: str) -> None:
        """The same for asyncio: polls instead of blocking the event loop."""
        if self.try_acquire(conn, holder):
            return
        deadline = self._deadline()
        start = deadline - self.wait_s
        self._wait_count(1)
        try:
            while True:
                if self._shed() and self.try_acquire(conn, holder):
                    return
                if self.try_acquire(conn, holder):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await asyncio.sleep(min(left, _WAIT_SLICE_S / 5))
        finally:
            self._wait_count(-1)
        raise self._exceeded(time.monotonic() - start)
