"""blocked_clients: blocking commands (BLPOP, XREAD BLOCK, WAIT...) hold slots without producing throughput."""

from __future__ import annotations

from collections import Counter

from connguard.analysis.classify import BLOCKED, client_records, kind_of
from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding

LARGE_SHARE = 0.1  # of maxclients


def check(f: Facts) -> Finding | None:
    if not f.classes.blocked and not f.now.info.blocked_clients:
        return None  # nothing blocked by either count: no need to walk every client again
    recs = [r for r in client_records(f.now) if kind_of(r) == BLOCKED] if f.now.clients is not None else []
    blocked = max(len(recs), f.now.info.blocked_clients)
    if blocked == 0:
        return None
    share = blocked / f.maxclients if f.maxclients else 0.0
    big = share >= LARGE_SHARE or (f.ratio >= f.settings.warning_ratio and blocked >= 0.1 * max(f.used, 1))
    severity = f.ratio_severity("warning") if big else "info"
    by_host = Counter(r.host for r in recs)
    commands = Counter(r.cmd for r in recs)
    long_blocked = sorted((r for r in recs if r.idle_s >= f.idle_threshold), key=lambda r: -r.idle_s)
    hosts = [h for h, _ in by_host.most_common(10)]
    summary = (
        f"Blocked clients: {blocked} connections wait in {', '.join(c for c, _ in commands.most_common(3)) or 'blocking commands'}"
        f"{' from ' + ', '.join(hosts[:3]) if hosts else ''}, holding {share:.0%} of maxclients with no throughput; "
        "give blocking calls a timeout and a small dedicated pool."
    )
    evidence = {
        "slots_held": blocked, "blocked": blocked, "blocked_clients_info": f.now.info.blocked_clients, "share_of_maxclients": round(share, 3),
        "commands": dict(commands.most_common(5)), "long_blocked": len(long_blocked),
        "max_blocked_idle_s": max((r.idle_s for r in recs), default=None),
        "hosts": hosts, "per_host": dict(by_host.most_common(10)),
    }
    actions = [
        Action("Give every blocking call a timeout (BLPOP key 5, XREAD BLOCK 5000, WAIT n 1000 - never 0) and run "
               "consumers from a small dedicated pool; CONFIG SET timeout does not close blocked clients", None, False),
    ]
    if long_blocked:
        ids = " ".join(str(r.id) for r in long_blocked[:50])
        actions.append(Action(
            f"Wake the {len(long_blocked)} clients blocked over {f.idle_threshold}s (they get a nil reply, "
            "as on a timeout, and can exit)",
            f"for id in {ids}; do {f.cmd.cli} CLIENT UNBLOCK $id; done", True,
        ))
    return Finding("blocked_clients", severity, 0.9, summary, evidence, tuple(actions))
