"""connection_leak: a host's connections pile up idle, opened over time (or still growing), used once and left."""

from __future__ import annotations

from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding
from connguard.analysis.rules import subscribers
from connguard.analysis.rules._actions import keepalive_advice, kill_idle, kill_stale, timeout_safety_net
from connguard.analysis.sources import Source

MIN_PILE = 5  # idle connections on one host before it can be a leak (fan-out hosts hold 1-2)
IDLE_SHARE = 0.5  # most of the host's plain connections that are not in use must be idle
# Ages spread over more than 25% of their median: opened over time. It meets pool_oversize's TIGHT, so a
# pile of abandoned connections is always one or the other (a gap between them left a full server unexplained).
SPREAD = 0.25
MIN_GROWTH = 2


def is_spread(s: Source) -> bool:
    return s.spread_ratio > SPREAD


def unused(s: Source) -> int:
    """Plain connections not in use: a leak beside a busy pool on the same host is judged against these,
    so the pool's working connections do not hide it."""
    return s.normal - s.active


def is_growing(s: Source) -> bool:
    return s.growth is not None and s.growth >= MIN_GROWTH


def is_idle_pile(s: Source) -> bool:
    """The runbook's signal: many connections idle past the threshold, and either still growing, or opened
    over time and then abandoned (idle for most of their age). A pool grown lazily at past peaks is also
    spread out and idle, but its connections were used for a while after opening."""
    abandoned = s.abandoned >= IDLE_SHARE * s.idle_over_threshold
    return (s.idle_over_threshold >= MIN_PILE and s.idle_over_threshold >= IDLE_SHARE * unused(s)
            and (is_growing(s) or (is_spread(s) and abandoned)))


def is_young_leak(s: Source) -> bool:
    """A leak younger than the idle threshold: growing while we watched, opened over time, and nearly
    all of it used once and left (idle for most of its age). A pool that grows under load is busy instead."""
    return is_growing(s) and is_spread(s) and s.stale >= MIN_PILE and s.stale >= 0.8 * unused(s)


FAR_IDLE = 3  # the pile idles this many times longer than the host's other connections (and 2 s more)
SEPARATE_BURST_S = 2  # the pile's ages lie this far from the others': opened at another moment


def burst_signals(s: Source) -> tuple[str, ...]:
    """Why a pile opened in one burst (no age spread, maybe no growth left to see) is a leak rather than
    the idle part of a pool: what the window gives besides ages. Each signal compares the pile with the
    host's own other connections, so one host's working pool and its leak are told apart."""
    if s.stale < MIN_PILE or s.stale < 0.8 * unused(s) or s.churning:
        return ()
    found = []
    if s.anonymous_stale >= 0.8 * s.stale and s.named_others:
        found.append("no client name or lib-name, where the host's other connections have one")
    if (s.others_max_idle_s is not None and s.stale_age_gap_s is not None
            and s.stale_age_gap_s >= SEPARATE_BURST_S
            and s.stale_min_idle_s >= max(FAR_IDLE * s.others_max_idle_s, s.others_max_idle_s + 2)):
        found.append(f"idle {s.stale_min_idle_s}s or more against at most {s.others_max_idle_s}s for the host's "
                     f"other connections, opened {s.stale_age_gap_s}s apart from them")
    return tuple(found)


def is_burst_leak(s: Source) -> bool:
    """Opened within a second or two, never used after the first command, and set apart from the host's
    other connections by name or by idle time: a leak, whether or not it still grows."""
    return bool(burst_signals(s))


def is_abandoned_pile(f: Facts, s: Source) -> bool:
    """More than half the limit from one host, all idle past the threshold since they were opened and no
    longer growing: a leak or an abandoned pool, and either way the slots can be taken back."""
    return (bool(f.maxclients) and s.idle_over_threshold > 0.5 * (f.maxclients or 0)
            and s.abandoned >= 0.9 * s.idle_over_threshold and s.idle_over_threshold >= 0.9 * unused(s)
            and not is_growing(s) and not s.churning)


def leaking_hosts(f: Facts) -> list[Source]:
    # A leak keeps what it opens; a host whose connections are being replaced (a storm's fillers) is not one.
    out = [s for s in f.app_sources if not s.churning and (is_idle_pile(s) or is_young_leak(s) or is_burst_leak(s)
                                                           or is_abandoned_pile(f, s))]
    return sorted(out, key=lambda s: (-s.idle_over_threshold, -s.stale))


