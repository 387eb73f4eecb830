"""RQ with the guard. In code, pass a guarded client: `Queue(connection=guarded_client(url))`,
`Worker(queues, connection=guarded_client(url))`. For the `rq worker` command line, which builds its client
with `connection_class.from_url(url)`:

    rq worker --url redis://cache:6379/0 --connection-class connguard.guard.integrations.rq.GuardedRedis
"""

from __future__ import annotations

from typing import Any

import redis

from connguard.guard import GuardedConnectionPool


class GuardedRedis(redis.Redis):
    """redis.Redis whose from_url builds a GuardedConnectionPool (guard settings may be mixed in)."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "GuardedRedis":
        single = kwargs.pop("single_connection_client", False)
        pool = GuardedConnectionPool.from_url(url, name=kwargs.pop("name", "rq"), **kwargs)
        client = cls(connection_pool=pool, single_connection_client=single)
        client.auto_close_connection_pool = True
        return client
