"""Order the findings by what relieves the server: the symptom (`exhausted`) first, then the causes by
severity and by the slots each holds; a leak under a retry storm is the root, the storm its amplifier."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Sequence

from connguard.analysis.findings import Action, Finding, severity_rank

SERIOUS = ("warning", "critical")


def slots_held(f: Finding) -> int:
    """The slots a cause holds, as its rule measured them (`slots_held` in its evidence); 0 when unknown."""
    value = f.evidence.get("slots_held")
    return int(value) if isinstance(value, (int, float)) else 0


def rank(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """exhausted first (it is the symptom), then worst severity, then most slots held, then most confident:
    a cause holding 75 slots ranks above one holding 10 at the same severity, however sure the latter is."""
    return tuple(sorted(findings, key=lambda f: (f.cause != "exhausted", -severity_rank(f.severity),
                                                 -slots_held(f), -f.confidence)))


def _serious(findings: Sequence[Finding], cause: str) -> Finding | None:
    return next((f for f in findings if f.cause == cause and f.severity in SERIOUS), None)


def _first_kill(f: Finding) -> Action | None:
    return next((a for a in f.actions if a.changes_server and (a.command or "").startswith("connguard kill")), None)


def relate(findings: Sequence[Finding]) -> list[Finding]:
    """A leak (a pile that stays) under a retry storm: name the leak as the root and the storm as the
    amplifier, and order the steps: stop the storm, then take the pile back. Killing the pile first only
    hands its slots to the reconnecting clients; stopping the storm alone leaves the server full."""
    leak, storm = _serious(findings, "connection_leak"), _serious(findings, "retry_storm")
    if leak is None or storm is None:
        return list(findings)
    pile = slots_held(leak)
    stop = Action("First stop the retry storm (see retry_storm): while clients reconnect without backoff they "
                  "take every slot the kill below frees", None, False)
    new_leak = replace(
        leak, severity="critical" if storm.severity == "critical" else leak.severity,
        summary=f"Root cause: {leak.summary} The retry storm amplifies it: stopping the storm alone leaves these "
                f"{pile} slots held.",
        evidence={**leak.evidence, "role": "root", "amplified_by": "retry_storm"},
        actions=(stop, *leak.actions))
    kill = _first_kill(leak)
    then = Action(f"Then take back the pile (see connection_leak: {pile} slots): the storm is the amplifier, the "
                  "leak is what fills the server" + (f": `{kill.command}`" if kill else ""), None, False)
    new_storm = replace(storm, summary=f"Amplifier: {storm.summary}",
                        evidence={**storm.evidence, "role": "amplifier", "root": "connection_leak"},
                        actions=(*(a for a in storm.actions if a is not _first_kill(storm)), then))
    out = []
    for f in findings:
        out.append(new_leak if f is leak else new_storm if f is storm else f)
    exhausted = next((f for f in out if f.cause == "exhausted"), None)
    if exhausted is not None:
        order = Action(f"Order of relief: 1. stop the retry storm (it refills any freed slot), 2. take back the "
                       f"leaked pile ({pile} slots, the root cause), 3. fix the leaking code", None, False)
        out[out.index(exhausted)] = replace(exhausted, actions=(order, *exhausted.actions))
    return out
