"""Roll per-target results into one fleet verdict (pure): risk order, worst status, nearest node, the cause.

A Row is built from the per-target JSON object (connguard.doctor/1 or connguard.status/1) so that what the
table shows and what `--json` prints cannot disagree."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from connguard.analysis.capacity import WARNING_RATIO
from connguard.discovery.model import Member, Problem
# How bad a status is for the fleet: a refusing server first, then one we cannot see, then a warning.
RISK_ORDER = ("critical", "unknown", "warning", "ok")
FANOUT_MIN_SHARE = 0.5  # a client host seen on at least half the nodes fans out across them
STRUCTURAL = ("client_fanout", "imbalance")  # fleet-wide shapes: the `cause` field names these first
IMBALANCE_FACTOR = 2.0  # the nearest node at twice the median ratio (and past the warning line) is a hot node


@dataclass(frozen=True)
class Row:
    """One member's result, flattened for the table; `payload` is its per-target JSON object."""

    member: Member
    status: str
    payload: Mapping[str, Any]
    used: int | None = None
    maxclients: int | None = None
    ratio: float | None = None
    headroom: int | None = None
    cluster_bus: int | None = None
    sentinel_links: int | None = None
    internal: int | None = None
    top_cause: str | None = None
    error: str | None = None
    server_role: str | None = None  # what INFO says: master, slave, sentinel
    sources: tuple[tuple[str, int], ...] = ()  # (client host, plain connections), for the fan-out check

    @property
    def full(self) -> bool:
        """Refusing connections right now (critical with no INFO, or at the limit)."""
        return self.status == "critical" and (self.ratio is None or self.ratio >= 1.0)

    @property
    def effective_ratio(self) -> float:
        return 1.0 if self.full and self.ratio is None else (self.ratio or 0.0)


def _top_cause(findings: Sequence[Mapping[str, Any]]) -> str | None:
    """Like the doctor's verdict: the first serious cause other than the `exhausted` symptom, else exhausted."""
    serious = [f for f in findings if f.get("severity") != "info"]
    causes = [f["cause"] for f in serious if f.get("cause") != "exhausted"] or [f["cause"] for f in serious]
    return causes[0] if causes else None


def row_from_doctor(member: Member, doc: Mapping[str, Any]) -> Row:
    cap = doc.get("capacity") or {}
    classes = doc.get("classes") or {}
    server = doc.get("server") or {}
    sources = tuple((str(s["host"]), max(0, int(s.get("connections") or 0) - int(s.get("internal") or 0)))
                    for s in doc.get("sources") or () if not doc.get("sources_from") == "census")
    exhausted = next((f for f in doc.get("findings") or () if f.get("cause") == "exhausted"), None)
    estimate = (exhausted or {}).get("evidence", {}).get("maxclients_estimate") if not cap else None
    return Row(
        member=member, status=str(doc.get("status", "unknown")), payload=doc,
        used=cap.get("used", estimate), maxclients=cap.get("maxclients", estimate), ratio=cap.get("ratio"), headroom=cap.get("headroom"),
        cluster_bus=cap.get("cluster_connections"), sentinel_links=classes.get("sentinel"),
        internal=classes.get("internal"), top_cause=_top_cause(doc.get("findings") or ()),
        error=doc.get("error"), server_role=server.get("role"), sources=sources,
    )


def row_from_status(member: Member, doc: Mapping[str, Any]) -> Row:
    server = doc.get("server") or {}
    return Row(
        member=member, status=str(doc.get("status", "unknown")), payload=doc,
        used=doc.get("used"), maxclients=doc.get("maxclients"), ratio=doc.get("ratio"), headroom=doc.get("headroom"),
        cluster_bus=doc.get("cluster_connections"), error=doc.get("error"), server_role=server.get("role"),
        top_cause="exhausted" if doc.get("status") == "critical" and not doc.get("reachable", True) else None,
    )


def risk_key(row: Row) -> tuple[int, float, str]:
    return (RISK_ORDER.index(row.status) if row.status in RISK_ORDER else 1, -row.effective_ratio, row.member.label)


def risk_sorted(rows: Sequence[Row]) -> list[Row]:
    return sorted(rows, key=risk_key)


def worst_status(statuses: Sequence[str]) -> str:
    """CRITICAL > UNKNOWN > WARNING > OK: a fleet with one full server is critical even if another is unreachable."""
    present = set(statuses)
    return next((s for s in RISK_ORDER if s in present), "ok")


@dataclass(frozen=True)
class FanOut:
    """One client host holding a similar block of connections on many nodes."""

    host: str
    nodes: int
    of_nodes: int
    per_node: int  # median over the nodes it is on
    total: int

    def to_dict(self) -> dict[str, object]:
        return {"host": self.host, "nodes": self.nodes, "of_nodes": self.of_nodes, "per_node": self.per_node,
                "total": self.total}


def find_fanout(rows: Sequence[Row]) -> FanOut | None:
    """The client host spread over the most nodes (at least 2, and half of those seen), by total connections."""
    seen = [r for r in rows if r.payload.get("sources") is not None and r.ratio is not None]
    if len(seen) < 2:
        return None
    per_host: dict[str, list[int]] = {}
    for r in seen:
        for host, conns in r.sources:
            if conns > 0:
                per_host.setdefault(host, []).append(conns)
    spread = [(h, c) for h, c in per_host.items() if len(c) >= 2 and len(c) >= FANOUT_MIN_SHARE * len(seen)]
    if not spread:
        return None
    host, counts = max(spread, key=lambda hc: (sum(hc[1]), len(hc[1]), hc[0]))
    return FanOut(host, len(counts), len(seen), int(statistics.median(counts)), sum(counts))


