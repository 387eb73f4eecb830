"""Backoff policies with jitter (redis-py's own classes, units in the names) and the opt-in retry that never hammers
a refusal. The guard installs a retry only when asked (`retries=`): otherwise redis-py's retry contract is untouched."""

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


def retry_pause(retry: Any, error: BaseException, failures: int, is_retryable: Callable[[BaseException], bool] | None) -> float | None:
    """The one retry decision, shared by the sync and asyncio loops: None = raise `error` now (a refusal, not
    retryable, or out of retries), else the seconds to back off before the next try. `failures` counts this one."""
    if gives_up_at_once(error, is_retryable):
        return None
    if retry._retries >= 0 and failures > retry._retries:
        return None
    return retry._backoff.compute(failures)


def gives_up_at_once(error: BaseException, is_retryable: Callable[[BaseException], bool] | None) -> bool:
    """A refusal is never retried at once (retrying adds load to a server that said no); nor is what the caller
    says is not retryable. Checked before redis-py's failure callback runs, as redis-py does."""
    return isinstance(error, NOT_RETRIED) or bool(is_retryable and not is_retryable(error))


class GuardRetry(Retry):
    """redis-py's Retry, except refusals (max clients, open circuit, budget, rate limit) propagate at once.
    Installed only when the caller opts in with `retries=`."""

    def call_with_retry(self, do: Callable[[], Any], fail: Callable[..., Any], is_retryable=None, with_failure_count=False):  # type: ignore[override]
        self._backoff.reset()
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if gives_up_at_once(error, is_retryable):
                    raise
                failures += 1
                fail(error, failures) if with_failure_count else fail(error)
                pause = retry_pause(self, error, failures, is_retryable)
                if pause is None:
                    raise error
                if pause > 0:
                    time.sleep(pause)


def guard_retry(policy: BackoffPolicy, retries: int, retry_class: type = GuardRetry) -> Any:
    if retries < 0:
        raise ValueError(f"retries={retries} must be >= 0: a negative count retries forever")
    return retry_class(policy.build(), retries)
