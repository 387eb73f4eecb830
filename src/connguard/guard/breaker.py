"""A circuit breaker for opening connections to one endpoint: fail fast while open, one probe when half-open."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

from connguard.guard.errors import CircuitOpenError, CircuitOpenServerFull

log = logging.getLogger("connguard.guard")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
StateListener = Callable[["StateChange"], None]


@dataclass(frozen=True)
class StateChange:
    """One transition, as handed to listeners and logged."""

    endpoint: str
    old: str
    new: str
    reason: str
    at: float  # time.monotonic()


# The longest open period is the slowest the guard can notice a server that has room again. Measured with
# `connguard lab storm` (docs/storm.json): at 3x the guard served its workers 3.4-3.6 s after a leak cleared against
# ~0.9 s for redis-py's defaults; at 1.5x the probe gap stays under ~1.9 s while the full server still sees one probe
# per ~1.5 s instead of redis-py's ~45 attempts a second.
MAX_RESET_FACTOR = 1.5


@dataclass(frozen=True)
class BreakerSettings:
    """When to open and how long to stay open. Validated at construction."""

    failure_threshold: int = 5  # consecutive connect failures (timeouts, resets, refused sockets)
    refusal_threshold: int = 1  # consecutive max-clients refusals: one is already unambiguous
    reset_timeout_s: float = 1.0  # first open period; doubles after each failed probe
    max_reset_timeout_s: float | None = None  # ...up to this (default 1.5 x reset_timeout_s): see MAX_RESET_FACTOR
    reset_jitter: float = 0.25  # each open period is stretched by up to this fraction, so processes do not probe in step
    probe_timeout_s: float = 30.0  # a probe that never reports back is presumed lost after this

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "refusal_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1: the breaker cannot open after fewer than one failure")
        if not self.reset_timeout_s > 0:
            raise ValueError(f"reset_timeout_s={self.reset_timeout_s} must be > 0: a breaker that reopens at once is no breaker")
        if self.reset_timeout_s == float("inf") or self.max_reset_timeout_s == float("inf"):
            raise ValueError("reset_timeout_s and max_reset_timeout_s must be finite: an infinite open period never probes again")
        if self.max_reset_timeout_s is None:
            object.__setattr__(self, "max_reset_timeout_s", MAX_RESET_FACTOR * self.reset_timeout_s)
        elif self.max_reset_timeout_s < self.reset_timeout_s:
            raise ValueError(
                f"max_reset_timeout_s={self.max_reset_timeout_s} is below reset_timeout_s={self.reset_timeout_s}: the cap must be >= the base"
            )
        if not 0 <= self.reset_jitter <= 1:
            raise ValueError(f"reset_jitter={self.reset_jitter} must be between 0 and 1 (a fraction of the open period)")
        if not self.probe_timeout_s > 0:
            raise ValueError(f"probe_timeout_s={self.probe_timeout_s} must be > 0")


class CircuitBreaker:
    """Per-endpoint breaker. The lock guards only state flips; the connect itself runs with no lock held."""

    def __init__(self, endpoint: str, settings: BreakerSettings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self.settings = settings or BreakerSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[StateListener] = []
        self.state = CLOSED
        self._failures = 0
        self._refusals = 0
        self._opened_at = 0.0
        self._open_for_s = 0.0
        self._trips = 0  # failed probes in a row, drives the doubling
        self._probe_started: float | None = None
        self.last_error: str | None = None
        self.opened_total = 0
        self.rejected_total = 0
        self.full = False  # open because the server refused for maxclients (the errors say so: CircuitOpenServerFull)
        self.held_total = 0  # probes skipped because a fresh reading over a held connection said still full
        # Set by the endpoint (guard/room.py): True while a fresh reading says the server is still full, so a probe
        # falling due would only be refused.
        self.known_full: Callable[[], bool] | None = None

    # -- observation -----------------------------------------------------------------------
    def add_listener(self, listener: StateListener) -> None:
        """Called (outside any lock) with a StateChange on every transition."""
        self._listeners.append(listener)

    def _emit(self, change: StateChange | None) -> None:
        if change is None:
            return
        level = logging.WARNING if change.new == OPEN else logging.INFO
        log.log(level, "circuit %s -> %s for %s: %s", change.old, change.new, change.endpoint, change.reason)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # a broken listener must not break connecting
                log.exception("circuit breaker listener failed")

    def _move(self, new: str, reason: str) -> StateChange | None:
        old, self.state = self.state, new
        if new == CLOSED:
            self.full = False
        return None if old == new else StateChange(self.endpoint, old, new, reason, self._clock())

    # -- the protocol: check() / admit() -> connect with no lock -> success()/failure() ----------
    def check(self) -> None:
        """Fail fast if open and not yet due for a probe. Takes no lock: a stale read only delays by one call."""
        if self.state == OPEN and self._clock() < self._opened_at + self._open_for_s:
            self._reject()

    def admit(self) -> bool:
        """Permit one connect attempt. Returns True if this attempt is the half-open probe."""
        change = None
        with self._lock:
            now = self._clock()
            if self.state == CLOSED:
                return False
            if self.state == OPEN:
                if now < self._opened_at + self._open_for_s:
                    self.rejected_total += 1
                    retry_in = self._opened_at + self._open_for_s - now
                    raise self._open_error(retry_in, self.last_error)
                if self.known_full is not None and self.known_full():
                    self.rejected_total += 1
                    self.held_total += 1
                    self._opened_at = now  # another open period, without a refused attempt
                    raise self._open_error(self._open_for_s, "still full (INFO over a held connection)")
                change = self._move(HALF_OPEN, f"{self._open_for_s:.1f}s passed, admitting one probe")
                self._probe_started = now
            elif self._probe_started is not None and now - self._probe_started < self.settings.probe_timeout_s:
                self.rejected_total += 1
                raise self._open_error(0.0, "a probe connection is in flight")
            else:
                self._probe_started = now  # half-open with no live probe: this caller is it
        self._emit(change)
        return True

    def _reject(self) -> None:
        with self._lock:
            self.rejected_total += 1
            retry_in = max(0.0, self._opened_at + self._open_for_s - self._clock())
        raise self._open_error(retry_in, self.last_error)

    def _open_error(self, retry_in_s: float, detail: str | None) -> CircuitOpenError:
        return (CircuitOpenServerFull if self.full else CircuitOpenError)(self.endpoint, retry_in_s, detail)

    def success(self, probe: bool) -> None:
        if self.state == CLOSED and not probe and not self._failures and not self._refusals:
            return  # the common case stays lock-free
        change = None
        with self._lock:
            self._failures = self._refusals = 0
            if probe or self.state == HALF_OPEN:
                self._trips = 0
                self._probe_started = None
                change = self._move(CLOSED, "probe connected")
        self._emit(change)

    def failure(self, probe: bool, refusal: bool, error: str) -> None:
        change = None
        with self._lock:
            self.last_error = error
            if refusal:
                self._refusals += 1
            else:
                self._failures += 1
            s = self.settings
            if probe or self.state == HALF_OPEN:
                self._trips += 1
                self._probe_started = None
                self.full = refusal
                change = self._open(f"probe failed: {error}")
            elif self.state == CLOSED and (self._refusals >= s.refusal_threshold or self._failures >= s.failure_threshold):
                self._trips = 0
                self.full = refusal
                what = f"{self._refusals} max-clients refusal(s)" if refusal else f"{self._failures} consecutive connect failures"
                change = self._open(f"{what}: {error}")
        self._emit(change)

    def reset(self, reason: str) -> None:
        """Close: the endpoint now means another server (a Sentinel named a new primary), so what the old one
        refused says nothing about it."""
        with self._lock:
            self._failures = self._refusals = self._trips = 0
            self._probe_started = None
            change = self._move(CLOSED, reason)
        self._emit(change)

    def room_returned(self) -> None:
        """A held connection saw room (guard/room.py): the server itself said so, which is what a probe would find out
        at the cost of a socket; close now. A burst into too little room is capped by the rate limit, and one refusal
        opens the breaker again."""
        change = None
        with self._lock:
            if self.state in (OPEN, HALF_OPEN) and self.full:
                self._failures = self._refusals = self._trips = 0
                self._probe_started = None
                change = self._move(CLOSED, "room seen over a held connection (INFO clients)")
        self._emit(change)

    def abandon_probe(self) -> None:
        """The probe never reached the server (e.g. rate limited): let the next caller probe instead."""
        with self._lock:
            if self.state == HALF_OPEN:
                self._probe_started = None

    def _open(self, reason: str) -> StateChange | None:
        s = self.settings
        base = min(s.max_reset_timeout_s, s.reset_timeout_s * 2**self._trips)
        self._open_for_s = base * (1 + random.uniform(0, s.reset_jitter))
        self._opened_at = self._clock()
        self._failures = self._refusals = 0
        self.opened_total += 1
        return self._move(OPEN, f"{reason} (retry in {self._open_for_s:.1f}s)")

    def after_fork_in_child(self) -> None:
        """A probe in flight at fork belongs to the parent: the child's next caller may probe."""
        self._lock = threading.Lock()
        self._probe_started = None

    def retry_in_s(self) -> float:
        if self.state != OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._open_for_s - self._clock())
