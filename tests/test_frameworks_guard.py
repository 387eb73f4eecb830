"""The guard inside real frameworks, at a real server that has reached maxclients: Django's RedisCache
(pool_class), django-redis (CONNECTION_POOL_CLASS), RQ and arq (a guarded client passed in), Celery's Redis
broker and result backend (connguard.guard.integrations.celery). Each recipe is in docs/guard.md.

What the guard changes at a full server: the framework's calls fail with the guard's refusal and, once the
breaker is open, stop reaching the server at all; without the guard every call is one more refused connection
(redis-py retries some of them), which is how a full server turns into a retry storm."""

from __future__ import annotations

import asyncio

import pytest
import redis

from connguard.guard import AsyncGuardedConnectionPool, GuardedConnectionPool, GuardRefusal, guarded_client

pytestmark = [pytest.mark.usefixtures("fresh_guard_registry"), pytest.mark.slow]

CALLS = 20


def rejected(monitor: redis.Redis) -> int:
    return int(monitor.info("stats")["rejected_connections"])


def guard_cause(exc: BaseException) -> GuardRefusal | None:
    """The guard's refusal behind a framework's own wrapper exception (kombu, django-redis wrap it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, GuardRefusal):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def hammer(call, monitor) -> tuple[int, list[BaseException]]:
    """CALLS calls against the full server: the refused connections they cost, and what they raised."""
    before, errors = rejected(monitor), []
    for _ in range(CALLS):
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - each framework wraps the refusal its own way
            errors.append(exc)
    return rejected(monitor) - before, errors


def assert_guarded(cost: int, errors: list[BaseException]) -> None:
    assert len(errors) == CALLS, "every call at a full server fails"
    assert all(guard_cause(e) is not None for e in errors), [type(e).__name__ for e in errors]
    # the breaker opens after the first refusals; the rest fail fast without a connection attempt
    assert cost < CALLS / 2, cost


@pytest.fixture(scope="module")
def django_settings():
    django = pytest.importorskip("django")
    from django.conf import settings

    if not settings.configured:
        settings.configure()
        django.setup()
    return settings


def test_django_rediscache_with_pool_class_fails_fast_at_a_full_server(full_server, django_settings):
    from django.core.cache.backends.redis import RedisCache

    server, monitor, _crowd, _leak = full_server
    guarded = RedisCache(server.url, {"OPTIONS": {"pool_class": "connguard.guard.GuardedConnectionPool", "budget": 5}})
    assert isinstance(guarded._cache._get_connection_pool(write=True), GuardedConnectionPool)
    cost, errors = hammer(lambda: guarded.get("k"), monitor)
    assert_guarded(cost, errors)
    plain = RedisCache(server.url, {})
    plain_cost, plain_errors = hammer(lambda: plain.get("k"), monitor)
    assert len(plain_errors) == CALLS and plain_cost >= CALLS  # every unguarded call is a refused connection


def test_django_redis_with_connection_pool_class_fails_fast_at_a_full_server(full_server, django_settings):
    from django_redis.cache import RedisCache

    server, monitor, _crowd, _leak = full_server
    cache = RedisCache(server.url, {"OPTIONS": {
        "CONNECTION_POOL_CLASS": "connguard.guard.GuardedConnectionPool",
        "CONNECTION_POOL_KWARGS": {"budget": 5}}})
    assert isinstance(cache.client.get_client(write=True).connection_pool, GuardedConnectionPool)
    assert_guarded(*hammer(lambda: cache.get("k"), monitor))


def test_django_caches_work_through_the_guard_on_a_server_with_room(default_binary, start_server, django_settings):
    from django.core.cache.backends.redis import RedisCache as Builtin
    from django_redis.cache import RedisCache as DjangoRedis

    server = start_server(default_binary, maxclients=50)
    for cache in (Builtin(server.url, {"OPTIONS": {"pool_class": "connguard.guard.GuardedConnectionPool"}}),
                  DjangoRedis(server.url, {"OPTIONS": {"CONNECTION_POOL_CLASS": "connguard.guard.GuardedConnectionPool"}})):
        cache.set("greeting", {"hello": 1})
        assert cache.get("greeting") == {"hello": 1}


def quick_worker(rq, queues, conn):
    """rq.SimpleWorker (in-process, no fork) without its command channel: rq 3.0's pub/sub thread polls with
    get_message(timeout=60) and can hold up the worker's exit for up to a minute, guard or not."""

    class QuickWorker(rq.SimpleWorker):
        def subscribe(self) -> None:
            self.pubsub_thread = None

    return QuickWorker(queues, connection=conn)


