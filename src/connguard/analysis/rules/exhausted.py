"""exhausted: the server refuses new connections right now (full, or rejecting while near the limit).

`check` judges from a held connection (INFO, CLIENT LIST); `from_census` judges a server that refused
the doctor, from two socket censuses taken on its host: a storm replaces its connections, a pile keeps them."""

from __future__ import annotations

from typing import Any

from connguard.analysis.shell import Commands
from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, DoctorSettings, Finding
from connguard.analysis.internal_links import host_facts_links
from connguard.analysis.ranking import relate
from connguard.analysis.rules import storm
from connguard.analysis.rules._actions import NEXT_TIME, kill_idle, raise_maxclients_actions, round_up
from connguard.probe.census import CensusTurnover, HostTurnover
from connguard.probe.model import HostFacts, SocketCensus


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
    actions.append(NEXT_TIME)
    return Finding("exhausted", "critical", 1.0 if f.full or f.refused_us else 0.8, summary, evidence, tuple(actions))


# -- from outside: the server refused the doctor ----------------------------------------------------

STORM_REPLACED_RATIO = 0.2  # a fifth of the slots changed hands within a couple of seconds
STORM_MIN_NEW = 3  # ...and at least this many new connections, so a tiny server's one reconnect is no storm
STORM_NEW_PER_S = 5.0  # new connections/s into a full server, floor; scaled with its size below
NAMED_HOSTS = 5


def storm_signals(t: CensusTurnover, slots: int) -> list[str]:
    """Why the turnover looks like clients reconnecting constantly; empty for a still pile."""
    signals = []
    if t.new >= STORM_MIN_NEW and t.replaced_ratio >= STORM_REPLACED_RATIO:
        signals.append(f"{min(t.new, t.gone)} of {max(t.before, t.after)} connections replaced in {t.window_s:.1f}s")
    if t.new_per_s is not None and t.new >= STORM_MIN_NEW and t.new_per_s >= max(STORM_NEW_PER_S, 0.05 * slots):
        signals.append(f"{t.new_per_s:g} new connections/s into a full server")
    closed = t.closed_per_s
    # New TIME_WAIT catches connections that came and went between the two censuses; refusals are reset
    # by the server and leave none, so this too is a lower bound.
    if closed is not None and t.closed >= STORM_MIN_NEW and closed >= max(STORM_NEW_PER_S, 0.05 * slots):
        signals.append(f"{closed:g} connections/s opened and closed again")
    return signals


def _turnover_evidence(t: CensusTurnover) -> dict[str, Any]:
    return {
        "window_s": round(t.window_s, 2), "new": t.new, "gone": t.gone, "replaced_ratio": round(t.replaced_ratio, 2),
        "new_per_s": t.new_per_s, "closed": t.closed,
        "closed_per_s": t.closed_per_s, "time_wait_growth": t.time_wait_growth,
    }


def _by_host_turnover(hosts: tuple[HostTurnover, ...]) -> dict[str, dict[str, int]]:
    return {h.host: {"connections": h.connections, "new": h.new, "gone": h.gone,
                     "closed": h.closed} for h in hosts[:NAMED_HOSTS]}


def _pile_shape(census: SocketCensus) -> str:
    counts = sorted(census.by_host.values(), reverse=True)
    if not counts:
        return ""
    if counts[0] >= 0.5 * sum(counts):
        return "; one host holds most of them, so look there for a leak first"
    top = counts[:4]
    if len(top) >= 2 and top[-1] >= 0.8 * top[0]:
        return "; several hosts hold similar blocks, the shape of oversized pools"
    return ""


