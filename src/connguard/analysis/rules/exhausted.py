"""exhausted: the server refuses new connections right now (full, or rejecting while near the limit)."""

from __future__ import annotations

from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding
from connguard.analysis.rules._actions import kill_idle


def check(f: Facts) -> Finding | None:
    rejecting = f.rates is not None and f.rates.rejected > 0 and f.pinned()
    if not (f.full or rejecting or f.refused_us):
        return None
    cap = f.capacity
    recent = f"; {f.rates.rejected} refused in the last {f.rates.interval_s:g}s" if f.rates else ""
    if f.refused_us:
        recent += f"; it refused this doctor {f.refused_us} time{'s' if f.refused_us > 1 else ''} before letting it in"
    summary = (
        f"The server is at its limit: {f.server_used} of {cap.maxclients} slots in use{recent}. "
        "New connections (including redis-cli and monitoring) are refused; the findings below say why."
    )
    idle_hosts = sorted(
        (s for s in (f.sources.all if f.sources else ()) if s.idle_over_threshold),
        key=lambda s: -s.idle_over_threshold,
    )
    evidence = {
        "used": cap.used, "used_with_this_doctor": f.server_used, "maxclients": cap.maxclients,
        "headroom": cap.headroom,
        "connected_clients": cap.connected_clients, "connected_slaves": cap.connected_slaves,
        "cluster_connections": cap.cluster_connections,
        "rejected_connections_total": f.now.info.rejected_connections,
        "rejected_per_s": f.rates.rejected_per_s if f.rates else None,
        "refused_the_doctor": f.refused_us,
        "hosts": [s.host for s in (f.sources.top[:5] if f.sources else ())],
    }
    actions: list[Action] = []
    if idle_hosts:
        actions += kill_idle(f, idle_hosts, limit=2)
    actions.append(Action(
        "Keep this session's connection: it is the way in while the server is full "
        "(run fixes from it, or from `connguard watch`, which holds one)", None, False,
    ))
    return Finding("exhausted", "critical", 1.0 if f.full or f.refused_us else 0.8, summary, evidence, tuple(actions))
