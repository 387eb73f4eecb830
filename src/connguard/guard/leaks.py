"""Leak detection in the spirit of HikariCP's leakDetectionThreshold: who checked out a connection held too long."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import traceback
import weakref
from types import CodeType, FrameType
from typing import Any, Callable, Iterable

import redis

log = logging.getLogger("connguard.guard.leaks")

# Frames from these files are plumbing; the checkout site is the first frame outside them.
_INTERNAL_PREFIXES = (os.path.dirname(redis.__file__) + os.sep, os.path.dirname(__file__) + os.sep)
_internal_code: dict[CodeType, bool] = {}

# A checkout is recorded on the connection itself as `conn._cg_out`, a tuple:
#   (started monotonic, caller frame, caller's f_lasti at checkout, owner: thread ident or asyncio Task)
# written and cleared by the pools themselves (guard/pool.py, guard/aio.py: the hot path, so no call here). Only the
# direct caller's frame is kept: walking further up at checkout would make CPython build every outer frame object
# on every command (measured at several % of a GET). The walk happens at report time.
# The caller's place is kept as its bytecode offset: reading f_lineno scans the line table on every command.
STARTED, CALLER, LASTI, OWNER = range(4)


def line_of(code: CodeType, lasti: int) -> int | None:
    """The source line of the instruction at byte offset `lasti` (what f_lineno would have said then)."""
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line
    return None


def _user_frame(frame: FrameType | None) -> FrameType | None:
    while frame is not None:
        code = frame.f_code
        internal = _internal_code.get(code)
        if internal is None:
            internal = _internal_code[code] = code.co_filename.startswith(_INTERNAL_PREFIXES)
        if not internal:
            return frame
        frame = frame.f_back
    return None


def _owner_name(owner: Any) -> str:
    if owner is None:
        return "no task"  # asyncio.current_task() outside a task (a callback run by the loop)
    if isinstance(owner, int):
        thread = next((t for t in threading.enumerate() if t.ident == owner), None)
        return f"thread {thread.name if thread else owner}"
    get_name = getattr(owner, "get_name", None)
    return f"task {get_name()}" if get_name else str(owner)


class LeakTracker:
    """One per pool. The pool records checkouts; the process watchdog calls `scan`, which reports each leak once."""

    def __init__(
        self, endpoint: str, pool: str, threshold_s: float | None, include_pubsub: bool = False,
        in_use: Callable[[], Iterable[Any]] = tuple,
    ) -> None:
        if threshold_s is not None and not threshold_s > 0:
            raise ValueError(f"leak_threshold_s={threshold_s} must be > 0 (or None to turn leak detection off)")
        self.endpoint = endpoint
        self.pool = pool
        self.threshold_s = threshold_s
        self.include_pubsub = include_pubsub  # subscribers hold their connection on purpose
        self._in_use = in_use
        self.reported: set[int] = set()  # id(conn) of connections reported and not yet returned
        self.reported_total = 0
        if threshold_s is not None:
            WATCHDOG.register(self)

    def report_return(self, conn: Any, out: tuple[Any, ...] | None) -> None:
        self.reported.discard(id(conn))
        if out is None:
            return
        log.info(
            "previously reported connection to %s from pool %s was returned after %.1fs by %s (%s)",
            self.endpoint, self.pool, time.monotonic() - out[STARTED], _owner_name(out[OWNER]), _site(out),
        )

    @property
    def suspected(self) -> int:
        """Connections out longer than the threshold right now (reported ones not yet returned)."""
        return len(self.reported)

    def scan(self, now: float) -> None:
        threshold = self.threshold_s
        if threshold is None:
            return
        in_use = list(self._in_use())
        if self.reported:
            # A reported connection that left without release() (pool reset, garbage collection) is no longer a
            # suspect; and its id may be reused by a new connection, which must not inherit the "already reported".
            self.reported.intersection_update(id(c) for c in in_use if getattr(c, "_cg_out", None) is not None)
        for conn in in_use:
            out = getattr(conn, "_cg_out", None)
            if out is None or now - out[STARTED] < threshold or id(conn) in self.reported:
                continue
            if not self.include_pubsub and _is_dedicated(out[CALLER]):
                continue
            self.reported.add(id(conn))
            self.reported_total += 1
            log.warning(
                "possible connection leak: connection to %s from pool %s held for %.1fs (leak_threshold_s=%g) by %s; "
                "checked out in %s. Stack at checkout (most recent call last):\n%s",
                self.endpoint, self.pool, now - out[STARTED], threshold, _owner_name(out[OWNER]), _site(out), _stack(out),
            )


# Checkouts that hold a connection for the life of an object on purpose (redis-py sync and asyncio): a subscriber,
# MONITOR, and `Redis(single_connection_client=True)`. Not leaks unless leak_include_pubsub=True.
_DEDICATED_PREFIXES = ("PubSub.", "Monitor.")
_DEDICATED = frozenset({"Redis.__init__", "Redis.initialize"})


def _is_dedicated(frame: FrameType) -> bool:
    name = frame.f_code.co_qualname
    return name in _DEDICATED or name.startswith(_DEDICATED_PREFIXES)



def _frames(out: tuple[Any, ...]) -> list[tuple[FrameType, int]]:
    """(frame, line) from the checkout caller outwards. The caller's line is the one at checkout; frames further
    out show the line they are on now, which is the checkout line too while they are still inside that call."""
    caller: FrameType = out[CALLER]
    frames = [(caller, line_of(caller.f_code, out[LASTI]) or caller.f_lineno)]
    outer = caller.f_back
    while outer is not None and len(frames) < 40:
        frames.append((outer, outer.f_lineno))
        outer = outer.f_back
    return frames


def _site(out: tuple[Any, ...]) -> str:
    user = _user_frame(out[CALLER])
    for frame, line in _frames(out):
        if frame is user or user is None:
            return f"{frame.f_code.co_name} ({frame.f_code.co_filename}:{line})"
    return "an unknown place"


def _stack(out: tuple[Any, ...]) -> str:
    frames = _frames(out)
    frames.reverse()
    return "".join(traceback.format_list(traceback.StackSummary.extract(iter(frames))))


class _Watchdog:
    """One daemon thread per process scans every tracker, so a leak is reported even if the app does nothing else."""

    def __init__(self) -> None:
        self._trackers: "weakref.WeakSet[LeakTracker]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.interval_s = 1.0

    def register(self, tracker: LeakTracker) -> None:
        with self._lock:
            self._trackers.add(tracker)
            # Look often enough that a report comes at most a quarter threshold late.
            self.interval_s = min(self.interval_s, max(0.05, (tracker.threshold_s or 1.0) / 4))
            if self._stop.is_set():
                return  # the interpreter is shutting down
            if self._thread is None or not self._thread.is_alive():
                # A daemon thread: it never keeps the interpreter alive.
                self._thread = threading.Thread(target=self._run, name="connguard-leak-watchdog", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """At exit, before logging shuts its handlers: a report written into closed handlers is a traceback."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            for tracker in list(self._trackers):
                try:
                    tracker.scan(now)
                except Exception:  # never let one bad record kill the watchdog
                    log.exception("leak scan failed")

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None  # threads do not survive fork; start one again if anything is tracked
        trackers = list(self._trackers)
        if trackers:
            self.register(trackers[0])


WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=WATCHDOG._after_fork)
atexit.register(WATCHDOG.stop)  # registered after logging's own, so it runs before logging.shutdown
