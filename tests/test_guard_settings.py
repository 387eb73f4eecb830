"""Nonsense settings are refused at construction, with a message that says which setting and why."""

from __future__ import annotations

import re

import pytest

from connguard.guard import (
    AsyncGuardedConnectionPool,
    BackoffPolicy,
    GuardedConnectionPool,
    GuardSettings,
    guarded_client,
)
from connguard.guard.breaker import BreakerSettings
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


def test_redis_py_retry_contract_is_left_alone_unless_the_caller_opts_in():
    import redis
    from redis.backoff import ConstantBackoff
    from redis.retry import Retry

    caller = Retry(ConstantBackoff(0.1), 7)
    pool = GuardedConnectionPool(host="127.0.0.1", port=1, retry=caller)
    assert pool.connection_kwargs["retry"] is caller  # not wrapped, not replaced
    plain, guarded = redis.ConnectionPool(host="127.0.0.1", port=1), GuardedConnectionPool(host="127.0.0.1", port=1)
    assert "retry" not in guarded.connection_kwargs
    assert guarded.make_connection().retry.get_retries() == plain.make_connection().retry.get_retries() == 0
    opted = GuardedConnectionPool(host="127.0.0.1", port=1, retries=2)
    assert isinstance(opted.connection_kwargs["retry"], GuardRetry) and opted.connection_kwargs["retry"].get_retries() == 2
    with pytest.raises(ValueError, match="either redis-py's retry= or the guard's retries="):
        GuardedConnectionPool(host="127.0.0.1", port=1, retry=caller, retries=2)


@pytest.mark.parametrize("make", [GuardedConnectionPool, AsyncGuardedConnectionPool])
def test_a_mistyped_guard_keyword_is_refused_when_the_pool_is_built(make):
    with pytest.raises(TypeError, match="leak_treshold_s=5: did you mean the guard setting leak_threshold_s"):
        make(host="127.0.0.1", port=1, leak_treshold_s=5)
    with pytest.raises(TypeError, match="budget_wait="):
        make(host="127.0.0.1", port=1, budget_wait=2)
    make(host="127.0.0.1", port=1, socket_timeout=1.0, health_check_interval=3, client_name="x")  # redis-py's own pass


def test_the_pool_keeps_redis_py_connection_class_repr_and_kwargs():
    import redis
    import redis.asyncio as aioredis
    from connguard.guard import AsyncGuardedBlockingConnectionPool, GuardedBlockingConnectionPool

    class MyConnection(redis.Connection):
        pass

    for guarded, plain in [
        (GuardedConnectionPool, redis.ConnectionPool), (GuardedBlockingConnectionPool, redis.BlockingConnectionPool),
        (AsyncGuardedConnectionPool, aioredis.ConnectionPool), (AsyncGuardedBlockingConnectionPool, aioredis.BlockingConnectionPool),
    ]:
        url = "redis://127.0.0.1:1/3?client_name=x"
        g, p = guarded.from_url(url, budget=3), plain.from_url(url)
        assert g.connection_class is p.connection_class
        masked = lambda text: re.sub(r" object at 0x[0-9a-f]+", "", re.sub(r"HImportRegistry\([^)]*\)", "", text))
        assert masked(repr(g)) == masked(repr(p))
        assert sorted(g.connection_kwargs) == sorted(p.connection_kwargs)
    custom = GuardedConnectionPool(connection_class=MyConnection, host="127.0.0.1", port=1)
    assert custom.connection_class is MyConnection and type(custom.make_connection()) is MyConnection


def test_breaker_defaults_cap_growth_at_three_times_the_first_wait():
    assert BreakerSettings(reset_timeout_s=2.0).max_reset_timeout_s == 6.0


def test_a_client_url_keeps_its_password_out_of_the_endpoint_label():
    client = guarded_client("redis://app:s3cret@127.0.0.1:1/2", name="secret")
    label = client.connection_pool.endpoint.label
    assert label == "redis://app@127.0.0.1:1/2" and "s3cret" not in label
