"""Fleet output: one risk-sorted table with a summary for people, the `connguard.fleet/1` object for machines."""

from __future__ import annotations

from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connguard.discovery.model import Problem
from connguard.discovery.summary import FleetSummary, Row, risk_sorted
from connguard.contract import FLEET_SCHEMA

SCHEMA = FLEET_SCHEMA
STYLE = {"ok": "green", "warning": "yellow", "critical": "bold red", "unknown": "magenta"}
NOUN = {"cluster": "node", "sentinel": "member", "fleet": "target", "single": "target"}


def fleet_json(*, command: str, kind: str, source: str, rows: Sequence[Row], summary: FleetSummary,
               problems: Sequence[Problem], exit_code: int) -> dict[str, Any]:
    """`targets` are the per-target objects (connguard.doctor/1 or connguard.status/1), riskiest first, each
    with a `member` object added (role, name, group, slots, node id)."""
    return {
        "schema": SCHEMA, "command": command, "kind": kind, "source": source,
        "status": summary.status, "exit_code": exit_code,
        "summary": summary.to_dict(),
        "problems": [p.to_dict() for p in problems],
        "targets": [{**row.payload, "member": row.member.to_dict()} for row in risk_sorted(rows)],
    }


def _ratio(row: Row) -> str:
    if row.ratio is None:
        return "full" if row.full else "-"
    return f"{row.ratio:.0%}"


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


SERVER_ROLES = {"master": "primary", "slave": "replica", "replica": "replica", "sentinel": "sentinel"}


def _role(row: Row) -> str:
    role = row.member.role
    if role == "target" and row.server_role:  # a fleet line: say what INFO says it is
        role = SERVER_ROLES.get(row.server_role, row.server_role)
    health = row.member.health
    return role if health in (None, "online") else f"{role} ({health})"


def fleet_table(rows: Sequence[Row], kind: str) -> Table:
    show_slots = any(r.member.slots is not None for r in rows)
    show_bus = kind == "cluster" or any(r.cluster_bus for r in rows)
    show_links = any(r.sentinel_links for r in rows)
    show_group = any(r.member.group for r in rows) and kind == "fleet"
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column(NOUN.get(kind, "target"), overflow="fold")
    if show_group:
        table.add_column("group")
    table.add_column("role")
    if show_slots:
        table.add_column("slots", justify="right")
    table.add_column("status")
    table.add_column("used/max", justify="right")
    table.add_column("ratio", justify="right")
    if show_bus:
        table.add_column("bus", justify="right")
    if show_links:
        table.add_column("sentinel", justify="right")
    table.add_column("top cause / error", overflow="fold")
    for i, row in enumerate(risk_sorted(rows), start=1):
        cells = [str(i), escape(row.member.label)]
        if show_group:
            cells.append(escape(row.member.group or ""))
        cells.append(_role(row))
        if show_slots:
            cells.append(_num(row.member.slots))
        cells.append(f"[{STYLE.get(row.status, '')}]{row.status.upper()}[/]")
        used = f"{_num(row.used)}/{_num(row.maxclients)}" if row.used is not None else "-"
        cells += [used, _ratio(row)]
        if show_bus:
            cells.append(_num(row.cluster_bus))
        if show_links:
            cells.append(_num(row.sentinel_links))
        cells.append(escape(row.error if row.error and not row.top_cause else (row.top_cause or "")))
        table.add_row(*cells)
    return table


def headline(summary: FleetSummary, source: str, kind: str) -> str:
    noun = NOUN.get(kind, "target")
    counts = ", ".join(f"{n} {s}" for s, n in summary.by_status.items() if n)
    return (f"{summary.status.upper()}: {kind} {source}: {summary.members} {noun}{'s' if summary.members != 1 else ''}"
            f"{' (' + counts + ')' if counts else ''}")


def summary_lines(summary: FleetSummary, kind: str) -> list[str]:
    lines: list[str] = []
    n = summary.nearest
    if n is not None:
        how = "refusing connections (at maxclients)" if n.full and n.ratio is None else (
            f"at {n.ratio:.0%} ({n.used}/{n.maxclients}, headroom {n.headroom})")
        lines.append(f"Nearest its limit: {n.member.label} ({_role(n)}) {how}")
    scope = {"cluster": "Cluster-wide cause", "sentinel": "Across the members", "fleet": "Across the fleet"}
    lines.append(f"{scope.get(kind, 'Cause')}: {summary.cause_summary}")
    if kind == "cluster" and summary.cluster_bus:
        lines.append(f"Cluster bus: {summary.cluster_bus} slots across the nodes (2 per other node, each node)")
    if summary.sentinel_links:
        lines.append(f"Sentinel links: {summary.sentinel_links} (counted in internal_connections)")
    if summary.problems:
        lines.append(f"Problems: {summary.problems} (one line each on stderr), not in the table")
    return lines


def render_fleet(console: Console, *, rows: Sequence[Row], summary: FleetSummary, source: str, kind: str) -> None:
    style = STYLE.get(summary.status, "")
    console.print(f"[{style}]{escape(headline(summary, source, kind))}[/]", soft_wrap=True)
    if rows:
        console.print(fleet_table(rows, kind))
    for line in summary_lines(summary, kind):
        console.print(escape(line), soft_wrap=True)
