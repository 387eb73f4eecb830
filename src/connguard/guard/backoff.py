"""Backoff policies with jitter (redis-py's own classes, units in the names) and a retry that never hammers a refusal."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from redis import backoff as rb
from redis.retry import Retry

from connguard.guard.errors import NOT_RETRIED

_KINDS: dict[str, type[rb.AbstractBackoff]] = {
    "full": rb.FullJitterBackoff,  # uniform(0, min(cap, base*2^n)); AWS "full jitter"
    "equal": rb.EqualJitterBackoff,  # half fixed, half random
    "decorrelated": rb.DecorrelatedJitterBackoff,  # uniform(base, 3*previous), capped
    "exponential": rb.ExponentialWithJitterBackoff,  # redis-py 8 default shape
}
BACKOFF_KINDS = tuple(_KINDS)


@dataclass(frozen=True)
class BackoffPolicy:
    """How long to wait between retries: a jittered exponential from base_s up to cap_s."""

    kind: str = "full"
    base_s: float = 0.05
    cap_s: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"backoff kind {self.kind!r} is unknown: use one of {', '.join(_KINDS)}")
        if not self.base_s > 0:
            raise ValueError(f"backoff base_s={self.base_s} must be > 0: a zero base is an immediate retry")
        if self.cap_s < self.base_s:
            raise ValueError(f"backoff cap_s={self.cap_s} is below base_s={self.base_s}: the cap must be >= the base")

    def build(self) -> rb.AbstractBackoff:
        return _KINDS[self.kind](cap=self.cap_s, base=self.base_s)


def full_jitter(base_s: float = 0.05, cap_s: float = 2.0) -> rb.AbstractBackoff:
    return BackoffPolicy("full", base_s, cap_s).build()


def equal_jitter(base_s: float = 0.05, cap_s: float = 2.0) -> rb.AbstractBackoff:
    return BackoffPolicy("equal", base_s, cap_s).build()


def decorrelated_jitter(base_s: float = 0.05, cap_s: float = 2.0) -> rb.AbstractBackoff:
    return BackoffPolicy("decorrelated", base_s, cap_s).build()


class GuardRetry(Retry):
    """redis-py's Retry, except refusals (max clients, open circuit, budget, rate limit) propagate at once.

    The loop is redis-py's own (redis/retry.py), with the refusal check inlined: it runs on every pool checkout,
    so it must not cost an extra closure per call.
    """

    def call_with_retry(self, do: Callable[[], Any], fail: Callable[..., Any], is_retryable=None, with_failure_count=False):  # type: ignore[override]
        self._backoff.reset()
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if isinstance(error, NOT_RETRIED) or (is_retryable and not is_retryable(error)):
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)
                else:
                    fail(error)
                if self._retries >= 0 and failures > self._retries:
                    raise error
                backoff = self._backoff.compute(failures)
                if backoff > 0:
                    time.sleep(backoff)


def guard_retry(policy: BackoffPolicy, retries: int) -> GuardRetry:
    if retries < 0:
        raise ValueError(f"retries={retries} must be >= 0: a negative count retries forever")
    return GuardRetry(policy.build(), retries)
