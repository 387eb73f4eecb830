"""Map connections to client hosts: per host, how many, how idle, how old, who (names, libs, users)."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from connguard.analysis import frameworks
from connguard.analysis.classify import BLOCKED, INTERNAL_KINDS, NORMAL, PUBSUB, client_records, kind_of
from connguard.analysis.window import HostChurn
from connguard.probe.model import ClientRecord, Snapshot
from connguard.settings import NAMES_LISTED

MAX_LISTED = NAMES_LISTED  # names/libs/users shown per source (connguard.settings)
ACTIVE_IDLE_CAP_S = 30  # a connection that ran a command this recently is in use, whatever the threshold


def host_key(host: str) -> tuple[int, int, str]:
    """Sort hosts as addresses (127.1.0.2 before 127.1.0.10): IPv4, then IPv6, then names and `unix`."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return (10, 0, host)
    return (addr.version, int(addr), "")


def percentile(sorted_values: Sequence[int], q: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(q * (len(sorted_values) - 1) + 0.5))]


def left_after_open(r: ClientRecord) -> bool:
    """Used once, then left: idle for most of its age. CLIENT LIST's age and idle are whole seconds of the
    same cached clock, and a first command read in the second after the accept reads idle = age - 1; at a
    few seconds of age that tick alone is over 20 %, so a connection whose only use was in the tick after
    it opened counts too (from age 3: at age 2, idle 1 could as well be a use a full second later)."""
    return r.idle_s >= 0.8 * r.age_s or r.idle_s >= r.age_s - 1 >= 2


def active_idle_limit(idle_threshold_s: float) -> float:
    """Below this idle time a connection counts as active (in use)."""
    return min(idle_threshold_s, ACTIVE_IDLE_CAP_S)


@dataclass(frozen=True)
class Source:
    """One client host (an IP, or `unix`). `idle_over_threshold` counts plain connections only:
    blocked, pub/sub and internal links are idle by nature and are never kill candidates."""

    host: str
    connections: int
    idle_over_threshold: int
    max_idle_s: int
    median_age_s: int
    names: tuple[str, ...]
    libs: tuple[str, ...]
    users: tuple[str, ...]
    blocked: int
    normal: int = 0
    pubsub: int = 0
    internal: int = 0
    active: int = 0  # plain connections idle below the active limit
    abandoned: int = 0  # idle over threshold and left_after_open: used once, then left
    age_spread_s: int = 0  # p90 - p10 of plain connections' ages: how spread out in time they were opened
    median_idle_s: int = 0
    growth: int | None = None  # change in this host's connections since the first Snapshot
    # Turnover by client ID since the first Snapshot (None with one Snapshot): a storm or fan-out replaces
    # its connections, a pool or a leak keeps them. Counts alone (growth) cannot tell churn from stillness.
    opened: int | None = None  # connections that were not there in the first Snapshot
    closed: int | None = None  # connections of the first Snapshot that are gone
    idle_ids: tuple[int, ...] = field(default=(), repr=False)  # plain, idle over threshold, longest idle first
    stale: int = 0  # plain, left_after_open (>= 2 s old): opened, used once, left - at any age
    stale_min_idle_s: int = 0  # the shortest idle among them, for a kill that reaches them all
    stale_ids: tuple[int, ...] = field(default=(), repr=False)
    hosts: int = 1  # >1 only for the aggregated "rest" row
    # A burst leak opened within a second or two has no age spread to go by; what else sets the stale pile
    # apart from the host's other connections (those not stale: its working pool, its named clients):
    anonymous_stale: int = 0  # stale connections with neither a client name nor a lib-name
    named_others: int = 0  # the host's other connections that do carry a name or lib-name
    others: int = 0  # the host's connections that are not stale
    others_max_idle_s: int | None = None  # the longest idle among them
    stale_age_gap_s: int | None = None  # seconds between the stale pile's ages and the others' ages
    frameworks: tuple[str, ...] = ()  # advisory names ("celery worker", "rq worker"): analysis/frameworks.py
    # Subscribers (SUBSCRIBE/PSUBSCRIBE) are idle by nature, so their ages, not idle times, tell a pile:
    pubsub_ids: tuple[int, ...] = field(default=(), repr=False)  # oldest first
    pubsub_median_age_s: int = 0
    pubsub_age_spread_s: int = 0  # p90 - p10 of their ages: opened over time (one per session) or together
    pubsub_outliving: int = 0  # subscribers older than every other connection of the host: left behind
    pubsub_patterns: int = 0  # of them pattern subscribers (psub > 0)

    @property
    def churning(self) -> bool:
        """Connections came and went while we watched: not a fixed block, not a still pile."""
        return bool(self.closed) and bool(self.opened) and self.closed >= max(2, 0.2 * self.connections)

    @property
    def pubsub_spread_ratio(self) -> float:
        return max(0, self.pubsub_age_spread_s - 1) / max(self.pubsub_median_age_s, 1)

    @property
    def spread_ratio(self) -> float:
        """Age spread relative to median age, with one second of clock granularity forgiven."""
        return max(0, self.age_spread_s - 1) / max(self.median_age_s, 1)

    def to_dict(self) -> dict[str, object]:
        return {
            "host": self.host, "connections": self.connections, "idle_over_threshold": self.idle_over_threshold,
            "max_idle_s": self.max_idle_s, "median_age_s": self.median_age_s, "names": list(self.names),
            "libs": list(self.libs), "blocked": self.blocked, "users": list(self.users),
            "normal": self.normal, "pubsub": self.pubsub, "internal": self.internal, "active": self.active,
            "age_spread_s": self.age_spread_s, "growth": self.growth, "opened": self.opened, "closed": self.closed,
            "hosts": self.hosts, **({"frameworks": list(self.frameworks)} if self.frameworks else {}),
        }


