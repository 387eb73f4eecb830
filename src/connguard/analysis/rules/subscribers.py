"""Subscriber piles, the pub/sub kind of connection_leak: a host that opens a SUBSCRIBE (or PSUBSCRIBE, as
Celery's Redis result backend does) connection per session and never closes it. A subscriber is idle by
nature, so the pile is judged by its ages: opened over time, and either still growing or outliving every
other connection of its host (the sessions that opened them are gone)."""

from __future__ import annotations

from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action
from connguard.analysis.rules._actions import WAIT_NOTE, refusing, waiting
from connguard.analysis.sources import Source

MIN_PILE = 5  # subscribers on one host, at least
SPREAD = 0.25  # ages spread over more than 25% of their median: opened one by one, not at startup
MIN_GROWTH = 2


def is_subscriber_pile(s: Source) -> bool:
    if s.pubsub < MIN_PILE or s.pubsub_spread_ratio <= SPREAD or s.churning:
        return False
    growing = s.growth is not None and s.growth >= MIN_GROWTH
    return growing or s.pubsub_outliving >= 0.5 * s.pubsub


def subscriber_piles(f: Facts) -> list[Source]:
    return sorted((s for s in f.app_sources if is_subscriber_pile(s)), key=lambda s: (-s.pubsub, s.host))


def describe(piles: list[Source]) -> str:
    held = sum(s.pubsub for s in piles)
    patterns = sum(s.pubsub_patterns for s in piles)
    growing = any(s.growth is not None and s.growth >= MIN_GROWTH for s in piles)
    kind = "pattern subscribers (PSUBSCRIBE)" if patterns >= 0.5 * held else "subscribers (SUBSCRIBE)"
    return (f"{held} {kind} pile up on {', '.join(s.host for s in piles[:3])}, opened one by one over "
            f"{max(s.pubsub_age_spread_s for s in piles)}s{', still growing' if growing else ''}"
            f"{'' if growing else ', older than every other connection of their host'}: each session subscribes "
            "and never unsubscribes or closes (Celery's Redis result backend leaves such piles)")


def evidence(piles: list[Source]) -> dict[str, object]:
    return {
        "subscriber_hosts": [s.host for s in piles],
        "subscribers": sum(s.pubsub for s in piles),
        "pattern_subscribers": sum(s.pubsub_patterns for s in piles),
        "per_subscriber_host": [{"host": s.host, "subscribers": s.pubsub, "patterns": s.pubsub_patterns,
                                 "median_age_s": s.pubsub_median_age_s, "age_spread_s": s.pubsub_age_spread_s,
                                 "outliving_other_connections": s.pubsub_outliving, "growth": s.growth,
                                 "names": list(s.names)} for s in piles[:5]],
    }


def kill_actions(f: Facts, piles: list[Source], limit: int = 3) -> list[Action]:
    """`kill --pubsub`: the selector that lets subscribers be chosen (they are protected otherwise)."""
    actions = [
        Action(f"Disconnect the {s.pubsub} subscribers from {s.host} (dry run until --yes; --pubsub lets "
               "subscribers be chosen, each is named; replicas, Sentinel and MONITOR stay protected"
               f"{WAIT_NOTE if refusing(f) else ''})",
               f.cmd.connguard("kill", "--source", s.host, "--pubsub", *waiting(f)), True)
        for s in piles[:limit]
    ]
    ids = [i for s in piles for i in s.pubsub_ids]
    if ids and not refusing(f):
        actions.append(Action("Or with redis-cli, by client ID, never by ip:port", f.cmd.kill_ids(ids), True))
    actions.append(Action(
        "Fix at the source: close the pub/sub connection when the session ends (pubsub.close() in `finally`); "
        "for Celery results, call AsyncResult.forget()/get() so the backend unsubscribes, or use a result backend "
        "without PSUBSCRIBE; CONFIG SET timeout never closes subscribers", None, False))
    return actions