@dataclass(frozen=True)
class FleetSummary:
    kind: str
    members: int
    by_status: Mapping[str, int]
    status: str
    nearest: Row | None
    cause: str | None  # client_fanout | imbalance | a doctor cause shared by nodes | None
    causes: tuple[str, ...]  # every one found, `cause` first
    cause_summary: str
    fanout: FanOut | None
    cluster_bus: int
    sentinel_links: int | None
    problems: int

    def to_dict(self) -> dict[str, Any]:
        n = self.nearest
        return {
            "members": self.members, "by_status": dict(self.by_status), "status": self.status,
            "nearest": None if n is None else {"target": n.member.redacted, "name": n.member.name,
                                               "role": n.member.role, "ratio": n.ratio, "used": n.used,
                                               "maxclients": n.maxclients, "status": n.status},
            "cause": self.cause, "causes": list(self.causes), "cause_summary": self.cause_summary,
            "fanout": self.fanout.to_dict() if self.fanout else None,
            "cluster_bus_connections": self.cluster_bus, "sentinel_links": self.sentinel_links,
            "problems": self.problems,
        }


def _pct(ratio: float | None) -> str:
    return "?" if ratio is None else f"{ratio:.0%}"


def _causes(kind: str, rows: Sequence[Row], nearest: Row | None) -> tuple[list[tuple[str, str]], FanOut | None]:
    """Every fleet-wide cause found, most structural first: fan-out, then imbalance, then a shared doctor cause."""
    found: list[tuple[str, str]] = []
    fan = find_fanout(rows)
    where = "node" if kind == "cluster" else "server"
    if fan is not None and fan.per_node >= 2:
        found.append(("client_fanout", (
            f"client fan-out: {fan.host} holds about {fan.per_node} connections on each of {fan.nodes} of "
            f"{fan.of_nodes} {where}s ({fan.total} in all). A client keeps a pool per {where}, so a pool of M "
            f"holds N×M across N {where}s: size each per-{where} pool as its share, not the whole budget")))
    # A refusing node counts as 100%: it is the most imbalanced of all, not one left out of the median.
    ratios = [r.effective_ratio for r in rows if r.ratio is not None or r.full]
    if nearest is not None and (nearest.ratio is not None or nearest.full) and len(ratios) >= 3:
        median = statistics.median(ratios)
        near = nearest.effective_ratio
        if near >= WARNING_RATIO and near >= IMBALANCE_FACTOR * max(median, 0.01):
            found.append(("imbalance", (
                f"imbalance: {nearest.member.label} is at {_pct(near)} while the median {where} is at "
                f"{_pct(median)}: clients of its own (or hot slots) pile onto it"
                + (f"; its top cause: {nearest.top_cause}" if nearest.top_cause else ""))))
    causes = Counter(r.top_cause for r in rows if r.top_cause)
    if causes:
        cause, count = causes.most_common(1)[0]
        found.append((cause, f"{cause} on {count} of {len(rows)} {where}s"))
    worst = worst_member(rows)
    if worst is not None:  # the refusing or critical member leads, with its own cause (after a fleet-wide shape)
        state = "refuses connections" if worst.full else f"is critical at {_pct(worst.ratio)}"
        lead = (worst.top_cause or "exhausted",
                f"{worst.member.label} {state}: {worst.top_cause or 'exhausted'}"
                + (f" ({worst.used} of about {worst.maxclients} slots)" if worst.maxclients else ""))
        found = [lead] + found
    return found, fan


def worst_member(rows: Sequence[Row]) -> Row | None:
    """The member to name first: refusing before critical, then the fuller; None when none is critical."""
    critical = [r for r in rows if r.status == "critical"]
    return max(critical, key=lambda r: (r.full, r.effective_ratio, r.member.label)) if critical else None


def summarize(kind: str, rows: Sequence[Row], problems: Sequence[Problem] = ()) -> FleetSummary:
    statuses = [r.status for r in rows] + [p.status for p in problems]
    status = worst_status(statuses)
    by_status = Counter(r.status for r in rows)
    seen = [r for r in rows if r.ratio is not None or r.full]
    nearest = max(seen, key=lambda r: (r.effective_ratio, -risk_key(r)[0])) if seen else None
    found, fan = _causes(kind, rows, nearest)
    # The text leads with the worst member; the `cause` field keeps a fleet-wide shape first when there is one.
    structural = [c for c, _ in found if c in STRUCTURAL]
    cause = structural[0] if structural else found[0][0] if found else None
    text = "; also ".join(t for _, t in found) if found else "no shared cause"
    links = [r.sentinel_links for r in rows if r.sentinel_links is not None]
    return FleetSummary(
        kind=kind, members=len(rows), by_status={s: by_status.get(s, 0) for s in RISK_ORDER}, status=status,
        nearest=nearest, cause=cause, causes=tuple(dict.fromkeys([*structural, *(c for c, _ in found)])), cause_summary=text, fanout=fan,
        cluster_bus=sum(r.cluster_bus or 0 for r in rows), sentinel_links=sum(links) if links else None,
        problems=len(problems),
    )