def check(f: Facts) -> Finding | None:
    hosts = leaking_hosts(f)
    piles = subscribers.subscriber_piles(f)
    if not hosts:
        return subscriber_finding(f, piles) if piles else None
    young = not any(is_idle_pile(s) or is_abandoned_pile(f, s) for s in hosts)
    burst = [s for s in hosts if is_burst_leak(s)]
    abandoned_pile = [s for s in hosts if is_abandoned_pile(f, s) and not is_idle_pile(s)]
    pile = sum(s.stale if young else s.idle_over_threshold for s in hosts)
    abandoned = sum(s.abandoned for s in hosts)
    growing = any(is_growing(s) for s in hosts)
    spread = any(is_spread(s) for s in hosts)
    confidence = 0.5 + 0.2 * growing + 0.15 * spread + 0.1 * (abandoned >= 0.8 * pile)
    confidence += 0.05 * (f.rates is not None and f.rates.used_delta > 0)
    if young:
        confidence -= 0.15  # nothing has crossed the idle threshold yet
    confidence += 0.1 * bool(burst)
    floor = "warning" if growing or burst or (f.maxclients and pile >= 0.05 * f.maxclients) else "info"
    top = hosts[0]
    names = ", ".join(top.names) or "no client name"
    summary = (
        f"Connection leak: {pile} connections {'left idle since they were opened' if young else f'idle over {f.idle_threshold}s'} pile up on "
        f"{', '.join(s.host for s in hosts[:3])}{' and more' if len(hosts) > 3 else ''} "
        f"({names}){', still growing' if growing else ''}; disconnect them by ID and fix the code that never closes them."
    )
    if burst:
        b = burst[0]
        summary += (f" {b.host}'s {b.stale} connections never used after their first command stand apart from "
                    f"its others ({'; '.join(burst_signals(b))}): a leak even if it opened them at once and "
                    "stopped.")
    if abandoned_pile:
        a = abandoned_pile[0]
        summary += (f" {a.host} alone holds {a.idle_over_threshold} of {f.maxclients} slots, all idle since they "
                    "were opened and no longer growing: a leak or an abandoned pool, either way safe to take back.")
    evidence = {
        "hosts": [s.host for s in hosts],
        "idle_over_threshold": sum(s.idle_over_threshold for s in hosts),
        "stale": sum(s.stale for s in hosts),
        "idle_threshold_s": f.idle_threshold,
        "abandoned": abandoned,
        "used": f.used, "maxclients": f.maxclients,
        "used_delta": f.rates.used_delta if f.rates else None,
        "burst": {s.host: list(burst_signals(s)) for s in burst},
        "abandoned_pile": [s.host for s in abandoned_pile],
        "per_host": [
            {"host": s.host, "connections": s.connections, "idle_over_threshold": s.idle_over_threshold,
             "max_idle_s": s.max_idle_s, "median_age_s": s.median_age_s, "age_spread_s": s.age_spread_s,
             "growth": s.growth, "names": list(s.names), "libs": list(s.libs)}
            for s in hosts[:5]
        ],
    }
    evidence["slots_held"] = pile + sum(s.pubsub for s in piles)
    if piles:
        summary += " Also: " + subscribers.describe(piles) + "."
        evidence.update(subscribers.evidence(piles))
    actions = (kill_stale(f, hosts) if young else kill_idle(f, hosts)) + [
        timeout_safety_net(f), *keepalive_advice(f),
        Action(
            f"Fix at the source: in {names}{' (' + ', '.join(top.libs) + ')' if top.libs else ''} close connections in "
            "`finally` (or use one module-level client/pool); connguard.guard's leak detection reports the code "
            "that checked out a connection and never returned it",
            f'from connguard.guard import guarded_client; r = guarded_client("{f.cmd.url}", leak_threshold_s=60)', False,
        ),
    ] + (subscribers.kill_actions(f, piles) if piles else [])
    return Finding("connection_leak", f.ratio_severity(floor), min(confidence, 0.95), summary, evidence, tuple(actions))


def subscriber_finding(f: Facts, piles: list[Source]) -> Finding:
    """A leak of subscribers alone: the pile is pub/sub, so the kill goes by --pubsub, never by idle time."""
    held = sum(s.pubsub for s in piles)
    growing = any(is_growing(s) for s in piles)
    confidence = 0.6 + 0.15 * growing + 0.1 * any(s.pubsub_outliving >= 0.5 * s.pubsub for s in piles)
    big = bool(f.maxclients) and held >= 0.05 * (f.maxclients or 0)
    summary = (f"Connection leak (subscribers): {subscribers.describe(piles)}. Disconnect them with "
               "`connguard kill --pubsub` and close the subscription when the session ends.")
    evidence = {"slots_held": held, "hosts": [s.host for s in piles], "kind": "pubsub", "used": f.used,
                "maxclients": f.maxclients, "used_delta": f.rates.used_delta if f.rates else None,
                **subscribers.evidence(piles)}
    return Finding("connection_leak", f.ratio_severity("warning" if growing or big else "info"),
                   min(confidence, 0.95), summary, evidence, tuple(subscribers.kill_actions(f, piles)))
