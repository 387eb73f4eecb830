"""Reproduce each cause of connection exhaustion on a real server: `with run_scenario(name) as run: ...`.

Inside the `with`, the condition is live; on the way out (also on an exception or Ctrl-C) every thread, socket
and server the scenario started is stopped. Client hosts are loopback aliases (127.0.x.y), so a doctor sees
distinct sources. Every load is bounded in connections and in time (`max_duration_s`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import redis

from connguard.errors import LabError
from connguard.lab.crowd import Crowd
from connguard.lab.scenario_specs import SPECS, Setup
from connguard.lab.servers import ServerBinary, ServerProcess, default_binary
from connguard.lab.workloads import Worker, first_error
from connguard.probe.host import listening_inodes
from connguard.probe.model import used_of
from connguard.target import parse_target

SCENARIO_NAMES: tuple[str, ...] = tuple(SPECS)
# External servers are only loaded up to this maxclients: filling a production-sized limit is not a lab job.
FILL_BOUND = 1000
SIZE_BASIS_CAP = 200


@dataclass
class ScenarioRun:
    """A live scenario: where it runs, who causes the condition, and the doctor command that should name it."""

    name: str
    url: str
    server: ServerProcess | None
    offenders: list[str]
    doctor_command: str
    summary: str
    maxclients: int
    doctor_flags: tuple[str, ...] = ()
    replicas: list[ServerProcess] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    crowd: Crowd | None = None
    started_at: float = field(default_factory=time.monotonic)
    watched_port: int | None = None  # an external server's port, watched in /proc/net/tcp (no connection made)
    needs_auth: bool = False  # the doctor command then needs REDISCLI_AUTH set

    def check(self) -> None:
        """Raise LabError if the scenario's server (or a replica, or a load thread) has died."""
        if self.server is not None and not self.server.alive():
            raise LabError(f"the scenario's server ({self.server.binary.label}, pid gone) died: {self.server.log_tail()}")
        if self.watched_port is not None and not listening_inodes(self.watched_port):
            raise LabError(f"the server at {self.url.rsplit('@', 1)[-1]} stopped listening")
        for replica in self.replicas:
            if not replica.alive():
                raise LabError(f"a replica of the scenario's server died: {replica.log_tail()}")
        error = first_error(self.workers)
        if error is not None:
            raise LabError(f"the {self.name} load stopped with an error: {error}")


def _is_loopback(host: str | None) -> bool:
    return bool(host) and (host == "localhost" or host == "::1" or host.startswith("127."))  # type: ignore[union-attr]


def _server_numbers(host: str, port: int, password: str | None) -> tuple[int, int]:
    """(maxclients, used) of an external server, read over one short-lived connection."""
    client = redis.Redis(host=host, port=port, password=password, socket_timeout=5, socket_connect_timeout=5)
    try:
        info = client.info("all")
        try:
            maxclients = int(client.config_get("maxclients")["maxclients"])
        except redis.exceptions.ResponseError:
            maxclients = int(info["maxclients"])
    except redis.exceptions.RedisError as exc:
        raise LabError(f"cannot read maxclients from the server: {exc}") from None
    finally:
        client.close()
    return maxclients, used_of(info)


def _as_binary(binary: ServerBinary | str | None) -> ServerBinary:
    return binary if isinstance(binary, ServerBinary) else default_binary(binary)


@contextlib.contextmanager
def run_scenario(
    name: str,
    *,
    binary: ServerBinary | str | None = None,
    url: str | None = None,
    scale: float = 1.0,
    log: Callable[[str], None] = print,
    max_duration_s: float = 300.0,
) -> Iterator[ScenarioRun]:
    """Start scenario `name` (on its own throwaway server unless `url` names a loopback server) and keep it live."""
    if name not in SPECS:
        raise LabError(f"unknown scenario {name!r}; valid names: {', '.join(SCENARIO_NAMES)}")
    spec = SPECS[name]
    if not 0.05 <= scale <= 4:
        raise ValueError(f"scale must be between 0.05 and 4, not {scale}")
    with contextlib.ExitStack() as stack:
        server: ServerProcess | None = None
        if url is None:
            settings = spec.server_kwargs(scale)
            server = ServerProcess(_as_binary(binary), **settings)
            stack.callback(server.stop)
            server.start()
            fd_note = f", fd limit {server.nofile}" if server.nofile else ""
            log(f"started {server.binary.label} on {server.url} (pid {server.pid}, maxclients {settings['maxclients']}{fd_note})")
            host, port, password, run_url, shown_url = "127.0.0.1", server.port, None, server.url, server.url
        else:
            if spec.own_server:
                raise LabError(f"scenario {name} needs its own server ({spec.own_server}); run it without --url")
            target = parse_target(url)
            if target.scheme != "redis" or not _is_loopback(target.host):
                raise LabError("lab scenarios only load loopback servers over plain TCP (redis://127.0.0.1:PORT)")
            if target.username:
                raise LabError("lab scenarios support password auth, not ACL users")
            host, port, password = target.host or "127.0.0.1", int(target.port or 6379), target.password
            # No credentials in the printed command: the doctor takes the password from $REDISCLI_AUTH.
            run_url, shown_url = url, f"redis://{host}:{port}"
        maxclients, used = _server_numbers(host, port, password)
        if spec.fills and maxclients > FILL_BOUND:
            raise LabError(
                f"scenario {name} fills the server, and maxclients {maxclients} is above the lab bound {FILL_BOUND}; "
                f"lower it (CONFIG SET maxclients 64) or run without --url"
            )
        crowd = Crowd(host, port, password=password)
        stack.callback(crowd.close)
        workers: list[Worker] = []
        # Workers stop before the crowd closes and the server stops (callbacks run last-in, first-out).
        stack.callback(lambda: [w.stop() for w in reversed(workers)])
        setup = Setup(host=host, port=port, password=password, maxclients=maxclients, used=used,
                      basis=min(maxclients, SIZE_BASIS_CAP), scale=scale, crowd=crowd, workers=workers,
                      log=log, max_duration_s=max_duration_s, server=server, stack=stack)
        result = spec.build(setup)
        flags = ("--interval", "2", *result.doctor_flags)
        run = ScenarioRun(
            name=name, url=run_url, server=server, offenders=list(result.offenders),
            doctor_command=" ".join(["connguard", "doctor", shown_url, *flags]),
            summary=result.summary, maxclients=maxclients, doctor_flags=flags,
            replicas=list(setup.replicas), workers=workers, crowd=crowd,
            watched_port=port if server is None and listening_inodes(port) else None, needs_auth=bool(password),
        )
        run.check()
        yield run
