"""Count established TCP connections to a port by remote host, from /proc/net/tcp{,6}; no Redis needed."""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from connguard.probe.model import Peer, SocketCensus

ESTABLISHED = "01"
TIME_WAIT = "06"
LISTEN = "0A"


def _decode_v4(hex_ip: str) -> str:
    return str(ipaddress.IPv4Address(bytes.fromhex(hex_ip)[::-1]))


def _decode_v6(hex_ip: str) -> str:
    raw = bytes.fromhex(hex_ip)
    # /proc prints the address as four host-order 32-bit words.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)


def decode_address(hex_addr: str) -> tuple[str, int]:
    hex_ip, hex_port = hex_addr.rsplit(":", 1)
    ip = _decode_v4(hex_ip) if len(hex_ip) == 8 else _decode_v6(hex_ip)
    return ip, int(hex_port, 16)


def census_from_tables(tables: Iterable[str], port: int, taken_at: float | None = None) -> SocketCensus:
    """Pure: server-side sockets on `port` (local port == port): established ones grouped by remote IP,
    with each one's client end kept, plus the client ends of connections on the port in TIME_WAIT."""
    suffix = f":{port:04X}"
    by_host: Counter[str] = Counter()
    peers: set[Peer] = set()
    waiting: set[Peer] = set()
    outbound: list[tuple[Peer, Peer]] = []  # TIME_WAIT with the port at the far end: (local, remote)
    server_ips: set[str] = set()
    unaccepted = 0
    for text in tables:
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4 or fields[3] not in (ESTABLISHED, TIME_WAIT, LISTEN):
                continue
            # Cheap filter before decoding: a port is the hex suffix of an address.
            if not fields[1].endswith(suffix):
                if fields[3] == TIME_WAIT and fields[2].endswith(suffix):
                    try:
                        outbound.append((decode_address(fields[1]), decode_address(fields[2])))
                    except ValueError:
                        pass  # see below
                continue
            try:
                local, peer = decode_address(fields[1]), decode_address(fields[2])
            except ValueError:
                # The kernel never writes a malformed address, but a census runs when the server is full:
                # a line that does not decode is skipped, never a traceback in the doctor.
                continue
            server_ips.add(local[0])
            if fields[3] == LISTEN:
                continue
            if fields[3] == TIME_WAIT:
                waiting.add(peer)
                continue
            by_host[peer[0]] += 1
            peers.add(peer)
            # inode 0: the handshake is done but the server has not accept()ed it yet, so it holds no slot.
            if len(fields) > 9 and fields[9] == "0":
                unaccepted += 1
    # The side that closes first keeps TIME_WAIT: a client on this host that hung up leaves it on its own end.
    waiting.update(local for local, remote in outbound if remote[0] in server_ips)
    return SocketCensus(port=port, by_host=dict(by_host.most_common()), peers=frozenset(peers),
                        unaccepted=unaccepted, time_wait_peers=frozenset(waiting), taken_at=taken_at)


def read_census(port: int, proc: Path = Path("/proc"), clock: Callable[[], float] = time.monotonic) -> SocketCensus:
    tables = []
    taken_at = clock()
    for name in ("tcp", "tcp6"):
        try:
            tables.append((proc / "net" / name).read_text())
        except OSError:
            continue
    return census_from_tables(tables, port, taken_at=taken_at)


# -- comparing two censuses ------------------------------------------------------------------------

@dataclass(frozen=True)
class HostTurnover:
    """One client host between two censuses: connections now, how many are new, how many went away,
    and how many were closed cleanly meanwhile (new TIME_WAIT; a server's refusals reset instead, and
    leave nothing, so every count here is a lower bound of the churn)."""

    host: str
    connections: int
    new: int
    gone: int
    closed: int

    @property
    def activity(self) -> int:
        return self.new + self.closed


@dataclass(frozen=True)
class CensusTurnover:
    """What changed on the port between two censuses `window_s` apart."""

    port: int
    window_s: float
    before: int  # established, first census
    after: int  # established, second census
    accepted: int  # established and accepted by the server in the second census (slots held)
    hosts: tuple[HostTurnover, ...]  # most active first (new + closed)
    time_wait_before: int
    time_wait_after: int
    # The fewest accepted connections in any census of the window: the slots held throughout. A refused
    # connection is accepted, answered and closed, so one caught in flight adds a transient extra socket.
    accepted_min: int | None = None

    @property
    def new(self) -> int:
        return sum(h.new for h in self.hosts)

    @property
    def gone(self) -> int:
        return sum(h.gone for h in self.hosts)

    @property
    def closed(self) -> int:
        return sum(h.closed for h in self.hosts)

    @property
    def replaced_ratio(self) -> float:
        """Share of the connections that were replaced during the window (0 = the same sockets throughout)."""
        return min(self.new, self.gone) / max(self.before, self.after, 1)

    def per_s(self, count: int) -> float | None:
        # A window too short to time (e.g. --interval 0) gives counts but no rate.
        return round(count / self.window_s, 1) if self.window_s >= 0.1 else None

    @property
    def new_per_s(self) -> float | None:
        return self.per_s(self.new)

    @property
    def closed_per_s(self) -> float | None:
        return self.per_s(self.closed)

    @property
    def time_wait_growth(self) -> int:
        return self.time_wait_after - self.time_wait_before


def compare_censuses(before: SocketCensus, after: SocketCensus, window_s: float | None = None) -> CensusTurnover:
    """Pure: per remote host, connections now, new ones (client ip:port not seen before), gone ones, and
    connections closed cleanly meanwhile. `window_s` defaults to the censuses' own timestamps."""
    return census_turnover((before, after), window_s)


def census_turnover(censuses: Sequence[SocketCensus], window_s: float | None = None) -> CensusTurnover:
    """Pure: turnover across every census of a window, oldest first, not just its ends. New: client ends
    seen in any later census and not in the first (so a connection that came and went between two looks
    counts); gone: client ends seen in any earlier census and not in the last; closed: TIME_WAIT ends that
    appeared after the first census. `window_s` defaults to the first and last censuses' timestamps."""
    if len(censuses) < 2:
        raise ValueError("turnover needs at least two censuses")
    before, after = censuses[0], censuses[-1]
    if window_s is None:
        window_s = (after.taken_at - before.taken_at) if after.taken_at is not None and before.taken_at is not None else 0.0
    seen_after = frozenset().union(*(c.peers for c in censuses[1:]))
    seen_before = frozenset().union(*(c.peers for c in censuses[:-1]))
    waiting_after = frozenset().union(*(c.time_wait_peers for c in censuses[1:]))
    new = Counter(ip for ip, _ in seen_after - before.peers)
    gone = Counter(ip for ip, _ in seen_before - after.peers)
    closed = Counter(ip for ip, _ in waiting_after - before.time_wait_peers)
    names = set(after.by_host) | set(new) | set(gone) | set(closed)
    hosts = [HostTurnover(h, after.by_host.get(h, 0), new[h], gone[h], closed[h]) for h in names]
    hosts.sort(key=lambda h: (-h.activity, -h.connections, h.host))
    return CensusTurnover(port=after.port, window_s=max(0.0, window_s), before=before.total, after=after.total,
                          accepted=after.accepted, hosts=tuple(hosts), time_wait_before=before.time_wait,
                          time_wait_after=after.time_wait, accepted_min=min(c.accepted for c in censuses))
