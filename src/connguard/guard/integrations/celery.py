"""Celery with the guard: kombu's Redis transport and Celery's Redis result backend over GuardedConnectionPool.

    app = Celery("proj", broker="redis://cache:6379/0",
                 backend="connguard.guard.integrations.celery:GuardedRedisBackend+redis://cache:6379/1")
    app.conf.broker_transport = "connguard.guard.integrations.celery:GuardedRedisTransport"  # kombu refuses
    # an import path inside the URL's scheme (kombu Issue #2641), so the transport is named on its own
    app.conf.broker_transport_options = {"connguard": {"budget": 30}}   # guard settings for the broker
    app.conf.connguard_backend = {"budget": 30}                          # and for the result backend

Both frameworks create `redis.ConnectionPool(**params)` in one method (kombu's Channel._get_pool, Celery's
RedisBackend._get_pool); these subclasses override only that method, so everything else (queues, fan-out,
acks, result storage) is the framework's own code. Guard settings are GuardSettings keywords."""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend
from kombu.transport import redis as kombu_redis

from connguard.guard import GuardedConnectionPool


class GuardedChannel(kombu_redis.Channel):
    """kombu's Redis channel, its pools guarded. `connguard` (a dict of guard settings) comes from
    broker_transport_options, like kombu's own options."""

    connguard: dict[str, Any] | None = None
    from_transport_options = kombu_redis.Channel.from_transport_options + ("connguard",)

    def _get_pool(self, asynchronous: bool = False) -> GuardedConnectionPool:
        params = self._connparams(asynchronous=asynchronous)
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        return GuardedConnectionPool(name=f"celery-broker{'-async' if asynchronous else ''}",
                                     **{**(self.connguard or {}), **params})


class GuardedRedisTransport(kombu_redis.Transport):
    Channel = GuardedChannel


class GuardedRedisBackend(RedisBackend):
    """Celery's Redis result backend, its pool guarded; guard settings from `app.conf.connguard_backend`."""

    def _get_pool(self, **params: Any) -> GuardedConnectionPool:
        settings = dict(self.app.conf.get("connguard_backend") or {})
        return GuardedConnectionPool(name="celery-result-backend", **{**settings, **params})