@dataclass(frozen=True)
class SourceTable:
    """All sources, busiest first; `top` for display and `rest` folded into one row."""

    all: tuple[Source, ...]
    top: tuple[Source, ...]
    rest: Source | None

    def by_host(self) -> dict[str, Source]:
        return {s.host: s for s in self.all}


def _distinct(values: Iterable[str | None]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for v in values:
        if v and v not in seen:
            seen[v] = None
            if len(seen) >= MAX_LISTED:
                break
    return tuple(seen)


def summarize(host: str, recs: Sequence[ClientRecord], idle_threshold_s: float, growth: int | None = None,
              before_ids: frozenset[int] | None = None, *, churn: HostChurn | None = None) -> Source:
    """One host's row. Turnover comes from `churn` (a whole window) or, in the two-Snapshot form, from
    `before_ids` (the host's client IDs in the earlier Snapshot)."""
    opened = closed = None
    if churn is not None:
        growth, opened, closed = churn.growth, churn.opened, churn.closed
    elif before_ids is not None:
        opened = sum(1 for r in recs if r.id not in before_ids)
        closed = len(before_ids - {r.id for r in recs})
    kinds = [kind_of(r) for r in recs]
    plain = [r for r, k in zip(recs, kinds) if k == NORMAL]
    idle_over = sorted((r for r in plain if r.idle_s >= idle_threshold_s), key=lambda r: -r.idle_s)
    active_limit = active_idle_limit(idle_threshold_s)
    plain_ages = sorted(r.age_s for r in plain)
    stale = sorted((r for r in plain if r.age_s >= 2 and left_after_open(r)), key=lambda r: -r.idle_s)
    all_ages = sorted(r.age_s for r in recs)
    stale_ids = {r.id for r in stale}
    others = [r for r in recs if r.id not in stale_ids] if stale else list(recs)
    gap = None
    if stale and others:
        s_lo, s_hi = min(r.age_s for r in stale), max(r.age_s for r in stale)
        o_lo, o_hi = min(r.age_s for r in others), max(r.age_s for r in others)
        gap = max(0, s_lo - o_hi, o_lo - s_hi)
    subs = sorted((r for r, k in zip(recs, kinds) if k == PUBSUB), key=lambda r: (-r.age_s, r.id))
    sub_ages = sorted(r.age_s for r in subs)
    non_sub_ages = [r.age_s for r, k in zip(recs, kinds) if k != PUBSUB]
    oldest_other = max(non_sub_ages, default=None)
    return Source(
        host=host,
        connections=len(recs),
        idle_over_threshold=len(idle_over),
        max_idle_s=max((r.idle_s for r in recs), default=0),
        median_age_s=percentile(all_ages, 0.5),
        names=_distinct(r.name for r in recs),
        libs=_distinct(r.lib for r in recs),
        users=_distinct(r.user for r in recs),
        blocked=sum(1 for k in kinds if k == BLOCKED),
        normal=len(plain),
        pubsub=sum(1 for k in kinds if k == PUBSUB),
        internal=sum(1 for k in kinds if k in INTERNAL_KINDS),
        # Active: ran a command recently, and not merely because it is young (opened, then never used).
        active=sum(1 for r in plain if r.idle_s < active_limit and r.id not in stale_ids),
        abandoned=sum(1 for r in idle_over if left_after_open(r)),
        age_spread_s=percentile(plain_ages, 0.9) - percentile(plain_ages, 0.1),
        median_idle_s=percentile(sorted(r.idle_s for r in plain), 0.5),
        growth=growth,
        opened=opened,
        closed=closed,
        idle_ids=tuple(r.id for r in idle_over),
        stale=len(stale),
        stale_min_idle_s=stale[-1].idle_s if stale else 0,
        stale_ids=tuple(r.id for r in stale),
        anonymous_stale=sum(1 for r in stale if not r.name and not r.lib_name),
        named_others=sum(1 for r in others if r.name or r.lib_name),
        others=len(others),
        others_max_idle_s=max((r.idle_s for r in others), default=None),
        stale_age_gap_s=gap,
        frameworks=frameworks.labels(recs),
        pubsub_ids=tuple(r.id for r in subs),
        pubsub_median_age_s=percentile(sub_ages, 0.5),
        pubsub_age_spread_s=percentile(sub_ages, 0.9) - percentile(sub_ages, 0.1),
        pubsub_outliving=sum(1 for a in sub_ages if oldest_other is not None and a > oldest_other),
        pubsub_patterns=sum(1 for r in subs if r.psub),
    )


def group_by_host(snapshot: Snapshot) -> dict[str, list[ClientRecord]]:
    groups: dict[str, list[ClientRecord]] = defaultdict(list)
    for rec in client_records(snapshot):
        groups[rec.host].append(rec)
    return groups


def fold_rest(rest: Sequence[Source]) -> Source | None:
    if not rest:
        return None
    return Source(
        host=f"({len(rest)} other host{'s' if len(rest) > 1 else ''})",
        connections=sum(s.connections for s in rest),
        idle_over_threshold=sum(s.idle_over_threshold for s in rest),
        max_idle_s=max(s.max_idle_s for s in rest),
        median_age_s=percentile(sorted(s.median_age_s for s in rest), 0.5),
        names=_distinct(n for s in rest for n in s.names),
        libs=_distinct(n for s in rest for n in s.libs),
        users=_distinct(n for s in rest for n in s.users),
        blocked=sum(s.blocked for s in rest),
        normal=sum(s.normal for s in rest),
        pubsub=sum(s.pubsub for s in rest),
        internal=sum(s.internal for s in rest),
        active=sum(s.active for s in rest),
        abandoned=sum(s.abandoned for s in rest),
        hosts=len(rest),
    )


def source_table(
    snapshot: Snapshot, idle_threshold_s: float, top: int, previous: Snapshot | None = None,
    *, churn: Mapping[str, HostChurn] | None = None,
) -> SourceTable | None:
    """Group `snapshot`'s clients by host; None when CLIENT LIST was not available. Each host's growth and
    turnover come from `churn` (Window.churn, over a whole window), else from `previous` (two Snapshots)."""
    if snapshot.clients is None:
        return None
    before = None
    if churn is None and previous is not None and previous.clients is not None:
        before = {h: frozenset(r.id for r in rs) for h, rs in group_by_host(previous).items()}
    sources = [
        summarize(host, recs, idle_threshold_s,
                  None if before is None else len(recs) - len(before.get(host, ())),
                  None if before is None else before.get(host, frozenset()),
                  churn=None if churn is None else churn.get(host))
        for host, recs in group_by_host(snapshot).items()
    ]
    sources.sort(key=lambda s: (-s.connections, -s.idle_over_threshold, host_key(s.host)))
    top = max(0, top)
    return SourceTable(all=tuple(sources), top=tuple(sources[:top]), rest=fold_rest(sources[top:]))
