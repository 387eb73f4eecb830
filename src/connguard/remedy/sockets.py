"""Free a full server's slots from outside Redis: destroy one client host's TCP connections with `ss -K`.

When the server is at maxclients nobody gets in to run CLIENT KILL, and a static pile (a leak, oversized
pools) frees no slot by itself. On the server's own host, root can abort the server's end of those
connections with `ss -K dst <host> sport = :<port>` (the kernel's SOCK_DESTROY): Redis sees the sockets
fail and frees the slots. This cannot tell a replica or a pub/sub subscriber from an application
connection, so it is a dry run until --yes and it says so."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

from connguard.errors import BadArguments
from connguard.probe.census import read_census
from connguard.probe.host import find_listening_pid
from connguard.probe.model import SocketCensus
from connguard.target import Target

EFFECT = ("aborts every TCP connection from that host to the server's port, whatever it carries "
          "(application, replica, Sentinel, pub/sub alike: from outside Redis they cannot be told apart); "
          "the clients see a reset and must reconnect")


def is_this_host(ip: str) -> bool:
    """True when `ip` is one of this machine's addresses (a loopback, or any address we can bind)."""
    try:
        addr = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return False
    if addr.is_loopback:
        return True
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(addr), 0))
        except OSError:
            return False
    return True


def ss_filter_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def ss_kill_argv(host: str, port: int) -> list[str]:
    return ["ss", "-K", "dst", ss_filter_host(host), "sport", "=", f":{port}"]


def ss_kill_text(host: str, port: int) -> str:
    return " ".join(ss_kill_argv(host, port))


@dataclass(frozen=True)
class SocketKillPlan:
    """Per chosen host: how many established connections to the server's port the census sees."""

    port: int
    pid: int
    per_host: dict[str, int]
    census_total: int

    @property
    def total(self) -> int:
        return sum(self.per_host.values())

    def commands(self) -> list[str]:
        return [ss_kill_text(h, self.port) for h in self.per_host]


def local_server(target: Target) -> tuple[int, int]:
    """(port, pid) of the target when it listens on this host; BadArguments otherwise, saying why."""
    if target.scheme == "unix" or target.host is None or target.port is None:
        raise BadArguments("--sockets needs a TCP target (redis://host:port): ss -K works on TCP connections")
    try:
        ips = {target.host} if _is_ip(target.host) else {a[4][0] for a in socket.getaddrinfo(target.host, target.port)}
    except OSError:
        ips = set()
    if not ips or not all(is_this_host(ip) for ip in ips):
        raise BadArguments(f"--sockets works only on the server's own host, and {target.redacted} is not on this host: "
                           "run it there")
    pid = find_listening_pid(target.port)
    if pid is None:
        raise BadArguments(f"nothing on this host listens on port {target.port} (or /proc does not show it): "
                           "--sockets works only on the server's own host")
    return target.port, pid


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def plan_sockets(census: SocketCensus, sources: tuple[str, ...], pid: int) -> SocketKillPlan:
    """Pure: the connections the census shows from each chosen source."""
    return SocketKillPlan(census.port, pid, {h: census.by_host.get(h, 0) for h in sources}, census.total)


def refuse_internal(sources: tuple[str, ...], pid: int, *, force: bool) -> dict[str, str]:
    """The chosen sources that carry the server's own links (a replica, a Sentinel, a cluster node), as /proc
    shows them on this host: refused unless --force, since cutting them frees a few slots and breaks
    failover. Returns what was forced through, for the record."""
    from connguard.probe.peers import internal_peers

    internal = internal_peers(pid)
    hit = {h: internal[h] for h in sources if h in internal}
    if hit and not force:
        named = ", ".join(f"{h} is {what}" for h, what in hit.items())
        raise BadArguments(f"--sockets refuses to cut the server's own links ({named} of this server: aborting them "
                           "frees a few slots and breaks replication or failover); add --force if you mean it")
    return hit


def check_can_destroy() -> None:
    if not shutil.which("ss"):
        raise BadArguments("--sockets needs `ss` (package iproute2), which is not installed")
    if os.geteuid() != 0:
        raise BadArguments("--sockets needs root: the kernel lets only root destroy another process's sockets "
                           "(run it with sudo on the server's host)")


@dataclass(frozen=True)
class SocketKillResult:
    before: int  # connections from the chosen hosts before
    after: int  # ... and after (the clients may reconnect at once)
    freed_slots: int  # drop in the server's established connections overall
    errors: tuple[str, ...]


def destroy_sockets(plan: SocketKillPlan, *, run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                    settle_s: float = 0.3) -> SocketKillResult:
    """Run `ss -K` per host, then count again. Redis frees a slot when it notices its socket failed, which
    takes one event-loop turn, hence the short settle pause before the second census."""
    check_can_destroy()
    errors = []
    for host in plan.per_host:
        proc = run(ss_kill_argv(host, plan.port), capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            errors.append(f"{ss_kill_text(host, plan.port)}: {' '.join(proc.stderr.split())[:200] or 'failed'}")
    time.sleep(settle_s)
    after = read_census(plan.port)
    remaining = sum(after.by_host.get(h, 0) for h in plan.per_host)
    return SocketKillResult(plan.total, remaining, max(0, plan.census_total - after.total), tuple(errors))
