"""`connguard status`: one line (or one JSON object) on how close a server is to maxclients."""

from __future__ import annotations

import sys

import click
import redis

from connguard.analysis.capacity import CRITICAL_RATIO, WARNING_RATIO, Thresholds, capacity
from connguard.commands._common import (
    cli_target, insecure_option,
    EXIT_BY_STATUS, FiniteNumber, OneLineCommand, connect_timeout_option, denied, emit_json, handle_errors,
    json_option, url_argument,
)
from connguard.commands._fleet_options import FleetRequest, fleet_options, wants_fleet
from connguard.errors import ConnguardError
from connguard.probe import take_snapshot
from connguard.render.json import error_object
from connguard.render.status_line import SCHEMA, status_line, status_payload
from connguard.target import open_connection

# Only what one server's one line needs is imported here: the fleet machinery (discovery, doctor, rich) is
# imported by `fleet()` when a run turns out to be one. tests/test_status_imports.py holds that line.

RATIO = FiniteNumber(0, 1, low_open=True)


@click.command("status", cls=OneLineCommand)
@url_argument
@fleet_options
@json_option
@connect_timeout_option
@insecure_option
@click.option("--warning", "warning_ratio", type=RATIO, default=WARNING_RATIO, show_default=True, metavar="RATIO",
              help="Ratio for WARNING (exit 1), reached at or above it.")
@click.option("--critical", "critical_ratio", type=RATIO, default=CRITICAL_RATIO, show_default=True, metavar="RATIO",
              help="Ratio for CRITICAL (exit 2), reached at or above it.")
@handle_errors
def status_command(url: str | None, fleet_file: str | None, cluster: bool, all_members: bool, concurrency: int,
                   as_json: bool, connect_timeout_s: float, warning_ratio: float, critical_ratio: float) -> None:
    """How close the server is to maxclients: used (clients + replicas + cluster bus), ratio, headroom.
    Many servers at once: --fleet FILE, a redis+sentinel:// URL, or a Cluster (--cluster, or any node whose INFO
    says cluster_enabled:1): one risk-sorted table (--json: connguard.fleet/1) and the worst exit code."""
    thresholds = Thresholds(warning_ratio, critical_ratio)

    def fleet(cluster: bool) -> None:
        from connguard.commands.fleet import run_fleet, status_observer

        request = FleetRequest(url, fleet_file, cluster, all_members, concurrency, connect_timeout_s)
        sys.exit(run_fleet("status", request, status_observer(thresholds, connect_timeout_s), as_json=as_json))

    if wants_fleet(url, fleet_file, cluster, all_members):
        fleet(cluster)
    target_text = "(invalid URL)" if url else "(default)"  # never echo a raw URL: it may hold a password
    try:
        target = cli_target(url)
        target_text = target.redacted
        with open_connection(target, connect_timeout_s=connect_timeout_s) as conn:
            try:
                snap = take_snapshot(conn, client_list=False)
            except redis.exceptions.ResponseError as exc:
                raise denied(exc, f"{target.redacted}: status needs INFO") from None
            limitations = conn.limitations
            masters, note = None, ""
            if snap.info.role == "unknown":  # a data node always says master or slave; a Sentinel says neither
                from connguard.discovery.sentinel import masters_if_sentinel, sentinel_note
                masters = masters_if_sentinel(conn)
                note = sentinel_note(target, masters) if masters is not None else ""
    except ConnguardError as err:
        if as_json:
            emit_json(error_object(SCHEMA, target_text, err, reachable=err.kind == "denied"))
            sys.exit(int(err.exit_code))
        raise
    if snap.info.cluster_enabled:  # a Cluster node: every node, each over its own connection (no extra look here)
        fleet(True)
    cap = capacity(snap)
    status = cap.status(thresholds)
    if as_json:
        payload = status_payload(target, snap, cap, status, limitations)
        if masters is not None:
            payload["sentinel"] = {"masters": list(masters), "note": note}
        emit_json(payload)
    else:
        click.echo(status_line(target, snap, cap, status) + (f"; {note}" if note else ""))
    sys.exit(int(EXIT_BY_STATUS[status]))
