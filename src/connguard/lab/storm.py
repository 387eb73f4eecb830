"""The storm experiment: a leak fills the server, workers keep asking, and each client style is measured."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from connguard.analysis.capacity import WARNING_RATIO as WARNING_LINE
from connguard.guard import guarded_client
from connguard.guard.registry import REGISTRY
from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerBinary, ServerProcess, default_binary
from connguard.probe.sampler import Sampler
from connguard.target import Target, parse_target
from connguard.contract import STORM_SCHEMA

SCHEMA = STORM_SCHEMA
ARMS = ("redis-py", "immediate", "guard")
ARM_LABELS = {
    "redis-py": "redis-py defaults (10 retries, jittered backoff)",
    "immediate": "reconnect at once (no backoff)",
    "guard": "connguard guard",
}
LEAK_SOURCE = "127.0.0.13"  # the leaking "host", a loopback alias


# -- results ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Second:
    """One second of one arm, counted at the server and at the clients."""

    t: int  # seconds since the workers started
    used: int
    usage: float  # used / maxclients
    rejected: int  # rejected_connections delta
    server_attempts: int  # rejected_connections + total_connections_received delta
    client_attempts: int  # sockets the workers tried to open
    ok: int  # commands that succeeded


@dataclass(frozen=True)
class ArmResult:
    """One client style through one storm."""

    arm: str
    label: str
    full_s: float
    client_attempts_full: int
    server_attempts_full: int
    rejected_full: int
    ok_full: int
    ok_after: int
    recovery_s: float | None  # clear -> usage < 80% and no more rejections (None: not within the run)
    served_s: float | None  # clear -> every worker has had a command succeed again
    series: tuple[Second, ...]
    errors_stop_s: float | None = None  # clear -> the last command that failed (0: none failed after the clear)
    held: int = 0  # live connections the client held before the leak filled the server

    @property
    def attempts_per_s_full(self) -> float:
        return self.client_attempts_full / self.full_s if self.full_s else 0.0


@dataclass(frozen=True)
class StormResult:
    """All arms of one run, with the settings that produced them."""

    server: str
    maxclients: int
    workers: int
    full_s: float
    after_s: float
    arms: tuple[ArmResult, ...]

    def arm(self, name: str) -> ArmResult | None:
        return next((a for a in self.arms if a.arm == name), None)

    def fewer_attempts(self, than: str = "redis-py", arm: str = "guard") -> float | None:
        """How many times fewer connection attempts `arm` made than `than` while the server was full."""
        a, b = self.arm(arm), self.arm(than)
        if a is None or b is None:
            return None
        return b.client_attempts_full / max(1, a.client_attempts_full)

    def to_dict(self) -> dict[str, Any]:
        out = {"schema": SCHEMA, **asdict(self)}
        for arm, data in zip(self.arms, out["arms"]):
            data["attempts_per_s_full"] = round(arm.attempts_per_s_full, 2)
        out["guard_fewer_attempts_than_redis_py"] = self.fewer_attempts()
        return out


# -- clients under test -------------------------------------------------------------------------
class _Tally:
    """A thread-safe counter."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self._value += 1

    @property
    def value(self) -> int:
        return self._value


def _count_sockets(pool: Any, tally: _Tally) -> None:
    """Count every socket the pool's connections try to open (redis-py's `_connect`)."""
    base = pool.connection_class

    def _connect(self: Any) -> Any:
        tally.add()
        return base._connect(self)

    pool.connection_class = type(f"Counting{base.__name__}", (base,), {"_connect": _connect})


def make_client(arm: str, target: Target, tally: _Tally) -> redis.Redis:
    host, port, password = target.host, target.port, target.password
    if arm == "redis-py":
        client = redis.Redis(host=host, port=port, password=password)  # redis-py's own defaults
    elif arm == "immediate":
        client = redis.Redis(host=host, port=port, password=password, retry=Retry(NoBackoff(), 10))
    elif arm == "guard":
        url = f"redis://{':' + password + '@' if password else ''}{host}:{port}"
        client = guarded_client(url, name="storm-guard", leak_threshold_s=None)
    else:
        raise ValueError(f"unknown storm arm {arm!r}: use {', '.join(ARMS)}")
    _count_sockets(client.connection_pool, tally)
    return client


# -- one arm ----------------------------------------------------------------------------------------
@dataclass
class _Sample:
    t: float
    used: int
    rejected: int
    received: int
    attempts: int
    ok: int


