"""How the exporter behaves while a target is at fault: reconnect backoff across scrapes, and logging a
target's state once per change.

A scrape must not become a retry loop: Prometheus scrapes every target every 15 s or so, with a timeout, and
a server that refuses us at maxclients or does not answer gains nothing from 7 attempts per scrape. So a
scrape makes at most one connection attempt, and only when the target's backoff step has elapsed; in between
it answers from the target's cached state (the last failure, the socket census when the server is local),
without touching the network.
"""

from __future__ import annotations

import collections
import logging
import math
import random
from dataclasses import dataclass, field

BACKOFF_BASE_S = 1.0  # the first retry after a failure; doubled per failure
BACKOFF_CAP_S = 30.0  # two scrapes at the usual 15 s: a recovered server is seen again within a minute


@dataclass
class ReconnectBackoff:
    """Full-jitter-within-half exponential backoff, driven by the caller's clock: `due(now)` says whether a
    connection attempt may be made; `failed(now)` schedules the next one; `succeeded()` resets."""

    base_s: float = BACKOFF_BASE_S
    cap_s: float = BACKOFF_CAP_S
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0
    next_at: float = -math.inf

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def failed(self, now: float) -> float:
        """Schedule the next attempt after a failed one at `now`; returns the delay. The delay is drawn from
        [step/2, step] (step = base * 2^(failures-1), capped), so many exporters do not retry in lockstep and
        successive attempts are at least base/2 apart."""
        self.failures += 1
        step = min(self.cap_s, self.base_s * 2 ** min(self.failures - 1, 32))
        delay = self.rng.uniform(step / 2, step)
        self.next_at = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures, self.next_at = 0, -math.inf


class StateLog:
    """Log a key's state once per change, not once per scrape: a server down for an hour is one warning and,
    when it comes back, one info line. Remembers at most `max_keys` keys (oldest forgotten first), so probes of
    arbitrary garbage URLs cannot grow it without bound."""

    def __init__(self, logger: logging.Logger, max_keys: int = 10_000) -> None:
        self._log = logger
        self._states: collections.OrderedDict[object, str | None] = collections.OrderedDict()
        self._max = max_keys

    def state(self, key: object) -> str | None:
        return self._states.get(key)

    def note(self, key: object, state: str | None, level: int, msg: str, *args: object) -> bool:
        """Log `msg` at `level` when `state` differs from the key's last one (a first `None` is not a change);
        returns whether it logged."""
        before = self._states.get(key)
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self._max:
            self._states.popitem(last=False)
        if state == before:
            return False
        self._log.log(level, msg, *args)
        return True

    def forget(self, key: object) -> None:
        self._states.pop(key, None)
