"""capacity_pressure: usage is at or over the warning line and no other rule names a cause. Never a
WARNING or CRITICAL verdict without a finding: this one says who holds the slots and the two ways out."""

from __future__ import annotations

from typing import Sequence

from connguard.analysis.capacity import WARNING_RATIO
from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding
from connguard.analysis.rules._actions import raise_maxclients, round_up
from connguard.analysis.sources import active_idle_limit
from connguard.analysis.pools import least_maxclients_for

NAMED_HOSTS = 5
NOT_ABOUT_SLOTS = frozenset({"output_buffer_bloat"})


def explain(f: Facts, findings: Sequence[Finding]) -> Finding | None:
    """A finding for pressure nothing else explained; None when below the line or already explained."""
    if not f.maxclients or not (f.full or f.ratio >= f.settings.warning_ratio):
        return None
    # Output buffers are memory, not slots: a warning about them leaves the slot pressure unexplained.
    if any(x.severity != "info" and x.cause not in NOT_ABOUT_SLOTS for x in findings):
        return None
    hosts = sorted(f.app_sources, key=lambda s: (-s.connections, s.host))
    plain = sum(s.normal for s in hosts)
    active = sum(s.active for s in hosts)
    line = f"{WARNING_RATIO:.0%}"
    wanted = round_up(least_maxclients_for(f.used))
    c = f.classes
    if f.sources is None:
        who = "CLIENT LIST was not available, so who holds them is unknown"
    elif hosts:
        named = ", ".join(f"{s.host} ({s.connections})" for s in hosts[:3])
        recent = int(active_idle_limit(f.settings.idle_threshold_s))
        who = (f"spread over {len(hosts)} host{'s' if len(hosts) > 1 else ''} ({named}{', ...' if len(hosts) > 3 else ''}), "
               f"{active} of {plain} plain connections active in the last {recent}s, no leak, storm or fixed-block shape")
    else:
        who = "held by internal links (replicas, Sentinel, cluster bus), not by applications"
    growth = f" and {f.rates.used_delta:+d} over {f.rates.interval_s:g}s" if f.rates and f.rates.used_delta else ""
    summary = (f"Capacity pressure: {f.used} of {f.maxclients} slots in use ({f.ratio:.0%}){growth}, {who}. "
               f"Bring pools down so the total stays under the {line} line, or raise maxclients to {wanted} "
               "within the fd limit.")
    evidence = {
        "slots_held": f.used, "used": f.used, "maxclients": f.maxclients, "ratio": f.ratio, "warning_line": f.settings.warning_ratio,
        "hosts": [s.host for s in hosts[:NAMED_HOSTS]],
        "per_host": {s.host: s.connections for s in hosts[:NAMED_HOSTS]},
        "active": active if f.sources is not None else None, "plain": plain if f.sources is not None else None,
        "internal": c.internal, "blocked": c.blocked,
        "used_delta": f.rates.used_delta if f.rates else None,
        "client_list": f.sources is not None,
    }
    actions: list[Action] = []
    if f.sources is None:
        actions.append(Action("See who holds the slots: run the doctor as a user allowed CLIENT LIST", None, False))
    else:
        actions.append(Action(
            f"Add up the pools (instances x processes x max_connections, plus replicas and tools) and cap them so "
            f"the total stays under the {line} line: `connguard plan` does the arithmetic", None, False))
    actions += raise_maxclients(f, wanted, f"Or give the traffic room: {f.used} in use stays under the {line} line")
    severity = f.ratio_severity("warning")
    return Finding("capacity_pressure", severity, 0.5, summary, evidence, tuple(actions))
