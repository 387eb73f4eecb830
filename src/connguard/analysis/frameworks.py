"""Which framework holds a host's connections, from what CLIENT LIST shows (last command, flags, sub/psub
counts, names). Pure and advisory: it names things for people and never changes what is protected or killed.

CLIENT LIST shows no channel, pattern or key names, only counts and the last command, so each shape below is
the one captured from the real framework (tests/testdata/frameworks/, tools/capture_framework_client_lists.py):

- Celery worker (kombu's Redis transport): a BRPOP consumer, two PSUBSCRIBE clients (the pidbox and
  event fan-outs, kombu subscribes with patterns), PUBLISH, PING and EVALSHA clients.
- Celery result backend, worker side: one connection per prefork child (or thread) whose last command is
  EXEC (the result is stored as MULTI/SET/PUBLISH/EXEC), next to a worker.
- Celery result backend, caller side: a process that called AsyncResult.get() keeps its result consumer,
  SUBSCRIBEd to celery-task-meta-<id> while it waits and left at UNSUBSCRIBE after, beside the LPUSH that
  sent the task.
- RQ worker: a BLMOVE (RQ 2+) or BRPOP plus a SUBSCRIBE client named with the worker's name.
- Django's cache and gunicorn's redis-py pools are plain redis-py connections: nothing sets them apart
  unless the application names them (a client name containing "django" is recognized).

A blocking pop is read by its last command, blocked or not: kombu re-sends BRPOP every `brpop_timeout` (1 s), and
an RQ worker's pop is not blocked while it runs a job, so a look between the two reads `cmd=brpop` without `b`."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from connguard.probe.model import ClientRecord

RQ_NAME = re.compile(r"^[0-9a-f]{32}$")  # rq's default worker name: uuid4().hex
RESULT_CONSUMER_CMDS = frozenset({"subscribe", "unsubscribe"})
RQ_BLOCKING = frozenset({"blmove", "brpop", "brpoplpush", "blmpop"})


@dataclass(frozen=True)
class Recognized:
    """One host's connections that look like one framework role, and why we think so."""

    host: str
    framework: str  # celery | rq | django
    role: str  # worker | result-backend | result-consumer | cache
    connections: int
    evidence: str  # the CLIENT LIST shape, e.g. "BRPOP 1, PSUBSCRIBE 2, EVALSHA 2"
    advice: str

    @property
    def line(self) -> str:
        return f"{self.host}: {self.connections} connection{'s' if self.connections != 1 else ''} look like " \
               f"{LABELS[(self.framework, self.role)]} ({self.evidence}); {self.advice}"

    def to_dict(self) -> dict[str, object]:
        return {"host": self.host, "framework": self.framework, "role": self.role,
                "connections": self.connections, "evidence": self.evidence, "summary": self.line}


LABELS = {
    ("celery", "worker"): "Celery workers' broker connections",
    ("celery", "result-backend"): "Celery's Redis result backend in the workers",
    ("celery", "result-consumer"): "Celery's Redis result backend in callers waiting on results",
    ("rq", "worker"): "RQ workers",
    ("django", "cache"): "Django's cache",
}
ADVICE = {
    ("celery", "worker"): "about 10 per worker whatever its concurrency (docs/frameworks.md); plan with "
                          "`connguard plan --deployment`",
    ("celery", "result-backend"): "each prefork child (or thread) holds one, redis_max_connections does not cap "
                                  "them; set ignore_result=True (or task_ignore_result) where nobody reads "
                                  "results, see result_backend_thread_safe and redis_max_connections",
    ("celery", "result-consumer"): "every process that calls AsyncResult.get() keeps one subscribed connection; "
                                   "avoid .get() in web requests or use a smaller web worker count",
    ("rq", "worker"): "two per `rq worker` (its queue BLMOVE and its command channel); the work horse adds none",
    ("django", "cache"): "one per concurrently active thread per process, up to max_connections",
}


def _shape(counts: Counter[str]) -> str:
    return ", ".join(f"{cmd.upper()} {n}" for cmd, n in counts.most_common())


