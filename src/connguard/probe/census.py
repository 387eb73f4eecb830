"""Count established TCP connections to a port by remote host, from /proc/net/tcp{,6}; no Redis needed."""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path
from typing import Iterable

from connguard.probe.model import SocketCensus

ESTABLISHED = "01"


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


def census_from_tables(tables: Iterable[str], port: int) -> SocketCensus:
    """Pure: server-side established sockets on `port` (local port == port), grouped by remote IP."""
    by_host: Counter[str] = Counter()
    for text in tables:
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4 or fields[3] != ESTABLISHED:
                continue
            _local_ip, local_port = decode_address(fields[1])
            if local_port != port:
                continue
            remote_ip, _remote_port = decode_address(fields[2])
            by_host[remote_ip] += 1
    return SocketCensus(port=port, by_host=dict(by_host.most_common()))


def read_census(port: int, proc: Path = Path("/proc")) -> SocketCensus:
    tables = []
    for name in ("tcp", "tcp6"):
        try:
            tables.append((proc / "net" / name).read_text())
        except OSError:
            continue
    return census_from_tables(tables, port)
