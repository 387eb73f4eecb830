"""A deployment described by its framework components (Celery, beat, flower, gunicorn/uwsgi, Django's cache,
RQ, plain redis-py), the connections each takes, and the plan for it. Pure.

Every per-kind formula is a measurement, not a guess: tools/measure_frameworks.py runs the real frameworks
against a real server and docs/frameworks.md records the table (Celery 5.7, kombu 5.7, redis-py 8, Redis 7.0).
tests/test_frameworks_plan.py keeps each formula within 20% of every recorded measurement."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from connguard.analysis.capacity import CRITICAL_RATIO as CRITICAL_LINE
from connguard.analysis.capacity import WARNING_RATIO as WARNING_LINE
from connguard.remedy.limits import DEFAULT_RESERVE
from connguard.remedy.plan import (
    DEFAULT_FD_MARGIN, MAX_COUNT, Part, effective_maxclients, internal_parts,
    recommended_settings, status_of,
)

from connguard.contract import PLAN_DEPLOYMENT_SCHEMA as SCHEMA

# -- measured constants (docs/frameworks.md) -------------------------------------------------------------
# A Celery worker's broker side, whatever its pool and concurrency (1..16 measured): the consumer's BRPOP,
# the pidbox and event fan-outs (2x PSUBSCRIBE), their publishers (2x PUBLISH), 2x PING (heartbeat/gossip
# producers), 2x EVALSHA (kombu's ack/restore scripts) and one EXEC: 10 connections.
CELERY_WORKER_BROKER = 10
# celery beat: 2 broker connections (its producer and a heartbeat PING), +1 with a Redis result backend
# (the result consumer that apply_async sets up, then leaves unsubscribed).
CELERY_BEAT = 2
CELERY_BEAT_RESULT_BACKEND = 1
# flower: its event consumer, a broker pool for inspect/broadcast calls and their reply queues: 17-21
# measured across runs (it opens and keeps more as its periodic inspect calls overlap); 19 is the middle.
FLOWER = 19
# A process that sends tasks (a web worker calling .delay()): its producer (LPUSH) and a heartbeat PING, 2;
# +1 when a Redis result backend is configured (apply_async starts the result consumer even if nobody
# waits); +1 more once it has waited on a result (AsyncResult.get(): GET, then the consumer's SUBSCRIBE).
CELERY_CLIENT = 2
# `rq worker`: BLMOVE (BRPOP before RQ 2) on its queues plus a SUBSCRIBE to rq:pubsub:<worker> for commands;
# the forked work horse uses the parent's connection and opens none of its own.
RQ_WORKER = 2



@dataclass(frozen=True)
class Component:
    """One [[component]]: `instances` copies (hosts, pods, dynos) of one kind of process group."""

    name: str
    kind: str
    instances: int = 1
    # celery
    pool: str = "prefork"
    concurrency: int = 0  # 0: the framework's default (the number of CPUs for Celery; 1 here, say it)
    broker: str = "redis"
    result_backend: str | None = None
    broker_pool_limit: int = 10
    redis_max_connections: int | None = None
    # celery-client
    waits_for_results: bool = False
    # gunicorn / uwsgi / django-cache / redis-py / rq / celery-client
    workers: int = 1
    threads: int = 1
    max_connections: int | None = None
    backend: str = "django"
    processes: int = 1
    pool_size: int = 10


@dataclass(frozen=True)
class ComponentPlan:
    name: str
    kind: str
    instances: int
    per_instance: int
    connections: int
    how: str
    knob: str | None  # the per-instance setting that scales this component's connections
    knob_value: int | None
    largest_safe_knob: int | None  # the largest value of `knob` that keeps the whole deployment under the line
    largest_safe_instances: int  # the most instances of this component, the others unchanged
    measured: bool  # the formula is backed by a measurement of this configuration's kind and pool
    notes: tuple[str, ...] = ()


def _min_cap(n: int, cap: int | None) -> int:
    return n if cap is None else min(n, cap)


def celery_worker(c: Component) -> tuple[int, str, bool]:
    conc = c.concurrency or 1
    backend = 0
    how = f"{CELERY_WORKER_BROKER} broker connections"
    if c.result_backend == "redis":
        # Each prefork child opens its own result-backend connection when it stores its first result; with
        # threads each thread gets its own client too (measured: threads 8 with redis_max_connections 4 held
        # 8), so redis_max_connections caps one pool, not the worker. Solo has one.
        backend = 1 if c.pool == "solo" else conc
        how += f" + {backend} result-backend connection(s) ({c.pool}, concurrency {conc})"
    return CELERY_WORKER_BROKER + backend, how, c.pool in ("prefork", "threads", "solo")


def celery_beat(c: Component) -> tuple[int, str, bool]:
    if c.result_backend == "redis":
        return CELERY_BEAT + CELERY_BEAT_RESULT_BACKEND, f"{CELERY_BEAT} broker + 1 result-backend connection", True
    return CELERY_BEAT, f"{CELERY_BEAT} broker connections", True


def celery_client(c: Component) -> tuple[int, str, bool]:
    each = CELERY_CLIENT + (c.result_backend == "redis") + (c.result_backend == "redis" and c.waits_for_results)
    return c.processes * each, f"{c.processes} process(es) x {each} (producer{', result consumer' if each > 2 else ''}" \
        f"{', result GET' if each > 3 else ''})", True


def web_workers(c: Component) -> tuple[int, str, bool]:
    per = _min_cap(c.threads, c.max_connections)
    n = c.workers * per
    return n, f"{c.workers} worker(s) x min(threads {c.threads}, max_connections {c.max_connections})", c.kind == "gunicorn"


def django_cache(c: Component) -> tuple[int, str, bool]:
    cap = c.max_connections
    per = _min_cap(c.threads, cap)
    return (c.workers * per, f"{c.workers} process(es) x min(threads {c.threads}, max_connections {cap}) "
            f"({'django-redis' if c.backend == 'django-redis' else 'RedisCache'})", True)


def redis_py(c: Component) -> tuple[int, str, bool]:
    return c.processes * c.pool_size, f"{c.processes} process(es) x pool {c.pool_size}", True


FORMULAS: dict[str, tuple[Callable[[Component], tuple[int, str, bool]], str | None]] = {
    "celery": (celery_worker, "concurrency"),
    "celery-beat": (celery_beat, None),
    "celery-client": (celery_client, "processes"),
    "flower": (lambda c: (FLOWER, "event consumer, inspect/broadcast pool and reply queues (17-21 measured)", True), None),
    "gunicorn": (web_workers, "workers"),
    "uwsgi": (web_workers, "workers"),
    "django-cache": (django_cache, "workers"),
    "rq": (lambda c: (c.workers * RQ_WORKER, f"{c.workers} worker(s) x {RQ_WORKER} (BLMOVE + SUBSCRIBE)", True),
           "workers"),
    "redis-py": (redis_py, "pool_size"),
}
KINDS = tuple(FORMULAS)

def per_instance(c: Component) -> tuple[int, str, bool]:
    return FORMULAS[c.kind][0](c)


@dataclass(frozen=True)
class ServerSide:
    maxclients: int = 10000
    fd_limit: int | None = None
    replicas: int = 0
    sentinels: int = 0
    cluster_nodes: int = 0
    reserve: int = DEFAULT_RESERVE
    fd_margin: int = DEFAULT_FD_MARGIN


@dataclass(frozen=True)
class Deployment:
    components: tuple[Component, ...]
    server: ServerSide = field(default_factory=ServerSide)


# -- the plan --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeploymentPlan:
    components: tuple[ComponentPlan, ...]
    internal: tuple[Part, ...]  # replicas, Sentinel links, cluster bus, reserve
    total: int
    maxclients: int
    maxclients_requested: int
    ratio: float
    status: str
    fits: bool
    recommended_maxclients: int
    recommended_fd_limit: int
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        body = asdict(self)
        return {"schema": SCHEMA, **body, "warning_line": WARNING_LINE, "critical_line": CRITICAL_LINE}


def _largest(fits: Callable[[int], bool], start: int, cap: int = MAX_COUNT) -> int:
    """The largest v in [0, cap] with fits(v), fits monotone decreasing; 0 when even 1 does not fit."""
    if not fits(1):
        return 0
    lo, hi = 1, max(1, start)
    while hi < cap and fits(hi):
        lo, hi = hi, min(cap, hi * 2)
    if fits(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def plan_deployment(dep: Deployment) -> DeploymentPlan:
    s = dep.server
    internal = internal_parts(replicas=s.replicas, sentinels=s.sentinels, cluster_nodes=s.cluster_nodes, reserve=s.reserve)
    fixed = sum(p.connections for p in internal)
    effective, notes = effective_maxclients(s.maxclients, s.fd_limit)
    line = WARNING_LINE * effective
    per = {c.name: per_instance(c) for c in dep.components}
    total = fixed + sum(c.instances * per[c.name][0] for c in dep.components)

    plans: list[ComponentPlan] = []
    for c in dep.components:
        n, how, measured = per[c.name]
        others = total - c.instances * n
        knob = FORMULAS[c.kind][1]
        if knob == "concurrency" and not c.concurrency:
            notes.append(f"{c.name}: no concurrency given; planned as 1 (Celery's default is the number of CPUs)")
        knob_value = getattr(c, knob) or 1 if knob else None
        largest_knob = None
        if knob:
            def fits_knob(v: int, c: Component = c, knob: str = knob, others: int = others) -> bool:
                return others + c.instances * per_instance(_with(c, knob, v))[0] < line
            largest_knob = _largest(fits_knob, knob_value or 1, 100_000)
            if knob == "concurrency" and c.result_backend != "redis":
                largest_knob = None  # concurrency does not change a worker's count without a result backend
        largest_inst = math.ceil((line - others) / n) - 1 if n and line > others else (MAX_COUNT if not n else 0)
        cnotes: list[str] = []
        if not measured:
            cnotes.append(f"{c.kind} with pool {c.pool} is planned like threads; it was not measured here")
        if c.kind == "celery" and c.result_backend == "redis" and c.pool == "prefork":
            cnotes.append("each prefork child holds its own result-backend connection: concurrency x instances of "
                          "them; ignore_result=True on tasks whose result nobody reads avoids them")
        if c.kind in ("gunicorn", "uwsgi") and c.max_connections is not None and c.threads > c.max_connections:
            cnotes.append(f"threads {c.threads} > max_connections {c.max_connections}: redis-py raises "
                          "MaxConnectionsError under load; use a BlockingConnectionPool")
        plans.append(ComponentPlan(c.name, c.kind, c.instances, n, c.instances * n, how, knob, knob_value,
                                   largest_knob, max(0, min(largest_inst, MAX_COUNT)), measured, tuple(cnotes)))

    ratio = total / effective
    status = status_of(total, effective)
    recommended, fd_needed = recommended_settings(total, s.maxclients, s.fd_limit, s.fd_margin, notes)
    return DeploymentPlan(tuple(plans), internal, total, effective, s.maxclients, round(ratio, 4), status,
                          status == "ok", recommended, fd_needed, tuple(notes))


def _with(c: Component, knob: str, value: int) -> Component:
    from dataclasses import replace

    return replace(c, **{knob: value})
