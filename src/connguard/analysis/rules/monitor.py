"""monitor_sessions: MONITOR clients hold slots (and cost CPU: the server copies every command to each).
Named once the server is at the warning line; connguard never kills them on its own (they are protected),
so the advice is the safe way to end them: the operator's own Ctrl-C, or a kill by listed ID with --force."""

from __future__ import annotations

from collections import Counter

from connguard.analysis.classify import MONITOR, client_records, kind_of
from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding
from connguard.analysis.rules._actions import WAIT_NOTE, refusing, waiting

NOTABLE = 3  # sessions: more than a person or two debugging
NOTABLE_SHARE = 0.05  # or this share of the slots in use
LISTED = 50


def check(f: Facts) -> Finding | None:
    if not f.classes.monitor or f.now.clients is None or not (f.full or f.ratio >= f.settings.warning_ratio):
        return None
    recs = sorted((r for r in client_records(f.now) if kind_of(r) == MONITOR), key=lambda r: (-r.age_s, r.id))
    if not recs:
        return None
    many = len(recs) >= max(NOTABLE, NOTABLE_SHARE * max(f.used, 1))
    by_host = Counter(r.host for r in recs)
    hosts = [h for h, _ in by_host.most_common(10)]
    summary = (f"MONITOR sessions: {len(recs)} client{'s' if len(recs) != 1 else ''} in MONITOR from "
               f"{', '.join(hosts[:3])} hold {len(recs)} of {f.maxclients} slots at {f.ratio:.0%}; each also makes "
               "the server copy every command to it. End the sessions nobody watches.")
    evidence = {
        "slots_held": len(recs), "monitors": len(recs), "hosts": hosts, "per_host": dict(by_host.most_common(10)),
        "sessions": [{"id": r.id, "addr": r.addr, "name": r.name, "age_s": r.age_s} for r in recs[:LISTED]],
    }
    ids = [a for r in recs[:LISTED] for a in ("--id", r.id)]
    actions = (
        Action(f"Stop the MONITOR sessions where they run (Ctrl-C in `redis-cli monitor` on {', '.join(hosts[:3])}): "
               "the safe end, nobody loses work", None, False),
        Action(f"Or disconnect them by ID: MONITOR clients are protected, so kill reaches them only when each is "
               f"listed with --id and --force (dry run until --yes; each is named{WAIT_NOTE if refusing(f) else ''})",
               f.cmd.connguard("kill", *ids, "--force", *waiting(f)), True),
    )
    severity = f.ratio_severity("warning") if many else "info"
    return Finding("monitor_sessions", severity, 0.9, summary, evidence, actions)
