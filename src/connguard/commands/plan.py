"""`connguard plan`: the runbook's capacity arithmetic for a deployment, and the maxclients and ulimit to set."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from connguard.commands._common import EXIT_BY_STATUS, FiniteNumber, OneLineCommand, emit_json, handle_errors, json_option
from connguard.remedy.plan import CRITICAL_LINE, MAX_COUNT, MAX_FD_LIMIT, MAX_MAXCLIENTS, WARNING_LINE, Plan, PlanInput, plan
from connguard.render.console import console_for


def _count(name: str, default: int, help_text: str, minimum: int = 0, maximum: int = MAX_COUNT) -> Any:
    return click.option(name, type=FiniteNumber(minimum, maximum, integer=True), default=default, show_default=True,
                        help=help_text)


@click.command("plan", cls=OneLineCommand)
@click.option("--deployment", "deployment_file", metavar="FILE.toml", default=None,
              help="A deployment by its components ([[component]]: celery, celery-client, celery-beat, flower, "
                   "gunicorn, uwsgi, django-cache, rq, redis-py) and its [server]; flags given here override [server]. "
                   "See docs/frameworks.md.")
@_count("--instances", 1, "Application instances (hosts, pods).", 1)
@_count("--processes", 1, "Processes per instance, each with its own pool (gunicorn/uwsgi workers).", 1)
@_count("--pool-size", 10, "Connections per process pool (max_connections).", 1)
@_count("--replicas", 0, "Replicas attached to this primary.")
@_count("--sentinels", 0, "Sentinels monitoring it (two connections each).")
@_count("--cluster-nodes", 0, "Nodes in the cluster (bus slots count against maxclients), 0 if not a cluster.")
@_count("--maxclients", 10000, "maxclients of the server.", 1, MAX_MAXCLIENTS)
@click.option("--fd-limit", type=FiniteNumber(1, MAX_FD_LIMIT, integer=True), default=None,
              help="The server's `ulimit -n`, if known.")
@_count("--reserve", 10, "Slots to keep for people and tools (redis-cli, exporters) and failover headroom.")
@_count("--fd-margin", 64, "Extra fds beyond maxclients + 32 in the recommended ulimit.")
@click.option("--serverless", is_flag=True, help="Count concurrent invocations instead of instances x processes x pool.")
@_count("--concurrency", 0, "Concurrent invocations at peak (with --serverless).")
@_count("--per-invocation", 1, "Connections each invocation opens (with --serverless).", 1)
@json_option
@handle_errors
def plan_command(deployment_file: str | None, instances: int, processes: int, pool_size: int, replicas: int, sentinels: int, cluster_nodes: int,
                 maxclients: int, fd_limit: int | None, reserve: int, fd_margin: int, serverless: bool,
                 concurrency: int, per_invocation: int, as_json: bool) -> None:
    """How many connections a deployment takes against maxclients, and what to set so it stays under 80%.

    Exit 0 when it stays under the 0.8 warning line, 1 at or above it, 2 at or above the 0.9 line or over
    maxclients, 3 on bad input.
    """
    if deployment_file is not None:
        from connguard.commands.plan_deployment import run_deployment

        run_deployment(deployment_file, as_json)
    if not serverless and concurrency:
        raise ValueError("--concurrency only applies with --serverless")
    result = plan(PlanInput(
        instances=instances, processes_per_instance=processes, pool_size=pool_size, replicas=replicas,
        sentinels=sentinels, cluster_nodes=cluster_nodes, maxclients=maxclients, fd_limit=fd_limit, reserve=reserve,
        fd_margin=fd_margin, serverless=serverless, concurrency=concurrency, per_invocation=per_invocation,
    ))
    if as_json:
        emit_json(result.to_dict())
    else:
        render(result, console_for())
    sys.exit(int(EXIT_BY_STATUS[result.status]))


def print_verdict(console: Console, status: str, total: int, maxclients: int, ratio: float) -> None:
    """The plan's first line (plain and deployment plans alike): the verdict and the numbers behind it."""
    pct = f"{100 * ratio:.1f}%"
    verdict = {
        "ok": f"OK: {total} of {maxclients} connections ({pct}), under the {WARNING_LINE:.0%} warning line.",
        "warning": f"WARNING: {total} of {maxclients} connections ({pct}) is at or over the "
                   f"{WARNING_LINE:.0%} warning line: no room for a deploy, a failover or a leak.",
        "critical": (f"CRITICAL: {total} connections exceed maxclients {maxclients} ({pct}): "
                     "the server will refuse connections at peak.") if total > maxclients else
                    (f"CRITICAL: {total} of {maxclients} connections ({pct}) is at or over the "
                     f"{CRITICAL_LINE:.0%} danger line: one deploy or failover from refusing connections."),
    }[status]
    console.print(verdict, style={"ok": "bold green", "warning": "bold yellow", "critical": "bold red"}[status])


def print_settings(console: Console, maxclients: int, fd_limit: int) -> None:
    console.print(f"Set maxclients {maxclients} (redis.conf, or `connguard config URL --maxclients {maxclients} "
                  f"--yes`) and the server's fd limit to at least {fd_limit} (`ulimit -n {fd_limit}`, systemd "
                  f"LimitNOFILE={fd_limit}): maxclients + 32 + margin.")


def render(result: Plan, console: Console) -> None:
    print_verdict(console, result.status, result.total, result.maxclients, result.ratio)
    table = Table(show_edge=False)
    table.add_column("part")
    table.add_column("connections", justify="right")
    table.add_column("how")
    for part in result.parts:
        table.add_row(part.name, str(part.connections), part.how)
    table.add_row("[bold]total[/]", f"[bold]{result.total}[/]", f"ratio {result.ratio:.3f} of maxclients {result.maxclients}")
    console.print(table)
    unit = "connections per invocation" if result.parts[0].name == "serverless" else "pool size per process"
    console.print(f"Largest safe {unit}: {result.largest_safe_pool_size}")
    print_settings(console, result.recommended_maxclients, result.recommended_fd_limit)
    for note in result.notes:
        console.print(f"- {note}")
