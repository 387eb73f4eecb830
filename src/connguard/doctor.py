"""`run_doctor`: the doctor's I/O. One held connection, one or two Snapshots, then the pure diagnosis."""

from __future__ import annotations

import ipaddress
import time
from typing import Callable

from connguard.analysis.diagnosis import Diagnosis, DoctorSettings, diagnose, diagnose_unreachable
from connguard.errors import ServerFull
from connguard.probe import take_snapshot
from connguard.probe.census import CensusTurnover, compare_censuses, read_census
from connguard.probe.host import find_listening_pid, read_host_facts
from connguard.probe.model import HostFacts, SocketCensus
from connguard.target import HeldConnection, Target, open_connection


def examine(
    conn: HeldConnection, target: str, settings: DoctorSettings, *, once: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Diagnosis:
    """Diagnose over a connection already held: CLIENT LIST once per Snapshot, nothing written."""
    first = take_snapshot(conn)
    second = None
    if not once:
        sleep(settings.interval_s)
        second = take_snapshot(conn)
    # attempts > 1: the server turned us away first (it was full a moment ago), which is evidence too.
    return diagnose(first, second, settings, target, refused_us=max(0, getattr(conn, "attempts", 1) - 1))


def _is_loopback(host: str | None) -> bool:
    if not host or host == "localhost":
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


CENSUS_PAUSE_MAX_S = 2.0  # the second census of a refusing server: long enough to see churn, short for an incident


def local_pid(target: Target) -> int | None:
    """The process listening on the target's port when that is on this host; None otherwise."""
    if target.scheme == "unix" or not target.port or not _is_loopback(target.host):
        return None
    return find_listening_pid(target.port)


def local_view(target: Target) -> tuple[SocketCensus | None, HostFacts | None]:
    """When the refused server listens on this host: who holds its slots (/proc census) and its fd limit."""
    pid = local_pid(target)
    if pid is None or target.port is None:
        return None, None
    return read_census(target.port), read_host_facts(pid)


def watch_from_outside(
    target: Target, settings: DoctorSettings, *, once: bool = False, sleep: Callable[[float], None] = time.sleep,
) -> tuple[SocketCensus | None, HostFacts | None, CensusTurnover | None]:
    """A full local server, seen without Redis: one census now and, unless `once`, one after a short pause,
    so a storm (connections changing hands) can be told from a still pile (the same sockets throughout)."""
    first, host = local_view(target)
    if first is None or once or target.port is None:
        return first, host, None
    sleep(min(settings.interval_s, CENSUS_PAUSE_MAX_S))
    second = read_census(target.port)
    return second, host, compare_censuses(first, second)


def run_doctor(
    target: Target, settings: DoctorSettings, *, once: bool = False, connect_timeout_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Diagnosis:
    """Connect (riding out a full server for `connect_timeout_s`), examine, close. A server that stays
    full is diagnosed from outside; every other ConnguardError propagates to the caller."""
    try:
        conn = open_connection(target, connect_timeout_s=connect_timeout_s, sleep=sleep)
    except ServerFull as err:
        census, host, turnover = watch_from_outside(target, settings, once=once, sleep=sleep)
        return diagnose_unreachable(target.redacted, settings, err.message, full=True, census=census, host=host,
                                    turnover=turnover)
    with conn:
        return examine(conn, target.redacted, settings, once=once, sleep=sleep)