@dataclass
class _ArmRun:
    arm: str
    workers: int
    think_s: float
    target: Target
    tally: _Tally = field(default_factory=_Tally)
    ok: _Tally = field(default_factory=_Tally)
    stop: threading.Event = field(default_factory=threading.Event)
    cleared_at: float | None = None
    first_ok_after_clear: dict[int, float] = field(default_factory=dict)
    last_error_at: float = 0.0

    def worker(self, n: int, client: redis.Redis) -> None:
        """Issue commands until told to stop. On a failure, the next request comes after think_s,
        except in the 'immediate' arm, which tries again at once."""
        pause_on_error = 0.0 if self.arm == "immediate" else self.think_s
        while not self.stop.is_set():
            try:
                client.get("connguard:storm")
            except redis.RedisError:
                self.last_error_at = time.monotonic()
                if pause_on_error:
                    self.stop.wait(pause_on_error)
                continue
            self.ok.add()
            cleared = self.cleared_at
            if cleared is not None and n not in self.first_ok_after_clear:
                self.first_ok_after_clear[n] = time.monotonic() - cleared
            self.stop.wait(self.think_s)


def _guard_key(target: Target) -> tuple[Any, ...]:
    """The guard's endpoint key is the target's own (one definition of "same endpoint"); the storm client connects
    without a password in the key, as the guard keys it."""
    return target.endpoint_key


@dataclass
class _Counters:
    """The server's counters as the probe reads them; the last good reading when a tick saw nothing."""

    monitor: Sampler
    used: int = 0
    rejected: int = 0
    received: int = 0
    maxclients: int = 0

    def read(self) -> "_Counters":
        # INFO only (no CLIENT LIST): four ticks a second must not cost the full server a listing each.
        snap = self.monitor.sample(client_list=False).snapshot
        if snap is not None:
            info = snap.info
            self.used, self.rejected, self.received = snap.used, info.rejected_connections, info.total_connections_received
            self.maxclients = snap.maxclients or info.maxclients or self.maxclients
        return self


def _hold(client: redis.Redis, count: int) -> None:
    """Open `count` pooled connections and return them to the pool, live: the app was running before the leak."""
    pool = client.connection_pool
    conns = [pool.get_connection() for _ in range(count)]
    for conn in conns:
        pool.release(conn)


def run_arm(
    arm: str, target: Target, monitor: Sampler, *, workers: int, full_s: float, after_s: float,
    sample_s: float = 0.25, think_s: float = 0.02, held: int = 1, log: Callable[[str], None] = lambda line: None,
) -> ArmResult:
    """Fill the server with a leak, run `workers` clients of style `arm` for full_s, clear the leak, watch after_s.
    The client holds `held` live connections from before the leak (a running app; 0: it starts at a full server)."""
    run = _ArmRun(arm, workers, think_s, target)
    crowd = Crowd(target.host or "127.0.0.1", target.port or 6379, password=target.password)
    client: redis.Redis | None = None
    threads: list[threading.Thread] = []
    try:
        if arm == "guard":
            REGISTRY.forget(_guard_key(target))  # a fresh breaker: earlier runs in this process must not colour this one
        client = make_client(arm, target, run.tally)
        _hold(client, held)
        counters = _Counters(monitor).read()
        used, maxclients = counters.used, counters.maxclients
        leak = crowd.open(max(0, maxclients - used), source=LEAK_SOURCE, name="storm-leak")
        log(f"{arm}: a leak from {LEAK_SOURCE} holds {len(leak.sockets)} connections; the server is full"
            + (f" (the client holds {held} from before)" if held else ""))
        samples: list[_Sample] = []

        def sample() -> None:
            now = counters.read()
            samples.append(_Sample(time.monotonic(), now.used, now.rejected, now.received, run.tally.value, run.ok.value))

        sample()
        start = samples[0].t
        threads = [threading.Thread(target=run.worker, args=(i, client), daemon=True, name=f"storm-{arm}-{i}")
                   for i in range(workers)]
        for thread in threads:
            thread.start()
        clear_at, end_at = start + full_s, start + full_s + after_s
        while time.monotonic() < clear_at:
            time.sleep(min(sample_s, max(0.0, clear_at - time.monotonic())))
            sample()
        full_mark = samples[-1]
        crowd.close_group(leak)
        run.cleared_at = time.monotonic()
        sample()  # the clear mark: rejections counted after this one happened after the leak was gone
        log(f"{arm}: leak cleared after {full_s:g}s")
        while time.monotonic() < end_at:
            time.sleep(sample_s)
            sample()
    finally:
        run.stop.set()
        for thread in threads:
            thread.join(timeout=15)
        if client is not None:
            client.close()
            client.connection_pool.disconnect()
        crowd.close()
        if arm == "guard":
            REGISTRY.forget(_guard_key(target))
    return _summarise(run, samples, start, full_mark, maxclients, full_s, workers, held)


