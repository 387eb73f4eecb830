"""A window of Snapshots: in time order, cut at restarts, and who came and went across all of it.

Pure. Everything that compares Snapshots (rates, per-host growth, churn by client ID) reads a Window, so a
window of two is today's doctor and a window of a hundred is `watch`, with the same meaning."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

from connguard.analysis.classify import client_records
from connguard.probe.model import Snapshot

DEFAULT_SAMPLES = 2  # the classic doctor's window: two Snapshots an interval apart


def restarted(a: Snapshot, b: Snapshot) -> bool:
    """The server between two Snapshots is not the same process: counters, client IDs and ages started over."""
    x, y = a.info, b.info
    if x.process_id and y.process_id and x.process_id != y.process_id:
        return True
    if x.uptime_s is not None and y.uptime_s is not None and y.uptime_s + 1 < x.uptime_s:
        return True
    return y.total_connections_received < x.total_connections_received or y.rejected_connections < x.rejected_connections


def interval_s(a: Snapshot, b: Snapshot) -> float:
    """Seconds from `a` to `b`: on the monotonic clock when both were taken with it, else on wall time."""
    if a.monotonic is not None and b.monotonic is not None:
        return b.monotonic - a.monotonic
    return b.taken_at - a.taken_at


@dataclass(frozen=True)
class HostChurn:
    """One client host across a window, by client ID (an address can be reused; an ID never is)."""

    host: str
    first: int  # connections in the first listed Snapshot
    last: int  # connections in the last listed Snapshot
    opened: int  # IDs seen after the first listed Snapshot and not in it (short-lived ones included)
    closed: int  # IDs seen before the last listed Snapshot and not in it

    @property
    def growth(self) -> int:
        return self.last - self.first


@dataclass(frozen=True)
class Window:
    """Snapshots of one target, oldest first."""

    snapshots: tuple[Snapshot, ...]

    def __post_init__(self) -> None:
        if not self.snapshots:
            raise ValueError("a window needs at least one Snapshot")

    @classmethod
    def of(cls, snapshots: Sequence[Snapshot]) -> "Window":
        """In the order taken (the caller's order: a Sampler's ticks, a recording's lines)."""
        return cls(tuple(snapshots))

    @property
    def first(self) -> Snapshot:
        return self.snapshots[0]

    @property
    def now(self) -> Snapshot:
        return self.snapshots[-1]

    def __len__(self) -> int:
        return len(self.snapshots)

    @property
    def span_s(self) -> float:
        return interval_s(self.first, self.now)

    @cached_property
    def segments(self) -> tuple[tuple[Snapshot, ...], ...]:
        """Runs of Snapshots of one server process, split wherever it restarted."""
        runs: list[list[Snapshot]] = [[self.snapshots[0]]]
        for a, b in zip(self.snapshots, self.snapshots[1:]):
            if restarted(a, b):
                runs.append([])
            runs[-1].append(b)
        return tuple(tuple(r) for r in runs)

    @property
    def restarts(self) -> int:
        return len(self.segments) - 1

    @property
    def current(self) -> tuple[Snapshot, ...]:
        """The Snapshots since the last restart: the only ones whose client IDs compare with the latest."""
        return self.segments[-1]

    @cached_property
    def listed(self) -> tuple[Snapshot, ...]:
        """The current process's Snapshots that carry CLIENT LIST (INFO-only ticks have no per-client view)."""
        return tuple(s for s in self.current if s.clients is not None)

    def pairs(self) -> list[tuple[Snapshot, Snapshot]]:
        """Consecutive Snapshots of the same process: the intervals counter deltas are valid over."""
        return [(a, b) for seg in self.segments for a, b in zip(seg, seg[1:])]

    @cached_property
    def churn(self) -> dict[str, HostChurn] | None:
        """Per host: connections at both ends and turnover by client ID over every listed Snapshot in
        between. None with fewer than two listed Snapshots of the current process (nothing to compare)."""
        listed = self.listed
        if len(listed) < 2:
            return None
        ids: list[dict[str, set[int]]] = []
        for snap in listed:
            by_host: dict[str, set[int]] = defaultdict(set)
            for rec in client_records(snap):
                by_host[rec.host].add(rec.id)
            ids.append(by_host)
        first, last = ids[0], ids[-1]
        hosts = set().union(*ids)
        out: dict[str, HostChurn] = {}
        for host in hosts:
            seen_after = set().union(*(m.get(host, set()) for m in ids[1:]))
            seen_before = set().union(*(m.get(host, set()) for m in ids[:-1]))
            begin, end = first.get(host, set()), last.get(host, set())
            out[host] = HostChurn(host, len(begin), len(end), len(seen_after - begin), len(seen_before - end))
        return out
