"""pool_oversize: a few hosts each hold a similar, fixed block of connections that adds up to near the limit."""

from __future__ import annotations

import statistics

from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding
from connguard.analysis.rules.leak import leaking_hosts
from connguard.analysis.sources import Source

MIN_BLOCK = 5
NEAR_LIMIT = 0.7  # pools matter once they fill this share of maxclients
TIGHT = 0.25  # ages within 25% of their median: the block was opened together
SIMILAR = 0.6  # smallest block at least 60% of the largest
BUSY = 0.6  # a block this busy is needed, not oversized: that is maxclients_too_low territory
TARGET_RATIO = 0.7  # size pools so everything together uses at most this share of maxclients


def blocks(f: Facts) -> list[Source]:
    leaks = {s.host for s in leaking_hosts(f)}
    # A host whose connections were replaced while we watched holds no fixed block: retry-storm fillers
    # and request-per-connection traffic look like similar blocks at any one instant.
    candidates = [s for s in f.app_sources if s.normal >= MIN_BLOCK and s.host not in leaks and not s.churning]
    if not candidates:
        return []
    biggest = max(s.normal for s in candidates)
    return [s for s in candidates if s.normal >= max(MIN_BLOCK, 0.5 * biggest)]


def check(f: Facts) -> Finding | None:
    if not f.maxclients or not (f.full or f.ratio >= NEAR_LIMIT):
        return None
    hosts = blocks(f)
    if not hosts:
        return None
    total = sum(s.connections for s in hosts)
    if total < 0.5 * f.used:
        return None
    plain = sum(s.normal for s in hosts)
    if sum(s.active for s in hosts) >= BUSY * plain:
        return None  # the pools use what they hold
    tight = sum(1 for s in hosts if s.spread_ratio <= TIGHT) >= 0.75 * len(hosts)
    sizes = [s.normal for s in hosts]
    similar = len(hosts) >= 2 and min(sizes) >= SIMILAR * max(sizes)
    known = [s.growth for s in hosts if s.growth is not None]
    stable = bool(known) and all(abs(g) <= max(1, 0.05 * s) for g, s in zip(known, sizes))
    if not tight and not similar:
        return None
    confidence = (0.6 if len(hosts) >= 2 else 0.45) + 0.15 * similar + 0.1 * tight + 0.1 * stable
    n, m = len(hosts), int(statistics.median(sizes))
    other = f.used - total
    per_host = max(1, int((TARGET_RATIO * f.maxclients - other) // n))
    summary = (
        f"Pool oversize: {n} host{'s' if n > 1 else ''} hold{'' if n > 1 else 's'} a fixed block of about {m} "
        f"connections each ({n} x {m} = {total} of maxclients {f.maxclients}); cap each pool at {per_host}."
    )
    evidence = {
        "hosts": [s.host for s in hosts],
        "instances": n, "pool_size": m, "total": total, "maxclients": f.maxclients, "other_used": other,
        "opened_together": tight, "similar_blocks": similar, "stable": stable if known else None,
        "per_host": [{"host": s.host, "connections": s.connections, "active": s.active,
                      "median_age_s": s.median_age_s, "age_spread_s": s.age_spread_s, "growth": s.growth,
                      "names": list(s.names), "libs": list(s.libs)} for s in hosts[:10]],
    }
    actions = (
        Action(
            f"Size pools from N x M: {n} instances x max_connections={per_host} = {n * per_host} "
            f"(+{other} other) stays within {int(TARGET_RATIO * 100)}% of maxclients {f.maxclients}; a blocking "
            "pool waits instead of failing when all are busy",
            f'redis.BlockingConnectionPool.from_url("{f.cmd.url}", max_connections={per_host}, timeout=20)', False,
        ),
        Action("Or share one pool per process (not one per worker), or put a proxy (Envoy, twemproxy) "
               "in front to consolidate connections", None, False),
    )
    return Finding("pool_oversize", f.ratio_severity("info"), min(confidence, 0.95), summary, evidence, actions)
