"""Nonsense settings are refused at construction, with a message that says which setting and why."""

from __future__ import annotations

import re

import pytest

from connguard.guard import (
    AsyncGuardedConnectionPool,
    BackoffPolicy,
    BreakerSettings,
    GuardedConnectionPool,
    GuardSettings,
    guarded_client,
)
from connguard.guard.backoff import GuardRetry, decorrelated_jitter, equal_jitter, full_jitter


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"budget": 0}, "budget=0 must be an integer >= 1"),
        ({"budget": -5}, "budget=-5"),
        ({"budget_wait_s": -1}, "budget_wait_s=-1"),
        ({"leak_threshold_s": -2.0}, "leak_threshold_s=-2.0 must be > 0"),
        ({"leak_threshold_s": 0}, "leak_threshold_s=0"),
        ({"failure_threshold": 0}, "failure_threshold=0 must be an integer >= 1"),
        ({"refusal_threshold": -1}, "refusal_threshold=-1"),
        ({"reset_timeout_s": -1.0}, "reset_timeout_s=-1.0 must be > 0"),
        ({"reset_timeout_s": 5.0, "max_reset_timeout_s": 1.0}, "max_reset_timeout_s=1.0 is below reset_timeout_s=5.0"),
        ({"connect_rate_per_s": 0}, "connect_rate_per_s=0 must be > 0"),
        ({"connect_burst": 0}, "connect_burst=0"),
        ({"retries": -1}, "retries=-1"),
        # Wrong types and NaN: refused by name, not a TypeError at first use or a silently accepted NaN
        ({"budget": True}, "budget=True must be an integer or None, not bool"),
        ({"budget_wait_s": "5"}, "budget_wait_s='5' must be a number, not str"),
        ({"budget_wait_s": float("nan")}, "budget_wait_s=nan must be a number, not NaN"),
        ({"connect_rate_wait_s": float("nan")}, "connect_rate_wait_s=nan"),
        ({"leak_threshold_s": "30"}, "leak_threshold_s='30' must be a number or None"),
        ({"retries": 2.5}, "retries=2.5 must be an integer"),
        ({"reset_timeout_s": float("inf")}, "must be finite"),
    ],
)
def test_bad_settings_are_refused_with_which_and_why(settings, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        GuardSettings(**settings)
    with pytest.raises(ValueError, match=re.escape(says)):
        GuardedConnectionPool(host="127.0.0.1", port=1, **settings)  # refused before any socket
    with pytest.raises(ValueError, match=re.escape(says)):
        AsyncGuardedConnectionPool(host="127.0.0.1", port=1, **settings)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"kind": "full", "base_s": 0.5, "cap_s": 0.1}, "cap_s=0.1 is below base_s=0.5"),
        ({"kind": "full", "base_s": 0, "cap_s": 1}, "base_s=0 must be > 0"),
        ({"kind": "linear"}, "backoff kind 'linear' is unknown"),
    ],
)
def test_bad_backoff_is_refused(kwargs, says):
    with pytest.raises(ValueError, match=says):
        BackoffPolicy(**kwargs)


def test_backoff_policies_are_redis_py_classes_with_units_in_the_names():
    for make in (full_jitter, equal_jitter, decorrelated_jitter):
        backoff = make(base_s=0.01, cap_s=0.5)
        assert type(backoff).__module__ == "redis.backoff"
        assert all(0 <= backoff.compute(n) <= 0.5 for n in range(1, 30))
    with pytest.raises(ValueError, match="cap_s=0.001 is below base_s=0.01"):
        full_jitter(base_s=0.01, cap_s=0.001)


def test_the_guard_retry_is_installed_even_over_a_caller_retry():
    from redis.backoff import ConstantBackoff
    from redis.retry import Retry

    pool = GuardedConnectionPool(host="127.0.0.1", port=1, retry=Retry(ConstantBackoff(0.1), 7))
    retry = pool.connection_kwargs["retry"]
    assert isinstance(retry, GuardRetry) and retry.get_retries() == 7


def test_breaker_defaults_cap_growth_at_three_times_the_first_wait():
    assert BreakerSettings(reset_timeout_s=2.0).max_reset_timeout_s == 6.0


def test_a_client_url_keeps_its_password_out_of_the_endpoint_label():
    client = guarded_client("redis://app:s3cret@127.0.0.1:1/2", name="secret")
    label = client.connection_pool.endpoint.label
    assert label == "redis://app@127.0.0.1:1/2" and "s3cret" not in label
