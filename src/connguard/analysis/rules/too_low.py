"""maxclients_too_low: legitimate, active traffic is refused: busy connections, no idle pile, modest refusals."""

from __future__ import annotations

from connguard.analysis.facts import Facts
from connguard.analysis.findings import Finding
from connguard.analysis.rules._actions import raise_maxclients, round_up
from connguard.analysis.rules.storm import storming

ACTIVE_SHARE = 0.6  # of plain connections that ran a command recently
IDLE_PILE = 0.3  # more idle than this share of plain connections is a leak or an oversized pool instead
GROWTH_FACTOR = 1.5


def check(f: Facts) -> Finding | None:
    if not f.maxclients or storming(f):
        return None
    if not (f.full or f.pinned() or f.ratio >= f.settings.critical_ratio):
        return None
    rejected_now = f.rates.rejected if f.rates else 0
    if not (rejected_now > 0 or f.now.info.rejected_connections > 0):
        return None
    plain = sum(s.normal for s in f.app_sources)
    active = sum(s.active for s in f.app_sources)
    idle = sum(s.idle_over_threshold for s in f.app_sources)
    if f.sources is not None:
        if plain == 0 or active < ACTIVE_SHARE * plain or idle > IDLE_PILE * plain:
            return None
        confidence = 0.6 + 0.2 * (active >= 0.85 * plain) + 0.1 * (rejected_now > 0)
    else:
        confidence = 0.4  # INFO alone: cannot see whether the connections are busy
    wanted = round_up(max(f.maxclients * GROWTH_FACTOR, f.used + 100))
    rate = f" ({f.rates.rejected_per_s:g}/s now)" if f.rates and f.rates.rejected else ""
    summary = (
        f"maxclients too low: {f.used}/{f.maxclients} slots are busy with active connections and "
        f"{f.now.info.rejected_connections} were refused{rate}; raise maxclients (to about {wanted}) within the fd limit."
    )
    evidence = {
        "slots_held": f.used, "used": f.used, "maxclients": f.maxclients, "plain_connections": plain if f.sources else None,
        "active": active if f.sources else None, "idle_over_threshold": idle if f.sources else None,
        "rejected_connections_total": f.now.info.rejected_connections,
        "rejected_per_s": f.rates.rejected_per_s if f.rates else None, "fd_limit": f.fd_limit,
        "hosts": [s.host for s in sorted(f.app_sources, key=lambda s: -s.active)[:5]],
    }
    actions = tuple(raise_maxclients(f, wanted, "Give legitimate traffic room"))
    severity = "critical" if rejected_now > 0 or f.full else "warning"
    return Finding("maxclients_too_low", severity, min(confidence, 0.95), summary, evidence, actions)
