"""internal_connections: replicas, Sentinel links and cluster-bus slots take a large share of maxclients."""

from __future__ import annotations

from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding
from connguard.analysis.rules._actions import raise_maxclients

LARGE_SHARE = 0.1  # of maxclients
RESERVE = 200  # the runbook: reserve 100-200 slots for internal connections


def check(f: Facts) -> Finding | None:
    c = f.classes
    internal = c.internal
    if internal == 0 or not f.maxclients:
        return None
    share = internal / f.maxclients
    headroom = f.capacity.headroom or 0
    # Judged against headroom, not as a bare ratio: internal links matter when the server is near its limit
    # and they are a real part of what fills it. Far from the limit they are a note, whatever their share.
    # Also when fewer slots are left than the links already take (a failover or a new replica would fill them).
    near = f.full or f.ratio >= f.settings.warning_ratio
    if (near and internal >= 0.1 * max(f.used, 1)) or (share >= LARGE_SHARE and headroom < internal):
        severity = f.ratio_severity("warning")
    elif headroom < internal + RESERVE or share >= LARGE_SHARE:
        severity = "info"  # a check for the operator: little reserve left for a failover or a new replica
    else:
        return None
    parts = [f"{c.replicas} replica{'s' if c.replicas != 1 else ''}"]
    if c.sentinel:
        parts.append(f"{c.sentinel} Sentinel link{'s' if c.sentinel != 1 else ''}")
    if c.primary_link:
        parts.append("the link to its primary")
    if c.cluster_bus:
        parts.append(f"{c.cluster_bus} cluster-bus slots")
    if severity == "info":
        # Below the warning line this is a check for the operator, not an instruction: nothing is short yet.
        summary = (f"Internal connections: {', '.join(parts)} take {internal} of {f.maxclients} slots ({share:.0%}); "
                   f"check that maxclients leaves 100-200 slots for them beyond peak application use "
                   f"(headroom now {headroom}).")
    else:
        summary = (f"Internal connections: {', '.join(parts)} take {internal} of {f.maxclients} slots ({share:.0%}); "
                   f"reserve 100-200 slots for them on top of application traffic.")
    sentinel_names = sorted({n for s in f.sources.all for n in s.names if n.startswith("sentinel-")})[:6] \
        if f.sources else []
    evidence = {
        "slots_held": internal, "internal": internal, "replicas": c.replicas, "sentinel": c.sentinel, "primary_link": c.primary_link,
        "cluster_bus": c.cluster_bus, "share_of_maxclients": round(share, 3), "maxclients": f.maxclients,
        "headroom": f.capacity.headroom, "sentinel_names": sentinel_names,
        "hosts": [s.host for s in (f.sources.all if f.sources else ()) if s.internal][:10],
    }
    if severity == "info":
        actions: tuple[Action, ...] = (Action(
            f"Check at peak: application connections + {internal} internal + {RESERVE} for a failover or a new "
            f"replica should stay under maxclients {f.maxclients} (`connguard plan` adds it up)", None, False),)
    else:
        actions = tuple(raise_maxclients(f, f.maxclients + RESERVE,
                                         f"Reserve {RESERVE} slots for replicas, Sentinel and the cluster bus"))
    return Finding("internal_connections", severity, 0.9, summary, evidence, actions)
