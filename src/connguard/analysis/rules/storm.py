"""retry_storm: rejections and churn spike while usage pins at the limit: clients reconnect without backoff.

`check` judges from a held connection (rates by client ID); `from_census` judges a server that refused the
doctor, from the turnover between two socket censuses. Both give the same fixes (rules/_actions.py)."""

from __future__ import annotations

from typing import Any

from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding
from connguard.analysis.rules._actions import RAISING_DOES_NOT_END_STORM, WAIT_FOR_SLOT_S, backoff_actions, kill_idle
from connguard.analysis.shell import Commands
from connguard.analysis.sources import Source
from connguard.probe.census import CensusTurnover, HostTurnover
from connguard.probe.model import SocketCensus

MIN_REJECT_RATE = 20.0  # refusals per second, at least; scaled up with maxclients below
YOUNG_S = 60  # a connection younger than this was (re)opened during the storm


def storm_rate(maxclients: int | None) -> float:
    """Rejections per second that no backing-off client population produces: 10% of maxclients per s."""
    return max(MIN_REJECT_RATE, 0.1 * (maxclients or 0))


def storming(f: Facts) -> bool:
    return (
        f.rates is not None and f.rates.rejected_per_s >= storm_rate(f.maxclients)
        and (f.pinned() or f.pinned(f.first))
    )


def suspected_from_counters(f: Facts) -> bool:
    """One Snapshot: refusals outnumber admissions since start, at the limit, with young connections."""
    info = f.now.info
    young = [s for s in f.app_sources if s.median_age_s <= YOUNG_S]
    return (
        f.rates is None and f.pinned() and info.rejected_connections >= max(100, info.total_connections_received)
        and bool(young)
    )


def reconnecting(s: Source) -> bool:
    """New connections since the first Snapshot that replaced old ones (or all of them are new). A steady pool
    opens none; a leak only adds to what it keeps."""
    return bool(s.opened) and (bool(s.closed) or s.opened == s.connections)


def retrying_hosts(f: Facts) -> list[Source]:
    """The hosts reconnecting while we watch (by client ID), most reopened first.
    With one Snapshot, or no turnover seen, the youngest hosts: age alone also names a steady pool
    that happens to be young, so it is only the fallback."""
    renewed = sorted((s for s in f.app_sources if reconnecting(s)), key=lambda s: (-(s.opened or 0), s.host))
    if renewed:
        return renewed
    return sorted((s for s in f.app_sources if s.median_age_s <= YOUNG_S), key=lambda s: (s.median_age_s, -s.connections))


def check(f: Facts) -> Finding | None:
    strong = storming(f)
    if not (strong or suspected_from_counters(f)):
        return None
    young = retrying_hosts(f)
    churn = f.rates is not None and f.rates.connections_received_per_s >= 1
    if strong:
        confidence = 0.7 + 0.1 * churn + 0.1 * bool(young)
        rate_text = f"{f.rates.rejected_per_s:g} refusals/s and {f.rates.connections_received_per_s:g} new connections/s"  # type: ignore[union-attr]
    else:
        confidence = 0.4
        rate_text = (f"{f.now.info.rejected_connections} refusals vs {f.now.info.total_connections_received} "
                     "admissions since start (one Snapshot: run without --once to measure the rate)")
    summary = (
        f"Retry storm: {rate_text} while the server is pinned at {f.used}/{f.maxclients}; "
        "clients reconnect without backoff. Add jittered backoff and a circuit breaker."
    )
    evidence = {
        "rejected_per_s": f.rates.rejected_per_s if f.rates else None,
        "connections_received_per_s": f.rates.connections_received_per_s if f.rates else None,
        "storm_threshold_per_s": storm_rate(f.maxclients),
        "rejected_connections_total": f.now.info.rejected_connections,
        "used": f.used, "maxclients": f.maxclients,
        "hosts": [s.host for s in young[:5]],
        "young_connections": sum(s.connections for s in young),
        "slots_held": sum(s.connections for s in young),
        "reopened_per_host": {s.host: s.opened for s in young[:5] if s.opened is not None},
    }
    actions = backoff_actions(f.cmd)
    idle = sorted((s for s in f.app_sources if s.idle_over_threshold), key=lambda s: -s.idle_over_threshold)
    if idle:
        actions += kill_idle(f, idle, limit=1)
    actions.append(RAISING_DOES_NOT_END_STORM)
    return Finding("retry_storm", "critical" if strong else "warning", min(confidence, 0.95), summary,
                   evidence, tuple(actions))


def from_census(t: CensusTurnover, hosts: list[HostTurnover], signals: list[str], held: int,
                cmd: Commands, census: SocketCensus | None, arrivals: dict[str, Any] | None = None) -> Finding:
    """retry_storm for a server that refused the doctor: its connections keep changing hands."""
    names = [h.host for h in hosts]
    summary = (f"Retry storm: clients reconnect as fast as slots free up ({'; '.join(signals)}) while the server "
               f"stays full; most new connections from {', '.join(names[:3]) or 'unknown hosts'}. "
               "Add jittered backoff and a circuit breaker, and slow those clients down.")
    evidence = {
        "hosts": names, "window_s": round(t.window_s, 2), "new_connections": t.new, "gone": t.gone,
        "replaced_ratio": round(t.replaced_ratio, 2), "new_per_s": t.new_per_s,
        "closed_per_s": t.closed_per_s, "time_wait_growth": t.time_wait_growth,
        "new_per_host": {h.host: h.new for h in hosts}, "closed_per_host": {h.host: h.closed for h in hosts},
        "slots_held": sum(h.connections for h in hosts), "slots": held,
        "source": "two socket censuses (/proc/net/tcp)" + (" and PassiveOpens (/proc/net/snmp)" if arrivals else ""),
        "kernel_arrivals": arrivals,
        "note": "refused attempts are reset by the server and leave no socket behind: these counts are lower bounds",
    }
    sources = [a for h in names[:3] for a in ("--source", h)]
    actions = [backoff_actions(cmd)[0],
               Action(f"Stop or scale down the reconnecting clients on {', '.join(names[:3]) or 'the busiest hosts'} "
                      "until they back off", None, False)]
    if sources:
        actions.append(Action(
            f"Disconnect what they still hold: kill waits up to {WAIT_FOR_SLOT_S}s for one of the slots the storm "
            "frees now and then (dry run until --yes)",
            cmd.connguard("kill", *sources, "--connect-timeout", WAIT_FOR_SLOT_S), True))
    actions.append(RAISING_DOES_NOT_END_STORM)
    if census:
        actions.append(Action("Watch the churn (read-only): connections closed on the port pile up in TIME_WAIT",
                              f"ss -tn state time-wait '( sport = :{census.port} or dport = :{census.port} )' | wc -l",
                              False))
    return Finding("retry_storm", "critical", 0.7 if len(signals) > 1 else 0.6, summary, evidence, tuple(actions))
