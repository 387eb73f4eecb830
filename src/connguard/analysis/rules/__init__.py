"""The causes, one small rule each: `check(facts) -> Finding | None`; then `pressure.explain`, so that
usage at or over the warning line is never left without a finding that explains it."""

from __future__ import annotations

from typing import Callable

from connguard.analysis.facts import Facts
from connguard.analysis.findings import Finding
from connguard.analysis.internal_links import guard_findings, internal_hosts
from connguard.analysis.ranking import relate
from connguard.analysis.rules import (
    blocked, buffers, exhausted, fanout, fd_limit, framework, internal, leak, monitor, pool, pressure, storm,
    too_low,
)

Rule = Callable[[Facts], "Finding | None"]

# Order matters only for ties in the report; severity and confidence sort the rest.
RULES: tuple[Rule, ...] = (
    exhausted.check, storm.check, leak.check, pool.check, fanout.check, too_low.check,
    fd_limit.check, internal.check, blocked.check, buffers.check, monitor.check,
    framework.check,  # advisory names only (info)
)


def run_rules(facts: Facts) -> list[Finding]:
    found = [f for f in (rule(facts) for rule in RULES) if f is not None]
    catch_all = pressure.explain(facts, found)
    found = relate(found + [catch_all] if catch_all else found)
    return guard_findings(found, internal_hosts(facts.now))