def from_census(
    error: str, census: SocketCensus | None, turnover: CensusTurnover | None, host: HostFacts | None,
    settings: DoctorSettings, cmd: Commands, *, first_host: HostFacts | None = None,
) -> tuple[Finding, ...]:
    """Pure: `exhausted` (and `retry_storm` when the connections keep changing hands, and `connection_leak`
    for a pile that stays under that storm) for a server that refused the doctor, judged from this host's
    socket census and kernel counters; without a census, `exhausted` alone."""
    internal = host_facts_links(host)
    top = sorted((census.by_host if census else {}).items(), key=lambda kv: (-kv[1], kv[0]))
    app_top = [(h, n) for h, n in top if h not in internal]
    busiest = app_top[0][0] if app_top else "<host>"
    held = census.accepted if census else 0
    if census and turnover is not None and turnover.accepted_min is not None:
        held = min(held, turnover.accepted_min)  # a refused connection caught in flight holds no slot
    bus = 2 * host.cluster_bus_links_in if host is not None and host.cluster_bus_links_in else 0
    fd = host.fd_limit_soft if host else None
    pid = host.pid if host else None
    signals = storm_signals(turnover, held) if turnover is not None else []
    arrivals = kernel_arrivals(first_host, host, turnover)
    if arrivals is not None and signals:
        signals.append(f"{arrivals['per_s']:g} connections/s accepted by this host's kernel (PassiveOpens)")
    storm_hosts = [h for h in (turnover.hosts if turnover else ()) if h.activity and h.host not in internal][:NAMED_HOSTS]
    verdict = "retry_storm" if signals else ("static" if turnover is not None else "unmeasured")
    evidence: dict[str, Any] = {
        "error": error,
        "established_connections": census.total if census else None,
        "slots_held": held if census else None,
        "maxclients_estimate": held + bus if census and held else None,
        "cluster_bus_slots": bus or None,
        "slots_held": held + bus if census else None,
        "kernel_arrivals": arrivals,
        "internal_hosts": internal or None,
        "waiting_in_accept_queue": census.unaccepted if census else None,
        "by_host": dict(census.by_host) if census else None,
        "fd_limit": fd, "pid": pid,
        "hosts": [h for h, _ in top[:NAMED_HOSTS]],
        "time_wait": census.time_wait if census else None,
        "turnover": _turnover_evidence(turnover) if turnover else None,
        "turnover_by_host": _by_host_turnover(turnover.hosts) if turnover else None,
        "verdict": verdict,
        "source": "socket census (/proc/net/tcp)" if census else None,
    }
    if not census:
        where = "the server is on another host, so its connections cannot be counted from here"
    elif not census.total:
        where = "no established connections seen on its port from here"
    else:
        bus_text = (f" + {bus} cluster-bus slots (2 x {bus // 2} other known nodes)" if bus
                    else " (unix-socket clients and cluster-bus slots are not counted)")
        where = (f"{held} connections hold every slot, so maxclients is about {held + bus}{bus_text}, "
                 f"most from {busiest}")
    if signals:
        why = (f"Clients are reconnecting constantly: a retry storm ({'; '.join(signals)}), "
               f"led by {', '.join(h.host for h in storm_hosts[:3]) or busiest}.")
    elif turnover is not None and census and census.total:
        named = ", ".join(f"{h} ({n}" + (f", {internal[h]})" if h in internal else ")") for h, n in top[:3])
        why = (f"Little turnover in {turnover.window_s:.1f}s ({turnover.new} new): the slots are held by long-lived "
               f"connections, a leak or oversized pools; top hosts {named}{_pile_shape(census)}.")
    else:
        why = "Free slots (the actions below work without a Redis connection), then fix the cause."
    summary = f"The server refuses new connections (max number of clients reached): {where}. {why}"

    # Nobody gets in, so every step here must work without a Redis connection: abort sockets from this
    # host (ss -K), stop the hosts the census names, the fd limit (prlimit), and reading the census.
    local = census is not None
    pile = [h for h, _ in app_top[:2]]
    sockets = [Action(
        f"Free slots now, on this host as root: abort the {dict(top)[h]} connections from {h} with ss -K "
        "(dry run until --yes; from outside Redis it cannot tell an application connection from a replica or "
        "subscriber, so check the host first)",
        cmd.connguard("kill", "--sockets", "--source", h), True) for h in pile] if local else []
    spared = [Action(f"Never abort {h}'s connections: it is {what} of this server (a few slots, and the failover "
                     "path); `kill --sockets` refuses it without --force", None, False)
              for h, what in internal.items() if census is not None and h in census.by_host]
    stop_storm = Action("If clients reconnect at once when refused, stop that retry storm: they must back off "
                        "with jitter and open a circuit breaker (connguard.guard)", None, False)
    look = [Action("See who holds the slots (read-only, on the server host)",
                   f"ss -tn state established '( sport = :{census.port} )'", False)] if census else []
    if signals:
        # Killing young storm connections only makes room for the next reconnect: the storm finding says when.
        actions = [Action("Stop the retry storm first (see the retry_storm finding): the reconnecting clients take "
                          "every slot that frees", None, False)]
    elif app_top:
        actions = sockets + [Action(
            f"Or stop or scale down the application on {busiest}, which holds {app_top[0][1]} connections"
            f"{' and does not give them back' if turnover is not None else ''}", None, False)]
    else:
        actions = [Action("Run `connguard doctor` on the server's own host: there it counts who holds the slots "
                          "from /proc and can free them with `connguard kill --sockets`", None, False)]
    actions += raise_maxclients_actions(cmd, fd=fd, current=held, wanted=round_up(max(held * 1.25, held + 100)),
                                        why="Then make room", pid=pid, refusing=True)
    if not signals and turnover is None:
        actions.append(stop_storm)
    actions.append(NEXT_TIME)
    piles = static_piles(turnover, held, internal) if signals and turnover is not None else []
    if piles:
        actions = actions[:1] + [sockets_for(cmd, h, n) for h, n in piles] + actions[1:]
    exhausted = Finding("exhausted", "critical", 1.0, summary, evidence, tuple(actions + spared + look))
    if not signals or turnover is None:
        return (exhausted,)
    found = [exhausted, storm.from_census(turnover, storm_hosts, signals, held, cmd, census, arrivals)]
    if piles:
        found.append(leak_from_census(piles, held, turnover, cmd))
    return tuple(relate(found))