def recognize_host(host: str, recs: Sequence[ClientRecord]) -> tuple[Recognized, ...]:
    """The framework roles among one host's connections (none when nothing matches a captured shape)."""
    found: list[Recognized] = []
    psub = [r for r in recs if r.psub and r.cmd == "psubscribe"]
    brpop = [r for r in recs if r.cmd == "brpop"]  # blocked, or between kombu's 1 s polls
    if psub and brpop:  # kombu's consumer and its fan-outs: a Celery worker (or flower/beat's event side)
        worker_cmds = {"brpop", "psubscribe", "evalsha", "publish", "ping"}
        mine = [r for r in recs if r.cmd in worker_cmds and not r.sub]
        found.append(Recognized(host, "celery", "worker", len(mine), _shape(Counter(r.cmd for r in mine)),
                                ADVICE[("celery", "worker")]))
        broker_db = Counter(r.db for r in brpop).most_common(1)[0][0]
        stores = [r for r in recs if r.cmd == "exec" and r.db != broker_db]
        if not stores:  # broker and backend on one db: the worker's own broker EXEC is one of them
            stores = [r for r in recs if r.cmd == "exec"][1:]
        if stores:
            found.append(Recognized(host, "celery", "result-backend", len(stores),
                                    f"EXEC {len(stores)} on db {stores[0].db}: MULTI/SET/PUBLISH/EXEC stores",
                                    ADVICE[("celery", "result-backend")]))
    consumers = [r for r in recs if r.cmd in RESULT_CONSUMER_CMDS and not r.psub and not RQ_NAME.match(r.name or "")]
    senders = [r for r in recs if r.cmd == "lpush"]
    if consumers and senders:
        found.append(Recognized(host, "celery", "result-consumer", len(consumers),
                                f"SUBSCRIBE/UNSUBSCRIBE {len(consumers)} beside LPUSH {len(senders)}: "
                                "celery-task-meta-<id> result consumers", ADVICE[("celery", "result-consumer")]))
    rq_named = {r.name for r in recs if r.sub and RQ_NAME.match(r.name or "")}
    if rq_named and any(r.cmd in RQ_BLOCKING for r in recs):
        rq = [r for r in recs if r.name in rq_named or r.cmd in RQ_BLOCKING]
        found.append(Recognized(host, "rq", "worker", len(rq), _shape(Counter(r.cmd for r in rq)) +
                                " (SUBSCRIBE named with the worker's name)", ADVICE[("rq", "worker")]))
    django = [r for r in recs if "django" in (r.name or "").lower()]
    if django:
        found.append(Recognized(host, "django", "cache", len(django), f"client name {django[0].name!r}",
                                ADVICE[("django", "cache")]))
    return tuple(found)


def recognize(records: Iterable[ClientRecord]) -> tuple[Recognized, ...]:
    """Every host's framework roles, busiest first."""
    by_host: dict[str, list[ClientRecord]] = defaultdict(list)
    for r in records:
        by_host[r.host].append(r)
    found = [x for host, recs in by_host.items() if _may_match(recs) for x in recognize_host(host, recs)]
    return tuple(sorted(found, key=lambda x: (-x.connections, x.host, x.role)))


TRIGGERS = frozenset({"psubscribe", "lpush", *RQ_BLOCKING})  # every shape above needs one of these, or a name


def _may_match(recs: Sequence[ClientRecord]) -> bool:
    """One cheap pass: most hosts (at 50,000 clients, nearly all) have none of the trigger commands."""
    return any(r.cmd in TRIGGERS or (r.name and "django" in r.name.lower()) for r in recs)


def labels(recs: Sequence[ClientRecord]) -> tuple[str, ...]:
    """Short names for one host's recognized roles, for its row in the sources table. One cheap pass first:
    a host with none of the trigger commands or names (most hosts, at 50,000 clients) costs no more."""
    if not _may_match(recs):
        return ()
    return tuple(f"{x.framework} {x.role}" for x in recognize_host("", recs))
