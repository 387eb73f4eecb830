"""Background loads that keep a scenario's condition changing: a leak that grows, sources that rotate, a storm.

Every worker is a daemon thread bounded in time (`max_duration_s`) and in what it opens, and stops by itself.
"""

from __future__ import annotations

import collections
import socket
import threading
import time

from connguard.lab.crowd import Crowd, admit


def alias(index: int, subnet: int = 1) -> str:
    """The index-th distinct loopback host 127.<subnet>.x.y (y in 1..254), standing in for one machine."""
    third, fourth = divmod(index, 254)
    return f"127.{subnet}.{third}.{fourth + 1}"


class Worker(threading.Thread):
    """A daemon thread with a stop event and a deadline; `step()` runs until either says stop."""

    def __init__(self, name: str, max_duration_s: float) -> None:
        super().__init__(name=f"connguard-lab-{name}", daemon=True)
        self._stop_event = threading.Event()
        self.deadline = time.monotonic() + max_duration_s
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._stop_event.is_set() and time.monotonic() < self.deadline:
                if not self.step():
                    break
        except BaseException as exc:  # reported by the scenario, never a silent thread death
            self.error = exc
        finally:
            self.cleanup()

    def step(self) -> bool:  # pragma: no cover - overridden
        """One unit of work; return False to finish."""
        return False

    def cleanup(self) -> None:
        """Release what the worker holds; runs in the thread on the way out."""

    def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True if the worker should go on."""
        return not self._stop_event.wait(max(0.0, seconds))

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=timeout_s)


class Leaker(Worker):
    """One host opens an idle connection every `every_s` and never uses it again, until `cap` are held."""

    def __init__(self, crowd: Crowd, source: str, *, name: str, every_s: float, cap: int, max_duration_s: float):
        super().__init__("leak", max_duration_s)
        self.crowd, self.source, self.client_name = crowd, source, name
        self.every_s, self.cap = every_s, cap
        self.opened = 0

    def step(self) -> bool:
        if not self.sleep(self.every_s):
            return False
        group = self.crowd.open(1, source=self.source, name=self.client_name, lib_name="redis-py")
        self.opened += len(group.sockets)
        return self.opened < self.cap


class Rotator(Worker):
    """Short-lived sources: every `every_s`, the oldest one-connection host leaves and a new host arrives."""

    def __init__(self, crowd: Crowd, *, first_index: int, subnet: int, name: str, every_s: float, max_duration_s: float):
        super().__init__("fanout", max_duration_s)
        self.crowd, self.subnet, self.client_name, self.every_s = crowd, subnet, name, every_s
        self.next_index = first_index
        self.live: collections.deque = collections.deque()

    def add(self) -> None:
        group = self.crowd.open(1, source=alias(self.next_index, self.subnet), name=self.client_name)
        self.next_index += 1
        if group.sockets:
            self.live.append(group)

    def step(self) -> bool:
        if not self.sleep(self.every_s):
            return False
        if self.live:
            self.crowd.close_group(self.live.popleft())
        self.add()
        return True


class Pressure(Worker):
    """Keeps a server full and pushes against it.

    Each cycle: attempt new connections at `attempts_per_s` from `sources` (refused while full; an admitted one
    joins the held set), then churn: close `churn` held connections, reconnect all but `gap_slots` at once, wait
    `gap_s` with those slots free (so a diagnosing tool with backoff can get in), reconnect the rest.
    `active` held connections get a PING each cycle, like legitimate traffic.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        password: str | None,
        sources: list[str],
        name: str,
        attempts_per_s: float,
        hammer_s: float,
        churn: int,
        gap_slots: int,
        gap_s: float,
        active: bool,
        max_duration_s: float,
        max_attempts: int = 50_000,
    ) -> None:
        super().__init__("pressure", max_duration_s)
        self.host, self.port, self.password = host, port, password
        self.sources, self.client_name = sources, name
        self.attempts_per_s, self.hammer_s = attempts_per_s, hammer_s
        self.churn, self.gap_slots, self.gap_s = churn, gap_slots, gap_s
        self.active, self.max_attempts = active, max_attempts
        self.held: collections.deque[socket.socket] = collections.deque()
        self.attempts = 0
        self.refused = 0
        self._next_source = 0

    def _connect(self) -> socket.socket | None:
        self.attempts += 1
        source = self.sources[self._next_source % len(self.sources)]
        self._next_source += 1
        sock = admit(self.host, self.port, source=source, password=self.password, name=self.client_name)
        if sock is None:
            self.refused += 1
        else:
            self.held.append(sock)
        return sock

    def fill(self, count: int, give_up_after: int = 20) -> int:
        """Open up to `count` held connections now (in the caller's thread); stop early once refusals repeat."""
        misses = 0
        for _ in range(count):
            if self._connect() is None:
                misses += 1
                if misses >= give_up_after:
                    break
        return len(self.held)

    def step(self) -> bool:
        hammer_end = time.monotonic() + self.hammer_s
        pause = 1.0 / self.attempts_per_s
        while time.monotonic() < hammer_end and self.attempts < self.max_attempts:
            started = time.monotonic()
            self._connect()
            if not self.sleep(pause - (time.monotonic() - started)):
                return False
        if self.active:
            Crowd.ping(list(self.held))
        for _ in range(min(self.churn, len(self.held))):
            self.held.popleft().close()
        for _ in range(max(0, self.churn - self.gap_slots)):
            self._connect()
        if not self.sleep(self.gap_s):
            return False
        for _ in range(min(self.gap_slots, self.churn)):
            self._connect()
        return self.attempts < self.max_attempts

    def cleanup(self) -> None:
        while self.held:
            self.held.popleft().close()

    def stop(self, timeout_s: float = 10.0) -> None:
        super().stop(timeout_s)
        self.cleanup()  # also when the thread never started (fill() only)


def first_error(workers: list[Worker]) -> BaseException | None:
    return next((w.error for w in workers if w.error is not None), None)



def publish(host: str, port: int, channel: str, *, password: str | None = None, count: int, size: int,
            timeout_s: float = 10.0) -> int:
    """PUBLISH `count` messages of `size` bytes on `channel` from one short-lived connection (bounded in count
    and time); returns how many subscribers the last message reached. A subscriber that never reads keeps
    every one of them in its output buffer."""
    import redis

    client = redis.Redis(host=host, port=port, password=password, socket_timeout=timeout_s,
                         socket_connect_timeout=timeout_s)
    payload = b"x" * size
    deadline = time.monotonic() + timeout_s
    reached = 0
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            pipe.publish(channel, payload)
            if (i + 1) % 16 == 0 or i == count - 1:
                reached = int(pipe.execute()[-1])
                if time.monotonic() > deadline:
                    break
    finally:
        client.close()
    return reached
