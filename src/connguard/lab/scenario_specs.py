"""What each lab scenario does to a server: its own server's settings and the load that reproduces the cause."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import redis

from connguard.errors import LabError
from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerProcess
from connguard.lab.workloads import Leaker, Pressure, Rotator, Worker, publish

# The idle threshold suggested to the doctor for scenarios whose point is idle time: lab connections are
# seconds old, not the hours of a production leak.
LAB_IDLE_THRESHOLD_S = 2


@dataclass
class Setup:
    """Everything a scenario builder may use; builders append their threads to `workers`."""

    host: str
    port: int
    password: str | None
    maxclients: int
    used: int
    basis: int  # maxclients, capped, to size loads on big external servers
    scale: float
    crowd: Crowd
    workers: list[Worker]
    log: Callable[[str], None]
    max_duration_s: float
    server: ServerProcess | None
    stack: contextlib.ExitStack
    replicas: list[ServerProcess] = field(default_factory=list)

    def n(self, fraction: float, minimum: int = 1) -> int:
        """A count as a fraction of the size basis."""
        return max(minimum, int(self.basis * fraction))

    def start(self, worker: Worker) -> Worker:
        self.workers.append(worker)
        worker.start()
        return worker


@dataclass(frozen=True)
class Built:
    summary: str
    offenders: tuple[str, ...]
    doctor_flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Spec:
    build: Callable[[Setup], Built]
    maxclients: int
    nofile: int | None = None
    own_server: str = ""  # why it cannot run against --url; empty when it can
    fills: bool = False  # fills the server to maxclients
    extra_args: tuple[str, ...] = ()
    scales: bool = True  # whether `scale` shrinks the server's maxclients too

    def server_kwargs(self, scale: float) -> dict[str, Any]:
        maxclients = max(12, round(self.maxclients * scale)) if self.scales else self.maxclients
        return {"maxclients": maxclients, "nofile": self.nofile, "extra_args": self.extra_args}


def _active_workers(s: Setup, count: int, name: str = "api") -> None:
    for i, source in enumerate(("127.0.0.10", "127.0.0.11")):
        share = count // 2 + (i < count % 2)
        if share:
            s.crowd.open(share, source=source, kind="active", name=name, lib_name="redis-py")


def connection_leak(s: Setup) -> Built:
    offender = "127.0.0.66"
    active = s.n(0.06, 2)
    initial = s.n(0.12, 3)
    cap = max(initial + 4, int(s.basis * 0.8) - active - s.used)
    _active_workers(s, active)
    s.crowd.open(initial, source=offender, name="orders-worker", lib_name="redis-py")
    s.log(f"{active} active clients from 127.0.0.10-11 PING every 0.5 s; {offender} ('orders-worker') opened {initial} "
          f"connections it never uses, and leaks one more every 0.75 s (up to {cap})")
    s.start(Leaker(s.crowd, offender, name="orders-worker", every_s=0.75, cap=cap - initial,
                   max_duration_s=s.max_duration_s))
    # Let the first leaked connections go idle past the suggested threshold before anyone looks.
    time.sleep(LAB_IDLE_THRESHOLD_S + 1.2)
    return Built(f"a connection leak from {offender}", (offender,),
                 ("--idle-threshold", str(LAB_IDLE_THRESHOLD_S)))


def pool_oversize(s: Setup) -> Built:
    hosts = [f"127.0.0.{21 + i}" for i in range(4)]
    pool = max(3, int((s.basis * 0.85 - s.used) / len(hosts)))
    for host in hosts:  # every instance starts its fixed pool at the same moment, as after a deploy
        busy = max(1, pool // 4)
        s.crowd.open(busy, source=host, kind="active", name="checkout-api", lib_name="redis-py")
        s.crowd.open(pool - busy, source=host, name="checkout-api", lib_name="redis-py")
    s.log(f"{len(hosts)} hosts ({hosts[0]}-{hosts[-1].rsplit('.', 1)[1]}, 'checkout-api') each opened a pool of {pool} "
          f"= {pool * len(hosts)} connections of {s.maxclients}; a quarter of each pool is busy")
    time.sleep(LAB_IDLE_THRESHOLD_S + 1.2)  # the unused part of each pool goes idle, as in a real oversized pool
    return Built(f"{len(hosts)} fixed pools of {pool} adding up to near the limit", tuple(hosts),
                 ("--idle-threshold", str(LAB_IDLE_THRESHOLD_S)))


def serverless_fanout(s: Setup) -> Built:
    count = s.n(0.8, 10)
    rotator = Rotator(s.crowd, first_index=0, subnet=1, name="lambda-handler", every_s=0.2,
                      max_duration_s=s.max_duration_s)
    for _ in range(count):
        rotator.add()
    hosts = tuple(g.source for g in rotator.live)
    s.log(f"{len(hosts)} distinct hosts (127.1.0.1 ...) hold one connection each ('lambda-handler'); "
          f"every 0.2 s one goes away and a new host arrives")
    s.start(rotator)
    return Built(f"{len(hosts)} short-lived sources with one connection each", hosts)


def _pressure(s: Setup, *, sources: list[str], name: str, **kwargs: Any) -> Pressure:
    pressure = Pressure(s.host, s.port, password=s.password, sources=sources, name=name,
                        max_duration_s=s.max_duration_s, **kwargs)
    s.workers.append(pressure)  # registered before filling, so it is closed even if filling is interrupted
    held = pressure.fill(s.maxclients - s.used + 5)
    if held == 0:
        raise LabError("could not open a single connection to fill the server")
    return pressure


def retry_storm(s: Setup) -> Built:
    sources = [f"127.0.0.{30 + i}" for i in range(8)]
    churn = max(3, s.maxclients // 8)
    pressure = _pressure(s, sources=sources, name="orders-api", attempts_per_s=100, hammer_s=0.6, churn=churn,
                         gap_slots=2, gap_s=0.4, active=True)
    s.log(f"filled the server with {len(pressure.held)} busy connections from {sources[0]}-37 ('orders-api'); its "
          f"clients now reconnect at once on every refusal (up to 100 attempts/s) and {churn} connections drop and "
          f"reconnect every second")
    pressure.start()
    time.sleep(1.0)  # one storm cycle before anyone looks, so the counters already move
    return Built("a retry storm against a full server", tuple(sources))


def maxclients_too_low(s: Setup) -> Built:
    sources = [f"127.0.0.{50 + i}" for i in range(4)]
    pressure = _pressure(s, sources=sources, name="web", attempts_per_s=4, hammer_s=0.6, churn=2,
                         gap_slots=1, gap_s=0.5, active=True)
    s.log(f"{len(pressure.held)} active clients from {sources[0]}-53 ('web', a PING every second) fill the server; "
          f"their legitimate surplus is refused about twice a second")
    pressure.start()
    time.sleep(1.0)
    return Built("active, legitimate traffic a little larger than maxclients", tuple(sources))


def fd_limit(s: Setup) -> Built:
    assert s.server is not None
    _active_workers(s, 4)
    log_line = next((line for line in s.server.log_text().splitlines() if "maxclients has been reduced" in line), "")
    s.log(f"the server asked for maxclients 10000 under an fd limit of {s.server.nofile}; it runs with {s.maxclients}"
          + (f" (log: {log_line.split('# ', 1)[-1].strip()})" if log_line else ""))
    return Built(f"maxclients lowered to {s.maxclients} by the fd limit {s.server.nofile}", ())


def internal_connections(s: Setup) -> Built:
    assert s.server is not None
    count = max(1, round(5 * s.scale))
    for _ in range(count):
        replica = ServerProcess(s.server.binary, replicaof=("127.0.0.1", s.port))
        s.stack.callback(replica.stop)
        s.replicas.append(replica.start())
    _wait_for_replicas(s, count)
    # Near the limit: internal links are judged against headroom, so far from it they are only a note.
    active = max(3, int(s.maxclients * 0.82) - count - s.used)
    _active_workers(s, active)
    s.log(f"{count} real replicas are attached, each taking one of the {s.maxclients} slots; {active} normal clients "
          "do work, so the server runs near its limit")
    return Built(f"{count} replicas taking {count} of {s.maxclients} slots", ("127.0.0.1",))


def _wait_for_replicas(s: Setup, count: int, timeout_s: float = 15.0) -> None:
    client = redis.Redis(host=s.host, port=s.port, socket_timeout=5)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if int(client.info("replication").get("connected_slaves", 0)) >= count:
                return
            time.sleep(0.1)
    finally:
        client.close()
    raise LabError(f"{count} replicas did not attach within {timeout_s:.0f}s")


def blocked_clients(s: Setup) -> Built:
    offender = "127.0.0.77"
    blocked = s.n(0.6, 3)
    _active_workers(s, 4)
    s.crowd.open(blocked, source=offender, kind="blocked", name="queue-consumer", lib_name="redis-py")
    s.log(f"{offender} ('queue-consumer') holds {blocked} connections in BLPOP on an empty key; 4 clients do work")
    return Built(f"{blocked} clients blocked in BLPOP", (offender,))


SLOW_SUBSCRIBER = "127.0.0.88"
# Bounded: 2,500 messages of 8 KB (about 20 MB). Under the default pub/sub hard limit (32 MB), so a server
# with its defaults keeps the subscriber for the soft limit's 60 s; the lab's own server has no limit at all.
BLOAT_MESSAGES, BLOAT_MESSAGE_BYTES = 2500, 8 * 1024


def output_buffer_bloat(s: Setup) -> Built:
    """A subscriber that never reads while a publisher pushes large messages: its output buffer grows."""
    if s.server is not None:  # the misconfiguration that lets it grow without bound; never done to --url
        client = redis.Redis(host=s.host, port=s.port, socket_timeout=5)
        try:
            client.config_set("client-output-buffer-limit", "pubsub 0 0 0")
        finally:
            client.close()
    _active_workers(s, 4)
    channel = f"connguard:lab:{SLOW_SUBSCRIBER}"  # what Crowd's pub/sub clients subscribe to
    s.crowd.open(1, source=SLOW_SUBSCRIBER, kind="pubsub", name="price-feed")
    s.crowd.open(1, source="127.0.0.89", kind="pubsub", name="audit-feed")  # a quiet channel: no bloat
    reached = publish(s.host, s.port, channel, password=s.password, count=BLOAT_MESSAGES, size=BLOAT_MESSAGE_BYTES)
    s.log(f"{SLOW_SUBSCRIBER} ('price-feed') subscribed to {channel} and never reads; {BLOAT_MESSAGES} messages of "
          f"{BLOAT_MESSAGE_BYTES // 1024} KB were published to it ({reached} subscriber reached), so about "
          f"{BLOAT_MESSAGES * BLOAT_MESSAGE_BYTES // 2 ** 20} MB wait in its output buffer")
    return Built(f"a slow subscriber on {SLOW_SUBSCRIBER} holding its messages in an output buffer",
                 (SLOW_SUBSCRIBER,))


SPECS: dict[str, Spec] = {
    "connection_leak": Spec(connection_leak, maxclients=100),
    "pool_oversize": Spec(pool_oversize, maxclients=100),
    "serverless_fanout": Spec(serverless_fanout, maxclients=128),
    "retry_storm": Spec(retry_storm, maxclients=64, fills=True),
    "maxclients_too_low": Spec(maxclients_too_low, maxclients=64, fills=True),
    "fd_limit": Spec(fd_limit, maxclients=10000, nofile=256, own_server="started under a low fd limit",
                   scales=False),
    "internal_connections": Spec(internal_connections, maxclients=16, own_server="with real replicas", scales=False,
                                 extra_args=("--repl-diskless-sync-delay", "0")),
    "blocked_clients": Spec(blocked_clients, maxclients=100),
    "output_buffer_bloat": Spec(output_buffer_bloat, maxclients=100),
}
from connguard.lab.celery import MAXCLIENTS as _CELERY_MAXCLIENTS, celery_pile  # noqa: E402 (it imports Built, Setup)
SPECS["celery"] = Spec(celery_pile, maxclients=_CELERY_MAXCLIENTS, own_server="a real Celery worker", scales=False)
