"""`connguard kill`: disconnect stale clients by ID, protected kinds skipped; a dry run until --yes."""

from __future__ import annotations

import sys
from collections import Counter

import click
import redis
from rich.console import Console
from rich.table import Table

from connguard.commands._common import connect_timeout_option, emit_json, handle_errors, json_option, url_argument
from connguard.probe.client_list import parse_client_list
from connguard.remedy.kill import DEFAULT_MAX_KILLS, KillFilter, KillPlan, plan_kill
from connguard.target import HeldConnection, open_connection, parse_target


def execute_kills(conn: HeldConnection, plan: KillPlan) -> tuple[int, list[int]]:
    """CLIENT KILL ID one by one: an ID is never reused, so a client that reconnected is not hit."""
    killed = 0
    gone: list[int] = []
    for client_id in plan.ids:
        try:
            killed += int(conn.execute("CLIENT", "KILL", "ID", str(client_id), "SKIPME", "yes"))
        except redis.exceptions.ResponseError:
            gone.append(client_id)  # "No such client": it left on its own
    return killed, gone


def _summary(plan: KillPlan) -> dict:
    by_host = Counter(c.host for c in plan.targets)
    return {
        "would_kill": len(plan.targets),
        "by_source": dict(by_host.most_common()),
        "ids": list(plan.ids),
        "skipped": [{"id": s.client.id, "addr": s.client.addr, "name": s.client.name, "reason": s.reason} for s in plan.skipped],
        "over_limit": plan.over_limit,
    }


@click.command("kill")
@url_argument
@click.option("--source", "sources", multiple=True, help="Client host (IP, or 'unix'). Repeatable.")
@click.option("--idle", "idle_min_s", type=int, help="Only clients idle at least this many seconds.")
@click.option("--name", "names", multiple=True, help="Only clients with this CLIENT SETNAME. Repeatable.")
@click.option("--id", "ids", multiple=True, type=int, help="Only these client IDs. Repeatable.")
@click.option("--include-blocked", is_flag=True, help="Also kill clients blocked in BLPOP/XREAD/WAIT...")
@click.option("--max", "max_kills", type=int, default=DEFAULT_MAX_KILLS, show_default=True, help="Never kill more than this many.")
@click.option("--yes", is_flag=True, help="Really disconnect. Without it, only show what would happen.")
@json_option
@connect_timeout_option
@handle_errors
def kill_command(url, sources, idle_min_s, names, ids, include_blocked, max_kills, yes, as_json, connect_timeout_s) -> None:
    """Disconnect matching clients by ID. Replicas, the primary link, Sentinel, pub/sub, MONITOR and
    connguard's own connection are never touched. Dry run unless --yes."""
    wanted = KillFilter(tuple(sources), idle_min_s, tuple(names), tuple(ids), include_blocked, max_kills)
    target = parse_target(url)
    with open_connection(target, connect_timeout_s=connect_timeout_s) as conn:
        clients = parse_client_list(conn.execute("CLIENT", "LIST")).records()
        plan = plan_kill(clients, wanted, conn.client_id)
        killed, gone = execute_kills(conn, plan) if yes else (0, [])
    payload = {"schema": "connguard.kill/1", "target": target.redacted, "dry_run": not yes, **_summary(plan),
               "killed": killed, "already_gone": gone}
    if as_json:
        emit_json(payload)
        sys.exit(0)
    console = Console()
    verb = "Killed" if yes else "Would kill"
    console.print(f"{verb} {killed if yes else len(plan.targets)} client(s) on {target.redacted}"
                  + ("" if yes else "  [dim](dry run: add --yes to disconnect)[/dim]"))
    if plan.targets:
        table = Table("source", "clients", title="by source")
        for host, count in payload["by_source"].items():
            table.add_row(host, str(count))
        console.print(table)
    if plan.skipped:
        reasons = Counter(s.reason for s in plan.skipped)
        console.print("Protected, not touched: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common()))
    if plan.over_limit:
        console.print(f"{plan.over_limit} more matched but exceed --max {max_kills}")
    sys.exit(0)
