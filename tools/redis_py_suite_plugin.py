"""pytest plugin for tools/redis_py_suite.py: swap the guarded pools into redis-py before its tests are collected.

Loaded with `-p redis_py_suite_plugin` (tools/ on PYTHONPATH) when CONNGUARD_SWAP=1. Every name under which redis-py
exposes ConnectionPool / BlockingConnectionPool (sync and asyncio) then points at the guarded twin, with generous
guard settings: a budget no test reaches, no rate limit, a breaker that only a real storm would open, and leak
tracking on (with an hour's threshold) so its bookkeeping runs on every checkout. CONNGUARD_SUITE_STATS names a JSON
file that receives how many guarded pools were built, so a run that silently did not swap is caught.
"""

from __future__ import annotations

import json
import os
from typing import Any

_BUILT = {"sync": 0, "sync_blocking": 0, "async": 0, "async_blocking": 0}

SUITE_SETTINGS = dict(
    budget=100_000, budget_wait_s=5.0, connect_rate_per_s=None, failure_threshold=1_000_000,
    refusal_threshold=1_000_000, leak_threshold_s=3600.0,
)


def _counting(cls: type, key: str) -> type:
    init = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        _BUILT[key] += 1
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


def swap() -> None:
    import redis
    import redis.asyncio
    import redis.asyncio.client
    import redis.asyncio.connection
    import redis.client
    import redis.connection

    from connguard.guard import (
        AsyncGuardedBlockingConnectionPool,
        AsyncGuardedConnectionPool,
        GuardedBlockingConnectionPool,
        GuardedConnectionPool,
        GuardSettings,
    )

    settings = GuardSettings(**SUITE_SETTINGS)

    def with_settings(cls: type, key: str) -> type:
        sub = type(cls.__name__, (cls,), {"__module__": cls.__module__, "_cg_redis_base": cls._cg_redis_base})
        init = sub.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("settings", settings)
            init(self, *args, **kwargs)

        sub.__init__ = __init__  # type: ignore[method-assign]
        return _counting(sub, key)

    pools = {
        (redis, redis.connection, redis.client): {
            "ConnectionPool": with_settings(GuardedConnectionPool, "sync"),
            "BlockingConnectionPool": with_settings(GuardedBlockingConnectionPool, "sync_blocking"),
        },
        (redis.asyncio, redis.asyncio.connection, redis.asyncio.client): {
            "ConnectionPool": with_settings(AsyncGuardedConnectionPool, "async"),
            "BlockingConnectionPool": with_settings(AsyncGuardedBlockingConnectionPool, "async_blocking"),
        },
    }
    for modules, names in pools.items():
        for module in modules:
            for name, cls in names.items():
                if hasattr(module, name):
                    setattr(module, name, cls)


def pytest_configure(config: Any) -> None:
    if os.environ.get("CONNGUARD_SWAP") == "1":
        swap()


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    path = os.environ.get("CONNGUARD_SUITE_STATS")
    if path:
        with open(path, "w") as f:
            json.dump({"guarded_pools_built": dict(_BUILT), "swapped": os.environ.get("CONNGUARD_SWAP") == "1"}, f)
