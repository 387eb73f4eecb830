"""The guard inside frameworks that build their own redis-py pools (docs/guard.md, "Inside frameworks").

Django's caches and arq take a pool class or a client directly and need nothing from here. Celery's Redis
broker (kombu's transport) and result backend build `redis.ConnectionPool` themselves, so `celery` here has
a transport and a backend that build a GuardedConnectionPool instead; `rq` has a redis.Redis subclass for
`rq worker --connection-class`. Each imports its framework only when used."""
