"""The Sampler: one held connection to one server, turned into an Observation per tick, whatever happens.

Every tool that watches a server over time (doctor's window, watch, the exporter, the storm lab) samples
through this one class, so they agree on what an observation is:

- it owns the one held connection, and after a restart, a CLIENT KILL or a refusal it reconnects within
  a bounded, jittered backoff (`connguard.target.open_connection` does the refusal part);
- intervals come from the monotonic clock, wall time is kept for display only;
- a server that refuses us at maxclients is an ordinary Observation (census and host facts, no Snapshot),
  not an exception;
- a tick may skip CLIENT LIST (INFO only), to budget the O(N) call;
- it counts its own connects, so churn can leave them out (redis_exporter's scrape-per-connection
  inflates `total_connections_received`; we must not);
- it asks for `CLIENT NO-EVICT on` where the server has it (Redis >= 7.0, Valkey), so client-memory
  eviction cannot drop the observer in the middle of an incident.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import redis

from connguard.errors import ConnguardError, ServerFull, Unreachable
from connguard.probe.build import RawCapture, build_snapshot
from connguard.probe.capture import capture
from connguard.probe.census import read_census
from connguard.probe.host import is_local_server, local_pid_for, read_host_facts
from connguard.probe.info import parse_info
from connguard.probe.model import HostFacts, Snapshot, SocketCensus
from connguard.target import HeldConnection, Target, open_connection
from connguard.settings import CONNECT_TIMEOUT_S

__all__ = ["Observation", "Sampler", "supports_no_evict"]

RECONNECT_TIMEOUT_S = 2.0  # per tick: long enough to ride out a brief refusal, short enough to keep ticking
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 1.0
HOST_FACTS_EVERY_S = 5.0  # fd limit and open fds change slowly; re-read them at most this often


@dataclass(frozen=True)
class Observation:
    """What one tick saw. Exactly one of `snapshot` and `failure` is set; `census` can come with either."""

    snapshot: Snapshot | None  # None when not observed this tick (refused at maxclients, unreachable, auth...)
    monotonic: float  # time.monotonic() at the sample: use for intervals
    wall: float  # time.time(): display only
    refused: bool  # the server is at maxclients and refused our (re)connect
    failure: ConnguardError | None  # why there is no snapshot (.kind / .exit_code / .line()), else None
    census: SocketCensus | None  # when the server runs on this host (always tried when refused)
    host: HostFacts | None
    observer_connects: int  # cumulative connects this Sampler made (so churn can exclude our own)
    client_list_included: bool  # False on INFO-only ticks (and when an ACL denies CLIENT LIST)
    # What recordings and replays need beyond the tick itself:
    raw: RawCapture | None = None  # what the server said, verbatim: what a recording keeps
    own_client_id: int | None = None  # the held connection's CLIENT ID (None when an ACL denies it)
    refusals: int = 0  # cumulative connection attempts the server turned away with "max number of clients"

    @property
    def observed(self) -> bool:
        return self.snapshot is not None


def supports_no_evict(flavor: str, version: str) -> bool:
    """CLIENT NO-EVICT exists from Redis 7.0 on, and in every Valkey."""
    if flavor == "valkey":
        return True
    try:
        return int(version.split(".", 1)[0]) >= 7
    except ValueError:
        return False


class Sampler:
    """One per target; owns the one held connection. A context manager.

    `open()` connects and raises (for fail-fast CLIs); `sample()` never raises a ConnguardError: it
    reconnects when needed and says in the Observation what went wrong."""

    def __init__(
        self,
        target: Target,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        census: bool = False,
        reconnect_timeout_s: float = RECONNECT_TIMEOUT_S,
        socket_timeout_s: float = 5.0,
        no_evict: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.target = target
        self.connect_timeout_s = connect_timeout_s
        self.census = census
        self.reconnect_timeout_s = reconnect_timeout_s
        self.socket_timeout_s = socket_timeout_s
        self.no_evict = no_evict
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._rng = rng or random.Random()
        self._conn: HeldConnection | None = None
        self._connects = 0
        self._refusals = 0
        self._ever_connected = False
        self._last_failure: ConnguardError | None = None  # what the last tick without a Snapshot ran into
        self._last_refused = False
        self.no_evict_on = False  # the last connection accepted CLIENT NO-EVICT on
        self._server_version: tuple[str, str] | None = None  # (flavor, version) from the last INFO

    @classmethod
    def holding(cls, conn: HeldConnection, **kwargs: Any) -> "Sampler":
        """A Sampler over a connection opened elsewhere (a test that connected before filling the server):
        it counts as this Sampler's first connect, and is reconnected like any other if lost."""
        sampler = cls(conn.target, **kwargs)
        sampler._adopt(conn)
        return sampler

    # -- the connection ---------------------------------------------------------------------------------
    @property
    def connects(self) -> int:
        """Connections this Sampler has opened so far (each one counts in the server's total_connections_received)."""
        return self._connects

    @property
    def refusals(self) -> int:
        """Connection attempts the server refused at maxclients, so far."""
        return self._refusals

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def client_id(self) -> int | None:
        return self._conn.client_id if self._conn else None

    def open(self) -> None:
        """The first connect, riding out a full server for `connect_timeout_s`. Raises ConnguardError."""
        if self._conn is None:
            self._connect(self.connect_timeout_s, retry_unreachable=False)

    def _connect(self, budget_s: float, *, retry_unreachable: bool) -> None:
        """Connect within `budget_s`. A refusal is retried by open_connection (jittered backoff); with
        `retry_unreachable`, so is a closed port (a restart in progress). Anything else fails at once."""
        deadline = self._clock() + budget_s
        attempt = 0
        while True:
            attempt += 1
            remaining = max(0.0, deadline - self._clock())
            waits = 0

            def counting_sleep(seconds: float) -> None:  # open_connection sleeps once between two refused attempts
                nonlocal waits
                waits += 1
                self._sleep(seconds)

            try:
                conn = open_connection(self.target, connect_timeout_s=remaining, socket_timeout_s=self.socket_timeout_s,
                                       sleep=counting_sleep, clock=self._clock, rng=self._rng)
            except ServerFull:
                self._refusals += waits + 1
                raise
            except Unreachable:
                remaining = deadline - self._clock()
                if not retry_unreachable or remaining <= 0:
                    raise
                delay = self._rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(attempt, 16)))
                self._sleep(max(0.01, min(delay, remaining)))
                continue
            self._adopt(conn)
            return

    def _adopt(self, conn: HeldConnection) -> None:
        self._conn = conn
        self._connects += 1
        self._refusals += max(0, conn.attempts - 1)  # attempts before this one were refused
        self._ever_connected = True
        self.no_evict_on = False
        if self.no_evict:
            self._ask_no_evict()

    def _ask_no_evict(self) -> None:
        """CLIENT NO-EVICT on, only where it exists (a 6.2 server would log an unknown subcommand); a denial
        (ACL) is fine: the observer then runs like any other client."""
        assert self._conn is not None
        if self._server_version is None:
            try:
                info = parse_info(_text(self._conn.execute("INFO", "server")))
            except (ConnguardError, redis.exceptions.ResponseError):
                return
            self._server_version = (info.flavor, info.version)
        if not supports_no_evict(*self._server_version):
            return
        try:
            self.no_evict_on = self._conn.execute("CLIENT", "NO-EVICT", "on") in (b"OK", "OK", True)
        except (ConnguardError, redis.exceptions.ResponseError):
            self.no_evict_on = False

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._server_version = None  # what answers the reconnect may be an upgraded server

    def execute(self, *args: Any) -> Any:
        """One command over the held connection (watch's CLIENT KILL). Raises ConnguardError when there is
        none or it is lost (the next sample() reconnects); a ResponseError is raised as is."""
        if self._conn is None:
            raise Unreachable(f"{self.target.redacted}: no connection held (the last sample could not connect)")
        try:
            return self._conn.execute(*args)
        except ConnguardError:
            self._drop()
            raise

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one tick -----------------------------------------------------------------------------------------
    def sample(self, *, client_list: bool = True, connect: bool = True) -> Observation:
        """One Observation. Never raises a ConnguardError. Without a held connection it connects first
        (the very first time within connect_timeout_s, later within reconnect_timeout_s); a connection lost
        mid-tick is reconnected once and the tick retried. `connect=False`: look only from outside
        (census, host facts) when no connection is held, without knocking on a server that refuses."""
        failure: ConnguardError | None = None
        refused = False
        for _try in (1, 2):  # a connection lost mid-tick gets one reconnect and one retry
            if self._conn is None:
                if not connect:
                    failure, refused = self._last_failure or Unreachable("not connected"), self._last_refused
                    break
                budget = self.reconnect_timeout_s if self._ever_connected else self.connect_timeout_s
                try:
                    self._connect(budget, retry_unreachable=self._ever_connected)
                except ServerFull as err:
                    failure, refused = err, True
                    break
                except ConnguardError as err:
                    failure = err
                    break
            assert self._conn is not None
            mono, wall = self._clock(), self._wall()
            try:
                raw = capture(self._conn, client_list=client_list, clock=lambda: wall)
            except ConnguardError as err:  # restarted, killed, timed out: reconnect once and retry the tick
                self._drop()
                failure = err
                continue
            except redis.exceptions.ResponseError as err:  # INFO itself denied (an ACL): nothing to observe
                failure = Unreachable(f"{self.target.redacted} denied INFO: {' '.join(str(err).split())[:100]}")
                break
            if self._conn.limitations:  # what the handshake could not do (e.g. CLIENT SETNAME denied)
                raw = dataclasses.replace(raw, limitations=tuple(dict.fromkeys(self._conn.limitations + raw.limitations)))
            self._last_failure, self._last_refused = None, False
            return self._observed(raw, mono, wall)
        self._last_failure, self._last_refused = failure, refused
        return self._unobserved(failure, refused)

    def _observed(self, raw: RawCapture, mono: float, wall: float) -> Observation:
        assert self._conn is not None
        info = parse_info(raw.info_all)
        self._server_version = (info.flavor, info.version)
        host = census = None
        if self._is_local(info.process_id, info.tcp_port):
            host = self._host_facts(info.process_id, mono)  # type: ignore[arg-type]
            if self.census and info.tcp_port:
                census = read_census(info.tcp_port, clock=lambda: mono)
        own = self._conn.client_id
        snap = build_snapshot(raw, host=host, census=census, own_client_id=own, observer_connections=1,
                              monotonic=mono, observer_connects=self._connects)
        return Observation(snapshot=snap, monotonic=mono, wall=wall, refused=False, failure=None, census=census,
                           host=host, observer_connects=self._connects,
                           client_list_included=raw.client_list is not None,
                           raw=raw, own_client_id=own, refusals=self._refusals)

    _local: tuple[tuple[int | None, int | None], bool] | None = None  # ((pid, port), local?) of the last INFO

    def _is_local(self, pid: int | None, port: int | None) -> bool:
        """is_local_server reads /proc/net/tcp{,6} (0.25 s at 20k local sockets): once per server process,
        not on every tick. A restart brings a new pid, and so a new check."""
        if self._local is None or self._local[0] != (pid, port):
            self._local = ((pid, port), is_local_server(pid, port))
        return self._local[1]

    _host: tuple[int, float, HostFacts | None] | None = None  # (pid, when read, facts)

    def _host_facts(self, pid: int, now: float) -> HostFacts | None:
        """/proc/<pid>/limits and fd count, at most every HOST_FACTS_EVERY_S: listing /proc/<pid>/fd costs
        ~30 ms at 10k clients, too much for every tick of a 1 s exporter or watch."""
        if self._host is None or self._host[0] != pid or now - self._host[1] >= HOST_FACTS_EVERY_S:
            self._host = (pid, now, read_host_facts(pid))
        return self._host[2]

    def _unobserved(self, failure: ConnguardError | None, refused: bool) -> Observation:
        """No Snapshot this tick. A refusing server on this host is still seen from /proc: who holds its
        slots (census) and its fd limit; for any other failure the census is tried only when asked for."""
        mono, wall = self._clock(), self._wall()
        census = host = None
        if refused or self.census:
            pid = local_pid_for(self.target.host, self.target.port) if self.target.scheme != "unix" else None
            if pid is not None and self.target.port is not None:
                census = read_census(self.target.port, clock=lambda: mono)
                host = read_host_facts(pid)
        return Observation(snapshot=None, monotonic=mono, wall=wall, refused=refused, failure=failure, census=census,
                           host=host, observer_connects=self._connects, client_list_included=False,
                           refusals=self._refusals)


def _text(reply: object) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
