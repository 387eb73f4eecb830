"""Capacity arithmetic from the runbook: how many connections a deployment takes, and what to set. Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from connguard.analysis.capacity import CRITICAL_RATIO as CRITICAL_LINE
from connguard.analysis.capacity import WARNING_RATIO as WARNING_LINE
from connguard.analysis.pools import largest_under, least_maxclients_for
from connguard.contract import PLAN_SCHEMA
from connguard.remedy.limits import DEFAULT_RESERVE, RESERVED_FDS, fd_limit_for_maxclients, max_clients_for_fd_limit
DEFAULT_FD_MARGIN = 64  # fds beyond maxclients + 32 for AOF/RDB files, the replication backlog, logs


# Bounds on every count: far beyond any real deployment, small enough that the arithmetic stays readable
# (a plan is printed for people; 10^35 connections is a typo, not a deployment).
MAX_COUNT = 1_000_000
MAX_MAXCLIENTS = 10_000_000
MAX_FD_LIMIT = 1 << 30


@dataclass(frozen=True)
class PlanInput:
    """A deployment. Either long-lived app processes (instances x processes x pool) or serverless (concurrency x M)."""

    instances: int = 1
    processes_per_instance: int = 1
    pool_size: int = 10
    replicas: int = 0
    sentinels: int = 0
    cluster_nodes: int = 0
    maxclients: int = 10000
    fd_limit: int | None = None
    reserve: int = DEFAULT_RESERVE
    fd_margin: int = DEFAULT_FD_MARGIN
    serverless: bool = False
    concurrency: int = 0
    per_invocation: int = 1

    def __post_init__(self) -> None:
        positive = ("instances", "processes_per_instance", "pool_size", "maxclients", "per_invocation")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')}={getattr(self, name)} must be at least 1")
        for name in ("replicas", "sentinels", "cluster_nodes", "reserve", "fd_margin", "concurrency"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')}={getattr(self, name)} cannot be negative")
        for name in ("instances", "processes_per_instance", "pool_size", "replicas", "sentinels", "cluster_nodes",
                     "reserve", "fd_margin", "concurrency", "per_invocation"):
            if getattr(self, name) > MAX_COUNT:
                raise ValueError(f"{name.replace('_', '-')}={getattr(self, name)} is beyond any deployment "
                                 f"(at most {MAX_COUNT:,})")
        if self.maxclients > MAX_MAXCLIENTS:
            raise ValueError(f"maxclients={self.maxclients} is beyond what a server can hold (at most {MAX_MAXCLIENTS:,})")
        if self.fd_limit is not None and self.fd_limit > MAX_FD_LIMIT:
            raise ValueError(f"fd-limit={self.fd_limit} is beyond any kernel's limit (at most {MAX_FD_LIMIT:,})")
        if self.fd_limit is not None and self.fd_limit <= RESERVED_FDS:
            raise ValueError(f"fd-limit={self.fd_limit} must be above {RESERVED_FDS}: Redis keeps {RESERVED_FDS} fds for itself")
        if self.serverless and self.concurrency < 1:
            raise ValueError("--serverless needs --concurrency N (concurrent invocations at peak), N >= 1")
        if self.cluster_nodes == 1:
            raise ValueError("cluster-nodes=1 is not a cluster: give the number of nodes (>= 2), or 0")


@dataclass(frozen=True)
class Part:
    """One contributor to the connection count."""

    name: str
    connections: int
    how: str


@dataclass(frozen=True)
class Plan:
    parts: tuple[Part, ...]
    total: int
    maxclients: int  # effective: lowered to fd_limit - 32 when the fd limit is too low
    maxclients_requested: int
    ratio: float
    status: str  # ok | warning (>= the 0.8 line) | critical (>= the 0.9 line, or over maxclients)
    fits: bool  # under the warning line
    largest_safe_pool_size: int  # per process (or per invocation when serverless)
    recommended_maxclients: int
    recommended_fd_limit: int
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": PLAN_SCHEMA, **asdict(self), "warning_line": WARNING_LINE,
                "critical_line": CRITICAL_LINE}


def internal_parts(*, replicas: int, sentinels: int, cluster_nodes: int, reserve: int) -> tuple[Part, ...]:
    """What the server holds besides the applications (non-zero parts only): replicas, Sentinel links, the
    cluster bus estimate (all count against maxclients, REDIS-FACTS.md) and the reserve for people and tools."""
    cluster_bus = 2 * (cluster_nodes - 1) if cluster_nodes >= 2 else 0
    return tuple(p for p in (
        Part("replicas", replicas, "one connection per replica on the primary"),
        Part("sentinels", 2 * sentinels, "each Sentinel holds a command and a pub/sub link"),
        Part("cluster bus", cluster_bus, f"2 x ({cluster_nodes} nodes - 1), counted against maxclients"),
        Part("reserve", reserve, "people and tools: redis-cli, exporters, failover headroom"),
    ) if p.connections)


def effective_maxclients(maxclients: int, fd_limit: int | None) -> tuple[int, list[str]]:
    """maxclients as the server will run it: lowered to fd_limit - 32 at startup when the fd limit is too low."""
    if fd_limit is not None and max_clients_for_fd_limit(fd_limit) < maxclients:
        effective = max_clients_for_fd_limit(fd_limit)
        return effective, [f"the fd limit {fd_limit} lowers maxclients from {maxclients} to {effective} "
                           f"({fd_limit} - {RESERVED_FDS}); Redis does this at startup and says so only in its log"]
    return maxclients, []


def status_of(total: int, maxclients: int) -> str:
    """ok | warning (>= the 0.8 line) | critical (>= the 0.9 line, or over maxclients)."""
    ratio = total / maxclients
    return "critical" if total > maxclients or ratio >= CRITICAL_LINE else "warning" if ratio >= WARNING_LINE else "ok"


def recommended_settings(total: int, maxclients: int, fd_limit: int | None, fd_margin: int,
                         notes: list[str]) -> tuple[int, int]:
    """The maxclients that keeps `total` under the warning line (never lower than today's) and the fd limit
    it needs; appends the note to raise the fd limit first when it is too low."""
    recommended = max(least_maxclients_for(total), maxclients)
    fd_needed = fd_limit_for_maxclients(recommended, fd_margin)
    if fd_limit is not None and fd_limit < fd_needed:
        notes.append(f"raise the fd limit from {fd_limit} to at least {fd_needed} (LimitNOFILE / ulimit -n) "
                     "before raising maxclients")
    return recommended, fd_needed


def plan(spec: PlanInput) -> Plan:
    """Connections per part, the total against maxclients, the largest safe pool and the settings to use."""
    if spec.serverless:
        app = Part("serverless", spec.concurrency * spec.per_invocation,
                   f"{spec.concurrency} concurrent invocations x {spec.per_invocation} connection(s) each")
        app_units = spec.concurrency
    else:
        units = spec.instances * spec.processes_per_instance
        app = Part("application pools", units * spec.pool_size,
                   f"{spec.instances} instance(s) x {spec.processes_per_instance} process(es) x pool {spec.pool_size}")
        app_units = units
    parts = (app, *internal_parts(replicas=spec.replicas, sentinels=spec.sentinels,
                                  cluster_nodes=spec.cluster_nodes, reserve=spec.reserve))
    total = sum(p.connections for p in parts)
    non_app = total - app.connections

    effective, notes = effective_maxclients(spec.maxclients, spec.fd_limit)
    ratio = total / effective
    status = status_of(total, effective)
    safe = largest_under(WARNING_LINE, effective, non_app, app_units)
    per = spec.per_invocation if spec.serverless else spec.pool_size
    if per > safe:
        what = "connections per invocation" if spec.serverless else "pool size per process"
        notes.append(f"{what} {per} is above the largest safe {safe} for this maxclients")
    if spec.serverless:
        notes.append("each invocation holds its own connections: put a proxy in between, or cap concurrency")
    recommended, fd_needed = recommended_settings(total, spec.maxclients, spec.fd_limit, spec.fd_margin, notes)
    return Plan(
        parts=parts, total=total, maxclients=effective, maxclients_requested=spec.maxclients, ratio=round(ratio, 4),
        status=status, fits=status == "ok", largest_safe_pool_size=safe, recommended_maxclients=recommended,
        recommended_fd_limit=fd_needed, notes=tuple(notes),
    )