def test_rq_queue_and_worker_with_a_guarded_client(full_server, default_binary, start_server):
    rq = pytest.importorskip("rq")
    from connguard.guard.integrations.rq import GuardedRedis

    room = start_server(default_binary, maxclients=50)
    conn = GuardedRedis.from_url(room.url)
    assert isinstance(conn.connection_pool, GuardedConnectionPool)
    q = rq.Queue("cg", connection=conn)
    job = q.enqueue("builtins.len", "abc")
    worker = quick_worker(rq, [q], conn)
    assert worker.work(burst=True) and job.get_status(refresh=True) == "finished" and job.return_value() == 3
    conn.close()

    server, monitor, _crowd, _leak = full_server
    full = rq.Queue("cg", connection=guarded_client(server.url, budget=5))
    assert_guarded(*hammer(lambda: full.enqueue("builtins.len", "abc"), monitor))


def test_arq_with_a_guarded_pool_passed_in(full_server, default_binary, start_server):
    arq = pytest.importorskip("arq")
    from arq.connections import ArqRedis

    async def run_a_job(url: str) -> int:
        pool = ArqRedis(AsyncGuardedConnectionPool.from_url(url))
        async def double(ctx, x):  # noqa: ANN001
            return 2 * x
        job = await pool.enqueue_job("double", 21)
        worker = arq.Worker(functions=[arq.func(double, name="double")], redis_pool=pool, burst=True,
                            handle_signals=False, poll_delay=0.05)
        await worker.main()
        result = await job.result(timeout=5)
        await worker.close()
        return result

    room = start_server(default_binary, maxclients=50)
    assert asyncio.run(run_a_job(room.url)) == 42

    server, monitor, _crowd, _leak = full_server

    async def enqueue_many() -> list[BaseException]:
        pool = ArqRedis(AsyncGuardedConnectionPool.from_url(server.url, budget=5))
        errors: list[BaseException] = []
        for _ in range(CALLS):
            try:
                await pool.enqueue_job("double", 1)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        return errors

    before = rejected(monitor)
    errors = asyncio.run(enqueue_many())
    assert_guarded(rejected(monitor) - before, errors)


def celery_app(url: str, backend: bool = True):
    celery = pytest.importorskip("celery")
    app = celery.Celery("cgtest", broker=f"{url}/0",
                        backend=f"connguard.guard.integrations.celery:GuardedRedisBackend+{url}/1" if backend else None)
    app.conf.broker_transport = "connguard.guard.integrations.celery:GuardedRedisTransport"
    app.conf.broker_transport_options = {"connguard": {"budget": 5}, "max_retries": 0}
    app.conf.connguard_backend = {"budget": 5}
    # Celery's own retry loops (publish: 3 tries; result consumer: 20 x 1 s) run on top of the guard;
    # the guard keeps them off the server, these keep the test short.
    app.conf.task_publish_retry = False
    app.conf.result_backend_transport_options = {"retry_policy": {"max_retries": 1}}
    return app


def test_celery_broker_and_result_backend_use_guarded_pools(default_binary, start_server):
    server = start_server(default_binary, maxclients=50)
    app = celery_app(server.url)
    with app.connection_for_write() as conn:
        assert isinstance(conn.default_channel.client.connection_pool, GuardedConnectionPool)
        app.send_task("cgtest.add", (1, 2), connection=conn, ignore_result=True)
    assert isinstance(app.backend.client.connection_pool, GuardedConnectionPool)
    app.backend.set("celery-task-meta-x", "{}")
    assert app.backend.get("celery-task-meta-x") == b"{}"
    app.close()


def test_celery_result_backend_at_a_full_server_fails_through_the_guard(full_server):
    server, monitor, _crowd, _leak = full_server
    app = celery_app(server.url)
    assert_guarded(*hammer(lambda: app.backend.get("celery-task-meta-x"), monitor))
    app.close()


def test_celery_broker_at_a_full_server_fails_through_the_guard(full_server):
    server, monitor, _crowd, _leak = full_server
    app = celery_app(server.url, backend=False)

    def publish():
        with app.connection_for_write() as conn:
            app.send_task("cgtest.add", (1, 2), connection=conn, ignore_result=True)

    assert_guarded(*hammer(publish, monitor))
    app.close()


def test_the_rq_command_line_connection_class_builds_a_guarded_client(default_binary, start_server):
    """`rq worker --connection-class X` imports X and calls X.from_url(url) (rq.cli.helpers); the same here,
    in-process (rq 3.0's worker process can hang joining its pub/sub thread at exit, guard or not)."""
    rq = pytest.importorskip("rq")
    from rq.utils import import_attribute

    server = start_server(default_binary, maxclients=50)
    cls = import_attribute("connguard.guard.integrations.rq.GuardedRedis")
    conn = cls.from_url(server.url)
    assert isinstance(conn.connection_pool, GuardedConnectionPool)
    q = rq.Queue("cgcli", connection=conn)
    job = q.enqueue("builtins.len", "abcd")
    assert quick_worker(rq, [q], conn).work(burst=True)
    assert job.get_status(refresh=True) == "finished" and job.return_value() == 4
    conn.close()
