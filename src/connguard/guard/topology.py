"""The guard beyond one node: RedisCluster with guarded per-node pools, and guarded Sentinel pools.

Nothing new decides anything here. Every node's pool is a guarded pool, so each node endpoint gets its own breaker,
budget and rate limit from the process registry, created the first time redis-py makes a pool for that node (at
start-up for the nodes CLUSTER SLOTS lists, or later when a MOVED names a node it did not know).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any, Callable, Iterable

import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection

from connguard.guard import _core
from connguard.guard._core import creation_site
from connguard.guard.backoff import GuardRetry
from connguard.guard.breaker import StateChange
from connguard.guard.pool import GuardedConnectionPool, _SyncGuard
from connguard.guard.settings import SETTING_NAMES, GuardSettings


def _settings_from(settings: GuardSettings | None, kwargs: dict[str, Any]) -> GuardSettings:
    """Take the guard's keywords out of `kwargs` (in place) onto `settings`."""
    ours = {k: kwargs.pop(k) for k in list(kwargs) if k in SETTING_NAMES}
    base = settings or GuardSettings()
    return replace(base, **ours) if ours else base


# -- Cluster ------------------------------------------------------------------------------------------------------
def guarded_cluster_client(
    url: str, *, settings: GuardSettings | None = None, name: str | None = None, **kwargs: Any,
) -> RedisCluster:
    """`redis.cluster.RedisCluster` for the seed `url` whose every node pool is a GuardedConnectionPool: a breaker,
    budget and connect rate per node endpoint, made when redis-py first makes that node's pool (a MOVED to a node it
    had not seen makes one then). Guard settings and RedisCluster options may be mixed.

    RedisCluster retries at the cluster level (its `retry=`, refreshing the slot map) and builds its node pools with
    no retry, so the guard's `retries=` is refused here rather than silently doubled."""
    settings = _settings_from(settings, kwargs)
    if settings.retries is not None:
        raise ValueError("retries= does not apply to a cluster's node pools: RedisCluster retries at the cluster "
                         "level (pass its retry=redis.retry.Retry(...))")
    if "connection_pool_class" in kwargs:
        raise ValueError("guarded_cluster_client chooses the node pool class; pass guard settings instead")
    pool_class = functools.partial(GuardedConnectionPool, settings=settings, name=name or f"cluster@{creation_site(2)}")
    # The url= path is the one where RedisCluster builds node pools with connection_pool_class.
    return RedisCluster(url=url, connection_pool_class=pool_class, **kwargs)


# -- Sentinel -----------------------------------------------------------------------------------------------------
def sentinel_endpoint(service_name: str, is_master: bool, sentinels: Iterable[tuple[str, int]], db: int = 0,
                      username: str | None = None) -> tuple[tuple[Any, ...], str]:
    """The guard's endpoint for a Sentinel-managed service: its primary (or its replicas) wherever they run now.
    The address is only known at connect time and changes on failover, so the service is the endpoint."""
    role = "primary" if is_master else "replicas"
    addresses = tuple(sorted((str(h), int(p)) for h, p in sentinels))
    key = ("sentinel", service_name, role, addresses, int(db or 0), username or None)
    return key, f"sentinel:{service_name} ({role})"


class GuardedSentinelConnectionPool(_SyncGuard, SentinelConnectionPool):
    """redis-py's SentinelConnectionPool plus the guard: connects to the primary the Sentinels name pass one breaker
    and rate limit, and the connections hold slots of one budget, all per service and role. When the Sentinels
    name a new primary the breaker closes: the new server is not the one that refused.

    `Sentinel.master_for(name, connection_pool_class=GuardedSentinelConnectionPool, budget=20)`, or
    `guarded_sentinel_client(...)`."""

    _cg_redis_base = SentinelConnectionPool

    def __init__(
        self,
        service_name: str,
        sentinel_manager: Sentinel,
        *,
        settings: GuardSettings | None = None,
        name: str | None = None,
        on_state_change: Callable[[StateChange], None] | None = None,
        **kwargs: Any,
    ) -> None:
        connection_class = kwargs.get("connection_class") or (
            SentinelManagedSSLConnection if kwargs.get("ssl") else SentinelManagedConnection)
        sentinels = [(s.connection_pool.connection_kwargs.get("host", "localhost"),
                      s.connection_pool.connection_kwargs.get("port", 26379)) for s in sentinel_manager.sentinels]
        endpoint = sentinel_endpoint(service_name, kwargs.get("is_master", True), sentinels, kwargs.get("db", 0),
                                     kwargs.get("username"))
        kwargs = _core.setup(self, connection_class, kwargs, settings, name, "sentinel-pool", GuardRetry,
                             endpoint=endpoint)
        super().__init__(service_name, sentinel_manager, **kwargs)
        _core.register(self, on_state_change)
        if self.is_master:
            self.proxy.get_master_address = _closing_on_new_primary(self.proxy, self.endpoint)

    # The same views as GuardedConnectionPool: SentinelConnectionPool is a redis.ConnectionPool.
    _cg_unmake = GuardedConnectionPool._cg_unmake
    _cg_idle = GuardedConnectionPool._cg_idle
    _cg_in_use = GuardedConnectionPool._cg_in_use
    _cg_has_idle = GuardedConnectionPool._cg_has_idle
    _cg_shed_one = GuardedConnectionPool._cg_shed_one
    _cg_sink = GuardedConnectionPool._cg_sink


def _closing_on_new_primary(proxy: Any, endpoint: Any) -> Callable[[], Any]:
    """redis-py asks the Sentinels for the primary before each connect; when they name another server, the
    breaker closes (the new primary is not the one that refused) before the connect passes it."""
    ask = proxy.get_master_address

    def get_master_address() -> Any:
        before = proxy.master_address
        address = ask()
        if before is not None and address != before:
            endpoint.breaker.reset(f"the Sentinels named a new primary {address[0]}:{address[1]} (was {before[0]}:{before[1]})")
        return address

    return get_master_address


def guarded_sentinel_client(
    sentinels: Iterable[tuple[str, int]], service_name: str, *, replica: bool = False,
    settings: GuardSettings | None = None, name: str | None = None, sentinel_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> redis.Redis:
    """`redis.Redis` for the primary (or, with replica=True, a replica) of `service_name` as the Sentinels name it,
    over a GuardedSentinelConnectionPool. `kwargs` are redis-py connection options (password, db, ...) mixed with
    guard settings; `sentinel_kwargs` are the options for the Sentinel connections themselves (not guarded: they
    are few, and they are how the primary is found)."""
    settings = _settings_from(settings, kwargs)
    manager = Sentinel(list(sentinels), sentinel_kwargs=sentinel_kwargs, **kwargs)
    pool_name = name or f"sentinel@{creation_site(2)}"
    chooser = manager.slave_for if replica else manager.master_for
    return chooser(service_name, connection_pool_class=functools.partial(
        GuardedSentinelConnectionPool, settings=settings, name=pool_name))


__all__ = ["GuardedSentinelConnectionPool", "guarded_cluster_client", "guarded_sentinel_client"]
