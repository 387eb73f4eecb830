"""pool_oversize: a few hosts each hold a similar, fixed block of connections that adds up to near the limit.

The runbook's arithmetic, N instances x pool size ~ maxclients. Busy or idle, the blocks are the cause;
which one is context for the fix (idle: the pools are too big; busy: pipeline, or give them room). Only
when busy pools are already being refused is it `retry_storm` or `maxclients_too_low` instead."""

from __future__ import annotations

import statistics

from connguard.analysis.capacity import WARNING_RATIO
from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding
from connguard.analysis.rules import storm, too_low
from connguard.analysis.rules._actions import raise_maxclients, round_up
from connguard.analysis.rules.leak import leaking_hosts
from connguard.analysis.sources import Source, active_idle_limit
from connguard.analysis.pools import largest_under, least_maxclients_for

MIN_BLOCK = 5
NEAR_LIMIT = 0.7  # pools are worth a note once they fill this share of maxclients (a warning from 0.8)
TIGHT = 0.25  # ages within 25% of their median: the block was opened together
SIMILAR = 0.6  # smallest block at least 60% of the largest
BUSY = 0.6  # this share of a block ran a command recently: the pools use what they hold


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
    active = sum(s.active for s in hosts)
    busy = active >= BUSY * plain
    if busy and (storm.storming(f) or storm.suspected_from_counters(f) or too_low.check(f) is not None):
        return None  # busy and already refused: retry_storm or maxclients_too_low names it, with its fix
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
    per_host = max(1, largest_under(WARNING_RATIO, f.maxclients, other, n))
    line = f"{WARNING_RATIO:.0%}"
    recent = int(active_idle_limit(f.settings.idle_threshold_s))
    context = (f"the pools are busy ({active} of {plain} ran a command in the last {recent}s), so they need "
               "the work done with fewer connections or more room") if busy else (
               f"the pools are mostly idle ({active} of {plain} in use), so they are bigger than the work")
    wanted = round_up(least_maxclients_for(f.used))
    summary = (
        f"Pool oversize: {n} host{'s' if n > 1 else ''} hold{'' if n > 1 else 's'} a fixed block of about {m} "
        f"connections each ({n} x {m} = {total} of maxclients {f.maxclients}); {context}. Cap each pool at "
        f"{per_host}{' and pipeline' if busy else ''}, or raise maxclients to {wanted} within the fd limit."
    )
    evidence = {
        "slots_held": total, "hosts": [s.host for s in hosts],
        "instances": n, "pool_size": m, "total": total, "maxclients": f.maxclients, "other_used": other,
        "pools": "busy" if busy else "idle", "active": active, "plain": plain,
        "opened_together": tight, "similar_blocks": similar, "stable": stable if known else None,
        "per_host": [{"host": s.host, "connections": s.connections, "active": s.active,
                      "median_age_s": s.median_age_s, "age_spread_s": s.age_spread_s, "growth": s.growth,
                      "names": list(s.names), "libs": list(s.libs)} for s in hosts[:10]],
    }
    cap = Action(
        f"Size pools from N x M: {n} instances x max_connections={per_host} = {n * per_host} "
        f"(+{other} other) stays under the {line} line of maxclients {f.maxclients}; a blocking pool waits instead "
        "of failing when all are busy" + ("; pipeline (batch commands per round trip) so fewer connections "
                                          "carry the same work" if busy else ""),
        f'redis.BlockingConnectionPool.from_url("{f.cmd.url}", max_connections={per_host}, timeout=20)', False,
    )
    room = raise_maxclients(f, wanted, f"Or give the pools room: {f.used} in use stays under the {line} line")
    share = Action("Or share one pool per process (not one per worker), or put a proxy (Envoy, twemproxy) "
                   "in front to consolidate connections", None, False)
    actions = (cap, *room, share)
    return Finding("pool_oversize", f.ratio_severity("info"), min(confidence, 0.95), summary, evidence, actions)
