"""Run real Python frameworks (Celery, RQ, gunicorn, Django's caches) against a throwaway server and count the
connections they hold at rest and after load, from CLIENT LIST. The measurements behind `plan --deployment`.

Every process started here is stopped by its own PID (process group) when its context ends. The frameworks
are imported only in the child processes, so this module imports none of them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import redis

SETTLE_S = 1.2  # a count unchanged this long is "at rest"
OBSERVER_NAME = "connguard-framework-observer"


@dataclass(frozen=True)
class Measurement:
    """One configuration and the connections it held: at rest (started, idle) and after load (tasks run)."""

    kind: str
    config: dict[str, object]
    at_rest: int
    after_load: int
    commands: dict[str, int] = field(default_factory=dict)  # last command -> clients, after load


def observer(url: str) -> redis.Redis:
    r = redis.Redis.from_url(url, single_connection_client=True, client_name=OBSERVER_NAME)
    r.ping()
    return r


def clients(obs: redis.Redis, exclude_names: tuple[str, ...] = ()) -> list[dict[str, object]]:
    """CLIENT LIST without the observer and named helpers (producers, load generators)."""
    skip = {OBSERVER_NAME, *exclude_names}
    return [c for c in obs.client_list() if c.get("name") not in skip]


def settle(obs: redis.Redis, *, timeout_s: float = 20.0, at_least: int = 1, exclude_names: tuple[str, ...] = ()) -> int:
    """The client count once it has stayed unchanged for SETTLE_S (and reached at_least)."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(clients(obs, exclude_names))
        if n != last:
            last, since = n, time.monotonic()
        elif n >= at_least and time.monotonic() - since >= SETTLE_S:
            return n
        time.sleep(0.1)
    return last


def command_mix(obs: redis.Redis, exclude_names: tuple[str, ...] = ()) -> dict[str, int]:
    mix: dict[str, int] = {}
    for c in clients(obs, exclude_names):
        cmd = str(c.get("cmd", "?"))
        mix[cmd] = mix.get(cmd, 0) + 1
    return dict(sorted(mix.items()))


def with_path(directory: str) -> str:
    """PYTHONPATH with `directory` first and the caller's own kept (so children import this connguard)."""
    return os.pathsep.join(p for p in (directory, os.environ.get("PYTHONPATH", "")) if p)


