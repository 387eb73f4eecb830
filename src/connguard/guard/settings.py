"""Every guard setting in one frozen dataclass, refused at construction when it makes no sense."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
import difflib
from typing import Any, Callable

from connguard.guard.backoff import BackoffPolicy
from connguard.guard.breaker import BreakerSettings
from connguard.guard.budget import ConnectionBudget
from connguard.guard.ratelimit import ConnectRateLimiter


@dataclass(frozen=True)
class GuardSettings:
    """Defaults follow the runbook: back off with jitter, trip on refusals, cap connections, report leaks."""

    # Per endpoint (shared by every pool in the process that talks to it; the first pool's settings win).
    budget: int | None = 50  # open connections to the endpoint, process-wide; None = no cap
    budget_wait_s: float = 5.0
    connect_rate_per_s: float | None = 20.0  # new connections per second; None = no limit
    connect_burst: int = 20
    connect_rate_wait_s: float = 1.0
    failure_threshold: int = 5
    refusal_threshold: int = 1
    reset_timeout_s: float = 1.0
    max_reset_timeout_s: float | None = None  # default: 3 x reset_timeout_s
    reset_jitter: float = 0.25
    # Per pool.
    leak_threshold_s: float | None = 30.0  # None turns leak detection off
    leak_include_pubsub: bool = False
    # Opt-in retry: None leaves redis-py's retry exactly as the caller configured it (redis-py's default for a
    # pool is no retry). A number installs a retry of that many tries with `backoff` that never retries a refusal.
    retries: int | None = None
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)

    def __post_init__(self) -> None:
        _check_types(self)  # wrong types first, so the parts below compare numbers with numbers
        self.breaker_settings()  # each part validates itself and says which setting and why
        ConnectionBudget("settings", self.budget, self.budget_wait_s)
        ConnectRateLimiter("settings", self.connect_rate_per_s, self.connect_burst, self.connect_rate_wait_s)
        if self.leak_threshold_s is not None and not self.leak_threshold_s > 0:
            raise ValueError(f"leak_threshold_s={self.leak_threshold_s} must be > 0 (or None to turn leak detection off)")
        if self.retries is not None and self.retries < 0:
            raise ValueError(f"retries={self.retries!r} must be an integer >= 0 (a negative count retries forever)")
        if not isinstance(self.backoff, BackoffPolicy):
            raise ValueError("backoff must be a connguard.guard.BackoffPolicy, e.g. BackoffPolicy('full', base_s=0.05, cap_s=2)")

    def breaker_settings(self) -> BreakerSettings:
        return BreakerSettings(
            failure_threshold=self.failure_threshold,
            refusal_threshold=self.refusal_threshold,
            reset_timeout_s=self.reset_timeout_s,
            max_reset_timeout_s=self.max_reset_timeout_s,
            reset_jitter=self.reset_jitter,
        )

    def endpoint_part(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if f.name in ENDPOINT_FIELDS)


_INTS = ("budget", "connect_burst", "failure_threshold", "refusal_threshold", "retries")
_SECONDS_OR_RATES = (
    "budget_wait_s", "connect_rate_per_s", "connect_rate_wait_s", "reset_timeout_s", "max_reset_timeout_s",
    "reset_jitter", "leak_threshold_s",
)
_OPTIONAL = frozenset({"budget", "connect_rate_per_s", "max_reset_timeout_s", "leak_threshold_s", "retries"})


def _check_types(settings: GuardSettings) -> None:
    """Refuse strings, booleans and NaN by name: `budget=True` or `budget_wait_s="5"` are typos, not settings."""
    for name in _INTS + _SECONDS_OR_RATES:
        value = getattr(settings, name)
        if value is None and name in _OPTIONAL:
            continue
        kinds = (int,) if name in _INTS else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            what = "an integer" if name in _INTS else "a number"
            none = " or None" if name in _OPTIONAL else ""
            raise ValueError(f"{name}={value!r} must be {what}{none}, not {type(value).__name__}")
        if value != value:  # NaN compares false with everything, so every later check would pass it
            raise ValueError(f"{name}={value!r} must be a number, not NaN")


SETTING_NAMES = frozenset(f.name for f in fields(GuardSettings))
ENDPOINT_FIELDS = (
    "budget", "budget_wait_s", "connect_rate_per_s", "connect_burst", "connect_rate_wait_s",
    "failure_threshold", "refusal_threshold", "reset_timeout_s", "max_reset_timeout_s", "reset_jitter",
)


def split_settings(
    settings: GuardSettings | None, kwargs: dict[str, Any], accepts: Callable[[str], bool] = lambda _name: True,
) -> tuple[GuardSettings, dict[str, Any]]:
    """Take guard settings out of a pool's keyword arguments; what is left goes to redis-py.

    A leftover keyword that the connection class does not take and that looks like a guard setting
    (`leak_treshold_s`) is a typo: refused now, not at the first command as redis-py's TypeError."""
    ours = {k: kwargs.pop(k) for k in list(kwargs) if k in SETTING_NAMES}
    for name in kwargs:
        if accepts(name):
            continue
        close = difflib.get_close_matches(name, sorted(SETTING_NAMES), n=1, cutoff=0.75)
        if close:
            raise TypeError(f"unknown keyword {name}={kwargs[name]!r}: did you mean the guard setting {close[0]}=?")
    base = settings or GuardSettings()
    return (replace(base, **ours) if ours else base), kwargs