def kernel_arrivals(first: HostFacts | None, last: HostFacts | None,
                    turnover: CensusTurnover | None) -> dict[str, Any] | None:
    """Connections accepted per second by this host's kernel (Tcp PassiveOpens), refused ones included: a
    refused connection lives well under a millisecond, so the sockets a census catches undercount a storm
    by orders of magnitude. Per host (network namespace), not per server: attributed to client hosts in
    proportion to the new connections the censuses caught from each."""
    if first is None or last is None or first.passive_opens is None or last.passive_opens is None \
            or first.passive_opens_at is None or last.passive_opens_at is None:
        return None
    seconds = last.passive_opens_at - first.passive_opens_at
    if seconds <= 0 or last.passive_opens < first.passive_opens:
        return None
    rate = round((last.passive_opens - first.passive_opens) / seconds, 1)
    caught = {h.host: h.new for h in (turnover.hosts if turnover else ()) if h.new}
    total = sum(caught.values())
    return {"per_s": rate, "window_s": round(seconds, 2), "accepted": last.passive_opens - first.passive_opens,
            "by_host_estimate": {h: round(rate * n / total, 1) for h, n in caught.items()} if total else {},
            "scope": "Tcp PassiveOpens in /proc/net/snmp: every connection this host (network namespace) "
                     "accepted on any port, refused ones included; attributed by the hosts of the sampled sockets"}


STILL = 0.05  # a host whose connections changed by at most this share while the rest churned: a pile that stays
PILE_SHARE = 0.3  # of the slots held


def static_piles(t: CensusTurnover, held: int, internal: dict[str, str]) -> list[tuple[str, int]]:
    """Hosts that hold a large, unchanging share of the slots while others reconnect: under a storm, the
    pile (a leak, or pools never given back) is what keeps the server full."""
    return [(h.host, h.connections) for h in t.hosts
            if h.host not in internal and h.connections >= max(5, PILE_SHARE * held)
            and h.new + h.gone <= STILL * h.connections]


def sockets_for(cmd: Commands, host: str, n: int) -> Action:
    return Action(f"Then free the pile: abort the {n} connections {host} holds and never gives back, on this host as "
                  "root (dry run until --yes)", cmd.connguard("kill", "--sockets", "--source", host), True)


def leak_from_census(piles: list[tuple[str, int]], held: int, t: CensusTurnover, cmd: Commands) -> Finding:
    """connection_leak at a full server, from outside: the connections one host keeps while the storm's
    connections come and go. The root of the outage: stopping the storm leaves these slots taken."""
    pile = sum(n for _, n in piles)
    names = ", ".join(f"{h} ({n})" for h, n in piles)
    summary = (f"Connection leak: {names} hold{'s' if len(piles) == 1 else ''} {pile} of the {held} slots and kept "
               f"every one of them for {t.window_s:.1f}s while other clients reconnected: a pile that stays.")
    evidence = {"slots_held": pile, "hosts": [h for h, _ in piles], "per_host": dict(piles), "slots": held,
                "window_s": round(t.window_s, 2), "source": "two socket censuses (/proc/net/tcp)"}
    actions = [sockets_for(cmd, h, n) for h, n in piles] + [Action(
        "Fix at the source: close connections in `finally` (or one module-level pool); connguard.guard's leak "
        "detection names the code that never returned one", None, False)]
    return Finding("connection_leak", "critical", 0.7, summary, evidence, tuple(actions))