@contextlib.contextmanager
def child(args: list[str], cwd: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A framework process in its own process group; SIGTERM then SIGKILL to that group on exit."""
    log = open(Path(cwd, f"{Path(args[2] if len(args) > 2 else args[0]).name}-{time.monotonic_ns()}.log"), "wb")
    proc = subprocess.Popen(args, cwd=cwd, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # pool children that outlived their parent
        log.close()


# -- Celery ---------------------------------------------------------------------------------------------

CELERY_APP = '''
import os, time
from celery import Celery
app = Celery("cgapp", broker=os.environ["CG_BROKER"], backend=os.environ.get("CG_BACKEND") or None)
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_hijack_root_logger = False
if os.environ.get("CG_BROKER_POOL_LIMIT"):
    app.conf.broker_pool_limit = int(os.environ["CG_BROKER_POOL_LIMIT"])
if os.environ.get("CG_REDIS_MAX_CONNECTIONS"):
    app.conf.redis_max_connections = int(os.environ["CG_REDIS_MAX_CONNECTIONS"])
app.conf.beat_schedule = {"tick": {"task": "cgapp.add", "schedule": 0.5, "args": (1, 1)}}

@app.task
def add(x, y):
    time.sleep(0.05)
    return x + y
'''

CELERY_PRODUCER = '''
import sys
from cgapp import app, add
n = int(sys.argv[1])
results = [add.delay(i, i) for i in range(n)]
if app.conf.result_backend:
    for r in results:
        r.get(timeout=60)
else:
    import time; time.sleep(0.05 * n / 2 + 1.0)
'''


CELERY_CLIENT = '''
import sys
from cgapp import add
wait = sys.argv[1] == "wait"
for i in range(5):
    r = add.delay(i, i)
    if wait:
        r.get(timeout=60)
print("sent", flush=True)
sys.stdin.readline()  # stays alive, as a web process does, while the parent counts
'''


@dataclass(frozen=True)
class CeleryConfig:
    pool: str = "prefork"  # prefork | threads | solo (gevent/eventlet need their own packages)
    concurrency: int = 4
    result_backend: bool = True
    broker_pool_limit: int | None = None  # None: Celery's default (10)
    redis_max_connections: int | None = None


class CeleryDeployment:
    """A temp dir holding a tiny Celery app (Redis broker, optional Redis result backend) and its processes."""

    def __init__(self, url: str, cfg: CeleryConfig) -> None:
        self.url, self.cfg = url, cfg
        self.dir = tempfile.mkdtemp(prefix="connguard-celery-")
        Path(self.dir, "cgapp.py").write_text(textwrap.dedent(CELERY_APP))
        Path(self.dir, "produce.py").write_text(textwrap.dedent(CELERY_PRODUCER))
        Path(self.dir, "client.py").write_text(textwrap.dedent(CELERY_CLIENT))
        self.env = {"CG_BROKER": f"{url}/0", "CG_BACKEND": f"{url}/1" if cfg.result_backend else "",
                    "PYTHONPATH": with_path(self.dir), "CG_BROKER_POOL_LIMIT": "" if cfg.broker_pool_limit is None else
                    str(cfg.broker_pool_limit), "CG_REDIS_MAX_CONNECTIONS": "" if cfg.redis_max_connections is None
                    else str(cfg.redis_max_connections)}

    def _celery(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "cgapp", *args]

    def worker(self) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
        return child(self._celery("worker", "--pool", self.cfg.pool, "--concurrency", str(self.cfg.concurrency),
                                  "--loglevel", "WARNING", "-n", "cg@%h"), self.dir, self.env)

    def beat(self) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
        return child(self._celery("beat", "--loglevel", "WARNING", "-s", str(Path(self.dir, "beat-schedule"))),
                     self.dir, self.env)

    def flower(self, port: int) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
        return child(self._celery("flower", f"--port={port}", "--address=127.0.0.1"), self.dir, self.env)

    def produce(self, tasks: int) -> None:
        subprocess.run([sys.executable, "produce.py", str(tasks)], cwd=self.dir, env={**os.environ, **self.env},
                       check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def measure_celery_worker(url: str, cfg: CeleryConfig, tasks: int | None = None) -> Measurement:
    """A worker alone: its connections at rest, then after `tasks` tasks (default 4 x concurrency) have run."""
    dep = CeleryDeployment(url, cfg)
    obs = observer(url)
    try:
        with dep.worker():
            rest = settle(obs, at_least=3, timeout_s=40)
            dep.produce(tasks or max(8, 4 * cfg.concurrency))
            after = settle(obs)
            mix = command_mix(obs)
        return Measurement("celery", _as_dict(cfg), rest, after, mix)
    finally:
        obs.close()
        dep.close()


def measure_celery_sidecar(url: str, which: str, result_backend: bool = True) -> Measurement:
    """celery beat or flower (next to one worker, which flower needs to have something to watch): the
    connections the sidecar adds, at rest and after it has run for a few seconds with tasks flowing."""
    from connguard.lab.servers import free_port

    dep = CeleryDeployment(url, CeleryConfig(pool="solo", concurrency=1, result_backend=result_backend))
    obs = observer(url)
    try:
        with dep.worker():
            settle(obs, at_least=3, timeout_s=40)
            dep.produce(2)  # the worker's own result-backend connection opens now, not during the sidecar's count
            base = settle(obs)
            side = dep.beat() if which == "beat" else dep.flower(free_port())
            with side:
                rest = settle(obs, at_least=base + 1, timeout_s=40) - base
                if which == "flower":
                    dep.produce(8)
                else:
                    time.sleep(3.0)  # beat sends a task every 0.5 s
                after = settle(obs) - base
                mix = command_mix(obs)
        return Measurement(f"celery-{which}" if which == "beat" else "flower",
                           {"result_backend": "redis" if result_backend else None}, rest, after, mix)
    finally:
        obs.close()
        dep.close()


def measure_celery_client(url: str, wait: bool, result_backend: bool = True) -> Measurement:
    """A process that sends tasks (a web worker calling .delay()) and, with `wait`, waits on their results:
    the connections it keeps while it lives, next to a warmed solo worker that runs the tasks."""
    dep = CeleryDeployment(url, CeleryConfig(pool="solo", concurrency=1, result_backend=result_backend))
    obs = observer(url)
    try:
        with dep.worker():
            settle(obs, at_least=3, timeout_s=40)
            dep.produce(2)
            base = settle(obs)
            proc = subprocess.Popen([sys.executable, "client.py", "wait" if wait else "send"], cwd=dep.dir,
                                    env={**os.environ, **dep.env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True, start_new_session=True)
            try:
                assert proc.stdout is not None and proc.stdin is not None
                if proc.stdout.readline().strip() != "sent":
                    raise RuntimeError("the Celery client process failed")
                held = settle(obs) - base
                mix = command_mix(obs)
                proc.stdin.write("\n")
                proc.stdin.flush()
                proc.wait(timeout=20)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return Measurement("celery-client", {"waits_for_results": wait,
                                             "result_backend": "redis" if result_backend else None}, held, held, mix)
    finally:
        obs.close()
        dep.close()


def _as_dict(cfg: object) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(cfg)  # type: ignore[call-overload]


# -- RQ -------------------------------------------------------------------------------------------------

RQ_JOBS = '''
import time
def work(i):
    time.sleep(0.05)
    return i
'''

RQ_PRODUCER = '''
import sys, time
import redis
from rq import Queue
from rqjobs import work
conn = redis.Redis.from_url(sys.argv[1])
q = Queue(connection=conn)
jobs = [q.enqueue(work, i) for i in range(int(sys.argv[2]))]
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not all(j.get_status(refresh=True) == "finished" for j in jobs):
    time.sleep(0.1)
'''


def measure_rq_worker(url: str, jobs: int = 10) -> Measurement:
    """One `rq worker` (forking a work horse per job): at rest, then after `jobs` jobs."""
    wd = tempfile.mkdtemp(prefix="connguard-rq-")
    Path(wd, "rqjobs.py").write_text(textwrap.dedent(RQ_JOBS))
    Path(wd, "produce.py").write_text(textwrap.dedent(RQ_PRODUCER))
    env = {"PYTHONPATH": with_path(wd)}
    obs = observer(url)
    try:
        with child([sys.executable, "-m", "rq.cli", "worker", "--url", url, "--logging_level", "WARNING"], wd, env):
            rest = settle(obs, at_least=1, timeout_s=40)
            subprocess.run([sys.executable, "produce.py", url, str(jobs)], cwd=wd, env={**os.environ, **env},
                           check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            after = settle(obs)
            mix = command_mix(obs)
        return Measurement("rq", {}, rest, after, mix)
    finally:
        obs.close()
        import shutil

        shutil.rmtree(wd, ignore_errors=True)


# -- gunicorn with a redis-py pool ----------------------------------------------------------------------

WSGI_APP = '''
import os, redis
# the usual module-level client: one pool per worker process (gunicorn forks, then each worker imports)
r = redis.Redis.from_url(os.environ["CG_URL"], max_connections=int(os.environ["CG_MAX_CONNECTIONS"]))
def app(environ, start_response):
    try:
        r.blpop("cg:nothing", timeout=0.3)  # a request inside a slow Redis call: it holds a pooled connection
        status = "200 OK"
    except redis.exceptions.ConnectionError:
        status = "503 Service Unavailable"  # pool exhausted (threads > max_connections)
    start_response(status, [("Content-Type", "text/plain")])
    return [b"ok"]
'''


@dataclass(frozen=True)
class WebConfig:
    workers: int = 2
    threads: int = 4
    max_connections: int = 10


def _http_load(port: int, concurrent: int, duration_s: float) -> None:
    import threading
    import urllib.request

    stop = time.monotonic() + duration_s

    def hammer() -> None:
        while time.monotonic() < stop:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()

    threads = [threading.Thread(target=hammer) for _ in range(concurrent)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _wait_http(port: int, timeout_s: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        time.sleep(0.1)
    raise TimeoutError(f"no HTTP server on port {port}")


def measure_gunicorn(url: str, cfg: WebConfig) -> Measurement:
    """gunicorn (sync or gthread workers) with a module-level redis-py client: at rest, and after every
    worker thread has been inside a Redis call at once (2 x workers x threads concurrent requests)."""
    from connguard.lab.servers import free_port

    wd = tempfile.mkdtemp(prefix="connguard-gunicorn-")
    Path(wd, "wsgiapp.py").write_text(textwrap.dedent(WSGI_APP))
    env = {"PYTHONPATH": with_path(wd), "CG_URL": url, "CG_MAX_CONNECTIONS": str(cfg.max_connections)}
    port = free_port()
    obs = observer(url)
    try:
        with child([sys.executable, "-m", "gunicorn", "--workers", str(cfg.workers), "--threads", str(cfg.threads),
                    "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "wsgiapp:app"], wd, env):
            _wait_http(port)
            rest = settle(obs, at_least=0, timeout_s=10)
            _http_load(port, 2 * cfg.workers * cfg.threads, 2.0)
            after = settle(obs)
            mix = command_mix(obs)
        return Measurement("gunicorn", _as_dict(cfg), rest, after, mix)
    finally:
        obs.close()
        import shutil

        shutil.rmtree(wd, ignore_errors=True)


# -- Django's cache (built-in RedisCache and django-redis) ----------------------------------------------

DJANGO_CACHE = '''
import sys, threading, time
import django
from django.conf import settings
backend, url, threads, max_conn = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if backend == "django-redis":
    cache = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url,
             "OPTIONS": {"CONNECTION_POOL_KWARGS": {"max_connections": max_conn}}}
else:
    cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url,
             "OPTIONS": {"max_connections": max_conn}}
settings.configure(CACHES={"default": cache})
django.setup()
from django.core.cache import cache as c
def raw():
    return c.client.get_client(write=True) if backend == "django-redis" else c._cache.get_client(write=True)
print("ready", flush=True)
sys.stdin.readline()  # the parent has counted "at rest"
def request():
    c.set("k", "v"); c.get("k")
    raw().blpop("cg:nothing", timeout=0.3)  # a request inside a slow cache call
ts = [threading.Thread(target=request) for _ in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print("loaded", flush=True)
sys.stdin.readline()
'''


@dataclass(frozen=True)
class DjangoCacheConfig:
    backend: str = "django"  # django (django.core.cache.backends.redis.RedisCache) | django-redis
    threads: int = 4  # request threads in one process, all inside a cache call at once
    max_connections: int = 50


def measure_django_cache(url: str, cfg: DjangoCacheConfig) -> Measurement:
    wd = tempfile.mkdtemp(prefix="connguard-django-")
    Path(wd, "djcache.py").write_text(textwrap.dedent(DJANGO_CACHE))
    obs = observer(url)
    proc = subprocess.Popen([sys.executable, "djcache.py", cfg.backend, f"{url}/2", str(cfg.threads),
                             str(cfg.max_connections)], cwd=wd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"django cache process failed to start ({cfg})")
        rest = len(clients(obs))
        proc.stdin.write("\n"); proc.stdin.flush()
        if proc.stdout.readline().strip() != "loaded":
            raise RuntimeError(f"django cache process failed under load ({cfg})")
        after = len(clients(obs))
        mix = command_mix(obs)
        proc.stdin.write("\n"); proc.stdin.flush()
        proc.wait(timeout=10)
        return Measurement("django-cache", _as_dict(cfg), rest, after, mix)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        obs.close()
        import shutil

        shutil.rmtree(wd, ignore_errors=True)
