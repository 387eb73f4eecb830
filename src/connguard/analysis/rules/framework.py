"""framework_connections: connections that look like Celery, RQ or Django's cache, named with the shape that
gave them away and the setting that sizes them. Always `info`: it explains, it never raises the status and it
never makes anything a kill candidate (recognition is advisory, analysis/frameworks.py)."""

from __future__ import annotations

from connguard.analysis.classify import client_records
from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding
from connguard.analysis.frameworks import recognize

MIN_CONNECTIONS = 1
LISTED = 5


def check(f: Facts) -> Finding | None:
    if f.now.clients is None:
        return None
    found = [x for x in recognize(client_records(f.now)) if x.connections >= MIN_CONNECTIONS]
    if not found:
        return None
    total = sum(x.connections for x in found)
    head = found[0].line
    more = f" (and {len(found) - 1} more framework group{'s' if len(found) > 2 else ''})" if len(found) > 1 else ""
    return Finding(
        cause="framework_connections", severity="info", confidence=0.7,
        summary=head + more,
        evidence={"framework_connections": total, "recognized": [x.to_dict() for x in found[:LISTED]]},
        actions=(Action("Plan the deployment's connections from measured framework formulas",
                        "connguard plan --deployment deployment.toml", False),),
    )