def _summarise(run: _ArmRun, samples: list[_Sample], start: float, full_mark: _Sample, maxclients: int,
               full_s: float, workers: int, held: int) -> ArmResult:
    first = samples[0]
    cleared = run.cleared_at or full_mark.t
    clear_mark = next(s for s in samples if s.t >= cleared)
    after = [s for s in samples if s.t > clear_mark.t]
    bad_until = cleared
    previous = clear_mark
    for s in after:  # the end of the last interval that still saw a rejection or usage over the line
        if s.rejected > previous.rejected or s.used >= WARNING_LINE * maxclients:
            bad_until = s.t
        previous = s
    still_bad = bool(after) and bad_until >= after[-1].t
    recovery = None if still_bad else round(bad_until - cleared, 2)
    served = round(max(run.first_ok_after_clear.values()), 2) if len(run.first_ok_after_clear) == workers else None
    errors_stop = round(max(0.0, run.last_error_at - cleared), 2)
    return ArmResult(
        arm=run.arm,
        label=ARM_LABELS[run.arm],
        full_s=full_s,
        client_attempts_full=full_mark.attempts - first.attempts,
        server_attempts_full=(full_mark.rejected + full_mark.received) - (first.rejected + first.received),
        rejected_full=full_mark.rejected - first.rejected,
        ok_full=full_mark.ok - first.ok,
        ok_after=samples[-1].ok - full_mark.ok,
        recovery_s=recovery,
        served_s=served,
        errors_stop_s=errors_stop,
        held=held,
        series=_per_second(samples, start, maxclients),
    )


def _per_second(samples: list[_Sample], start: float, maxclients: int) -> tuple[Second, ...]:
    """Resample the cumulative counters at whole seconds (last sample at or before each mark)."""
    out: list[Second] = []
    horizon = int(samples[-1].t - start)
    marks = [max((s for s in samples if s.t - start <= t + 1e-6), key=lambda s: s.t) for t in range(horizon + 1)]
    for t in range(1, len(marks)):
        a, b = marks[t - 1], marks[t]
        out.append(Second(
            t=t, used=b.used, usage=round(b.used / maxclients, 3), rejected=b.rejected - a.rejected,
            server_attempts=(b.rejected + b.received) - (a.rejected + a.received),
            client_attempts=b.attempts - a.attempts, ok=b.ok - a.ok,
        ))
    return tuple(out)


# -- the experiment -------------------------------------------------------------------------------------
def run_storm(
    arms: Sequence[str] = ARMS,
    *,
    workers: int = 16,
    full_s: float = 7.0,
    after_s: float = 5.0,
    maxclients: int = 64,
    held: int = 1,
    url: str | None = None,
    binary: ServerBinary | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> StormResult:
    """Run each arm in turn against one server: a throwaway one (maxclients as given) unless `url` names one.

    Bounded: about len(arms) x (full_s + after_s + 1) seconds. Everything it opens is closed, the server it
    started is stopped, and a server given by `url` is left as found (the leak is cleared).
    """
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise ValueError(f"unknown storm arm(s) {', '.join(unknown) or '(none given)'}: use {', '.join(ARMS)}")
    if not 0 <= held < workers:
        raise ValueError(f"held={held} must be between 0 and workers - 1: the storm needs workers without a connection")
    if not 1 <= workers <= 256:
        raise ValueError(f"workers={workers} must be between 1 and 256")
    if not 0.5 <= full_s <= 120 or not 0.5 <= after_s <= 120:
        raise ValueError(f"full_s={full_s} and after_s={after_s} must each be between 0.5 and 120 seconds")
    server: ServerProcess | None = None
    if url is None:
        if maxclients < workers + 8:
            raise ValueError(f"maxclients={maxclients} must leave room for {workers} workers after the leak clears (>= workers + 8)")
        server = ServerProcess(binary or default_binary(), maxclients=maxclients).start()
        url = server.url
    target = parse_target(url)
    # The probe's Sampler, connected before any leak, holds its slot so the full server can always be watched;
    # its own connects are counted apart, so they never pass for a client's attempts.
    monitor = Sampler(target, census=False)
    try:
        monitor.open()
        first = monitor.sample(client_list=False).snapshot
        label = server.binary.label if server else (f"{first.info.flavor}-{first.info.version}" if first else "?")
        results = tuple(
            run_arm(arm, target, monitor, workers=workers, full_s=full_s, after_s=after_s, held=held, log=log)
            for arm in arms
        )
        actual_max = _Counters(monitor).read().maxclients
    finally:
        monitor.close()
        if server is not None:
            server.stop()
    return StormResult(str(label), actual_max, workers, full_s, after_s, results)
