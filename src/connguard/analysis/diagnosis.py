"""The verdict: `diagnose(window, settings, target)` runs every rule over a window of Snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from connguard.analysis.capacity import Capacity, Thresholds, capacity
from connguard.analysis.classify import ConnectionClasses, classify
from connguard.analysis.shell import Commands
from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, DoctorSettings, Finding, worst
from connguard.analysis.rates import Rates, window_rates
from connguard.analysis.rules import exhausted as exhausted_rule
from connguard.analysis.ranking import rank
from connguard.analysis.rules import run_rules
from connguard.analysis.sources import Source, source_table
from connguard.analysis.window import Window
from connguard.contract import DOCTOR_SCHEMA
from connguard.errors import ConnguardError
from connguard.probe.census import CensusTurnover, census_turnover
from connguard.probe.model import HostFacts, Snapshot, SocketCensus
from connguard.target_url import Target, parse_target

if TYPE_CHECKING:  # the pure analysis never imports the sampler (and with it redis-py) to run
    from connguard.probe.sampler import Observation

__all__ = ["Action", "Diagnosis", "DoctorSettings", "Finding", "ServerSummary", "diagnose", "diagnose_observations", "diagnose_unreachable"]

SCHEMA = DOCTOR_SCHEMA


@dataclass(frozen=True)
class ServerSummary:
    flavor: str
    version: str
    role: str
    process_id: int | None
    uptime_s: int | None
    cluster_enabled: bool
    tcp_port: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"flavor": self.flavor, "version": self.version, "role": self.role, "process_id": self.process_id,
                "uptime_s": self.uptime_s, "cluster_enabled": self.cluster_enabled, "tcp_port": self.tcp_port}


@dataclass(frozen=True)
class Diagnosis:
    """Mirrors the `connguard doctor --json` contract (docs/contract.md); `to_dict()` is that object."""

    target: str
    status: str  # ok | warning | critical | unknown
    reachable: bool
    error: str | None
    server: ServerSummary | None
    capacity: Capacity | None
    rates: Rates | None
    sources: tuple[Source, ...] | None
    findings: tuple[Finding, ...]
    sources_rest: Source | None = None
    sources_from_census: bool = False
    classes: ConnectionClasses | None = None
    limitations: tuple[str, ...] = ()
    settings: DoctorSettings = DoctorSettings()
    taken_at: float | None = None

    @property
    def causes(self) -> tuple[str, ...]:
        return tuple(f.cause for f in self.findings)

    def finding(self, cause: str) -> Finding | None:
        return next((f for f in self.findings if f.cause == cause), None)

    def _capacity_dict(self) -> dict[str, Any] | None:
        c = self.capacity
        if c is None:
            return None
        return {"maxclients": c.maxclients, "connected_clients": c.connected_clients,
                "connected_slaves": c.connected_slaves, "cluster_connections": c.cluster_connections,
                "blocked_clients": c.blocked_clients, "used": c.used, "ratio": c.ratio, "headroom": c.headroom,
                "fd_limit": c.fd_limit, "maxclients_source": c.maxclients_source,
                "rejected_connections": c.rejected_connections,
                "observer_connections": getattr(c, "observer_connections", 0)}

    def _sources_list(self) -> list[dict[str, Any]] | None:
        if self.sources is None:
            return None
        if self.sources_from_census:
            unknown = ("idle_over_threshold", "max_idle_s", "median_age_s", "blocked")
            return [{"host": s.host, "connections": s.connections, **{k: None for k in unknown},
                     "names": [], "libs": [], "new_connections": s.opened} for s in self.sources]
        return [s.to_dict() for s in self.sources]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "target": self.target,
            "status": self.status,
            "reachable": self.reachable,
            "error": self.error,
            "server": self.server.to_dict() if self.server else None,
            "capacity": self._capacity_dict(),
            "rates": self.rates.to_dict() if self.rates else None,
            "sources": self._sources_list(),
            "findings": [f.to_dict() for f in self.findings],
            "sources_rest": self.sources_rest.to_dict() if self.sources_rest else None,
            "sources_from": "census" if self.sources_from_census else ("client_list" if self.sources is not None else None),
            "classes": self.classes.to_dict() if self.classes else None,
            "limitations": list(self.limitations),
            "settings": {"interval_s": self.settings.interval_s, "idle_threshold_s": self.settings.idle_threshold_s,
                         "top": self.settings.top},
        }


def _ordered(findings: list[Finding]) -> tuple[Finding, ...]:
    return rank(findings)  # analysis/ranking.py: the symptom, then severity, then slots held


def overall_status(findings: tuple[Finding, ...], cap: Capacity | None, settings: DoctorSettings) -> str:
    status = "ok"
    if cap is not None:
        cap_status = cap.status(Thresholds(settings.warning_ratio, settings.critical_ratio))
        if cap_status in ("warning", "critical"):
            status = cap_status
    for f in findings:
        if f.severity in ("warning", "critical"):
            status = worst(status if status != "ok" else "info", f.severity)
    return status


def _as_target(target: Target | str) -> Target:
    if isinstance(target, Target):
        return target
    try:
        return parse_target(target, env={})
    except ConnguardError:  # a label that is no URL (a test's, a recording's): keep it for display only
        return Target("redis", target, None, None)


def diagnose(window: Sequence[Snapshot] | Snapshot, settings: DoctorSettings | Snapshot | None,
             target: Target | str | DoctorSettings, *legacy: Target | str, refused_us: int = 0) -> Diagnosis:
    """Pure: a window of Snapshots (oldest first) in, the verdict out. A window of one is `--once` (no rates),
    of two the classic doctor; longer windows measure rates, growth and churn over every Snapshot in them.
    `refused_us`: how many times the server turned the observer away (max number of clients) before
    admitting it - first-hand evidence that it is refusing.

    The two-Snapshot form `diagnose(first, second_or_None, settings, target)` is still accepted."""
    if isinstance(window, Snapshot):  # diagnose(first, second, settings, target)
        first, second = window, settings
        if not (second is None or isinstance(second, Snapshot)) or not isinstance(target, DoctorSettings) \
                or len(legacy) != 1:
            raise TypeError("diagnose(first, second_or_None, settings, target) or diagnose(window, settings, target)")
        return diagnose((first,) if second is None else (first, second), target, legacy[0], refused_us=refused_us)
    if not isinstance(settings, DoctorSettings) or isinstance(target, DoctorSettings) or legacy:
        raise TypeError("diagnose(window, settings, target): a sequence of Snapshots, DoctorSettings, a Target")
    return _diagnose_window(Window.of(window), settings, _as_target(target), refused_us)


def _diagnose_window(w: Window, settings: DoctorSettings, target: Target, refused_us: int) -> Diagnosis:
    now = w.now
    cap = capacity(now)
    table = source_table(now, settings.idle_threshold_s, settings.top, churn=w.churn)
    facts = Facts(settings=settings, target=target, window=w.snapshots, capacity=cap, classes=classify(now),
                  sources=table, rates=window_rates(w), cmd=Commands.for_target(target), refused_us=refused_us)
    findings = _ordered(run_rules(facts))
    info = now.info
    limitations = tuple(dict.fromkeys(lim for snap in w.snapshots for lim in snap.limitations))
    if len(w) == 1:
        limitations += ("one Snapshot (--once): no rates, so growth and churn are not measured",)
    elif w.restarts:
        limitations += (f"the server restarted {w.restarts} time{'s' if w.restarts > 1 else ''} in the window: "
                        "rates leave the restart out, growth and churn count from the last one",)
    return Diagnosis(
        target=target.redacted, status=overall_status(findings, cap, settings), reachable=True, error=None,
        server=ServerSummary(info.flavor, info.version, info.role, info.process_id, info.uptime_s,
                             info.cluster_enabled, info.tcp_port),
        capacity=cap, rates=facts.rates, sources=table.top if table else None, findings=findings,
        sources_rest=table.rest if table else None, classes=facts.classes, limitations=limitations,
        settings=settings, taken_at=now.taken_at,
    )


def _census_sources(census: SocketCensus, turnover: CensusTurnover | None = None) -> tuple[Source, ...]:
    opened = {h.host: h.new for h in turnover.hosts} if turnover else None
    return tuple(Source(host=h, connections=n, idle_over_threshold=0, max_idle_s=0, median_age_s=0, names=(),
                        libs=(), users=(), blocked=0, opened=opened.get(h, 0) if opened is not None else None)
                 for h, n in sorted(census.by_host.items(), key=lambda kv: (-kv[1], kv[0])))


def diagnose_unreachable(
    target: Target | str, settings: DoctorSettings, error: str, *, full: bool,
    census: SocketCensus | None = None, host: HostFacts | None = None, turnover: CensusTurnover | None = None,
    first_host: HostFacts | None = None,
) -> Diagnosis:
    """Pure: the verdict when the doctor got no connection. A full server is `exhausted` (critical), plus
    `retry_storm` when two censuses `turnover` apart show the connections changing hands; any other
    failure is `unknown` with the error line."""
    target = target.redacted if isinstance(target, Target) else target
    if not full:
        return Diagnosis(target=target, status="unknown", reachable=False, error=error, server=None, capacity=None,
                         rates=None, sources=None, findings=(), settings=settings)
    sources = _census_sources(census, turnover) if census is not None else None
    top = sources[: settings.top] if sources else ()
    findings = exhausted_rule.from_census(error, census, turnover, host, settings, Commands.for_target(target),
                                          first_host=first_host)
    limitations = ("the server refused the doctor: no INFO or CLIENT LIST, only what this host can see",)
    if census is not None and turnover is None:
        limitations += ("one socket census (--once): turnover, and so a retry storm, is not measured",)
    return Diagnosis(target=target, status="critical", reachable=False, error=error, server=None, capacity=None,
                     rates=None, sources=top if sources is not None else None, findings=_ordered(list(findings)),
                     sources_from_census=True, limitations=limitations, settings=settings)


def diagnose_observations(observations: Sequence[Observation], settings: DoctorSettings, target: Target | str,
                          ) -> Diagnosis:
    """Pure: the verdict over a Sampler's Observations (live, or read back from a recording), so that a
    replay reaches exactly the live verdict. Observed Snapshots make the window; a server that refused us
    throughout is judged from its socket censuses (turnover over all of them); when nothing was observed
    for any other reason, the last failure is raised, as the live run raised it."""
    if not observations:
        raise ValueError("no observations to diagnose")
    snapshots = [o.snapshot for o in observations if o.snapshot is not None]
    if snapshots:
        return diagnose(snapshots, settings, target, refused_us=observations[-1].refusals)
    refused = [o for o in observations if o.refused]
    if not refused:
        failure = observations[-1].failure
        raise failure if failure is not None else ValueError("an observation with neither a snapshot nor a failure")
    censuses = [o.census for o in refused if o.census is not None]
    hosts = [o.host for o in refused if o.host is not None]
    turnover = census_turnover(censuses) if len(censuses) >= 2 else None
    return diagnose_unreachable(target, settings, refused[-1].failure.message if refused[-1].failure else "refused",
                                full=True, census=censuses[-1] if censuses else None,
                                host=hosts[-1] if hosts else None, turnover=turnover,
                                first_host=hosts[0] if len(hosts) > 1 else None)
