"""`connguard kill`: disconnect stale clients by ID (or, with --sockets, a host's TCP connections from the
server's own host); protected kinds skipped; a dry run until --yes."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import click
import redis

from connguard.commands._common import (
    cli_target, insecure_option,
    FiniteNumber, OneLineCommand, connect_timeout_option, emit_json, handle_errors, json_option, url_argument,
)
from connguard.errors import BadArguments, ConnguardError, Denied, ServerFull
from connguard.render.json import error_object
from connguard.render.console import console_for
from connguard.target import Target, open_connection
from connguard.contract import KILL_SCHEMA

SCHEMA = KILL_SCHEMA
SHOWN_IN_TEXT = 200  # clients listed one by one in text; --json lists them all


@click.command("kill", cls=OneLineCommand)
@url_argument
@click.option("--source", "sources", multiple=True, help="Client host (IP, or 'unix'). Repeatable.")
@click.option("--idle", "idle_min_s", type=FiniteNumber(0, 10 ** 9, integer=True),
              help="Only clients idle at least this many seconds.")
@click.option("--name", "names", multiple=True, help="Only clients with this CLIENT SETNAME. Repeatable.")
@click.option("--id", "ids", multiple=True, type=FiniteNumber(1, 2 ** 63, integer=True),
              help="Only these client IDs. Repeatable.")
@click.option("--output-buffer-over", "output_buffer_min", type=FiniteNumber(1, 2 ** 63, integer=True),
              help="Only clients whose output buffer (omem) holds at least this many bytes: slow consumers. The one "
                   "selector that may reach pub/sub subscribers; each is named. Replicas are never touched.")
@click.option("--pubsub", is_flag=True,
              help="Only pub/sub subscribers (SUBSCRIBE/PSUBSCRIBE), with --source, --name or --id: a subscriber pile. "
                   "Lets subscribers be chosen; each is named. Replicas, Sentinel and MONITOR stay protected.")
@click.option("--include-blocked", is_flag=True, help="Also kill clients blocked in BLPOP/XREAD/WAIT...")
@click.option("--force", is_flag=True,
              help="With --id: kill the listed clients even if protected (replica, pub/sub, MONITOR...); each is named. "
                   "With --sockets: abort a --source that is a replica, Sentinel or cluster node of the server.")
@click.option("--max", "max_kills", type=FiniteNumber(1, 10 ** 7, integer=True), default=1000, show_default=True,
              help="Never kill more than this many.")
@click.option("--sockets", is_flag=True,
              help="Server full and nobody gets in: on the server's own host, as root, abort the TCP connections "
                   "from each --source with `ss -K` (no Redis connection needed).")
@click.option("--yes", is_flag=True, help="Really disconnect. Without it, only show what would happen.")
@json_option
@connect_timeout_option
@insecure_option
@handle_errors
def kill_command(url, sources, idle_min_s, names, ids, output_buffer_min, pubsub, include_blocked, force, max_kills,
                 sockets, yes, as_json, connect_timeout_s) -> None:
    """Disconnect matching clients by ID. Replicas, the primary link, Sentinel, pub/sub, MONITOR and
    connguard's own connection are never touched (explicit --id with --force excepted). Dry run unless --yes.
    When the server is full, it waits for a free slot for --connect-timeout, like `doctor`."""
    target_text = "(invalid URL)" if url else "(default)"  # never echo a raw URL: it may hold a password
    try:
        target = cli_target(url)
        target_text = target.redacted
        if sockets and output_buffer_min is not None:
            raise BadArguments("--sockets cannot see output buffers: choose by --output-buffer-over without --sockets")
        if sockets and pubsub:
            raise BadArguments("--sockets cannot tell subscribers from other connections: use --pubsub without --sockets")
        if sockets:
            payload = _kill_sockets(target, sources, idle_min_s, names, ids, force, yes)
        else:
            payload = _kill_clients(target, sources, idle_min_s, names, ids, include_blocked, force, max_kills, yes,
                                    connect_timeout_s, output_buffer_min, pubsub)
    except ConnguardError as err:
        if as_json:
            emit_json(error_object(SCHEMA, target_text, err, reachable=isinstance(err, Denied)))
            sys.exit(int(err.exit_code))
        raise
    if as_json:
        emit_json(payload)
    elif sockets:
        _print_sockets(payload)
    else:
        _print_clients(payload, max_kills)
    # ss -K failed outright (no kernel support, not root after all): nothing changed, say so by the exit code.
    sys.exit(3 if payload.get("errors") and not payload.get("aborted") else 0)


# -- by client ID, over one held connection ---------------------------------------------------------

def _kill_clients(target: Target, sources, idle_min_s, names, ids, include_blocked, force, max_kills, yes,
                  connect_timeout_s, output_buffer_min=None, pubsub=False) -> dict[str, Any]:
    from connguard.probe.client_list import parse_client_list
    from connguard.probe.info import parse_info
    from connguard.remedy.kill import ServerFeatures, KillFilter, client_list_args, describe, execute_kills, plan_kill

    try:
        wanted = KillFilter(tuple(sources), idle_min_s, tuple(names), tuple(ids), include_blocked, max_kills, force,
                            output_buffer_min, pubsub)
    except ValueError as exc:
        raise BadArguments(str(exc)) from None
    try:
        conn = open_connection(target, connect_timeout_s=connect_timeout_s)
    except ServerFull as err:
        raise ServerFull(err.message + _sockets_hint(target)) from None
    with conn:
        try:
            info = parse_info(_text(conn.execute("INFO", "server")))
            features = ServerFeatures.of(info.flavor, info.version)
        except (redis.exceptions.ResponseError, ValueError):
            features = ServerFeatures()  # INFO denied: the plain path works on every version
        listing = client_list_args(wanted, features)
        try:
            try:
                reply = conn.execute(*listing)
            except redis.exceptions.ResponseError:
                if len(listing) == 2:
                    raise
                listing = ("CLIENT", "LIST")  # a filter this build lacks: fetch every client instead
                reply = conn.execute(*listing)
            clients = parse_client_list(reply).records()
        except redis.exceptions.ResponseError as exc:
            raise Denied(f"{target.redacted} refused CLIENT LIST ({' '.join(str(exc).split())[:100]}): kill chooses "
                         "clients by ID from it, so this user cannot kill; use a user allowed CLIENT LIST and "
                         "CLIENT KILL") from None
        plan = plan_kill(clients, wanted, conn.client_id)
        result = None
        if yes and plan.ids:
            try:
                result = execute_kills(conn, plan, batched=features.multi_id_kill)
            except redis.exceptions.ResponseError as exc:
                raise Denied(f"{target.redacted} refused CLIENT KILL ({' '.join(str(exc).split())[:100]})") from None
    by_host = Counter(c.host for c in plan.targets)
    return {
        "schema": SCHEMA, "target": target.redacted, "mode": "client", "dry_run": not yes,
        "would_kill": len(plan.targets), "by_source": dict(by_host.most_common()), "ids": list(plan.ids),
        "targets": [describe(c) for c in plan.targets],
        "forced": [{**describe(s.client), "protected_as": s.reason} for s in plan.forced],
        "skipped": [{**describe(s.client), "reason": s.reason} for s in plan.skipped],
        "missing_ids": list(plan.missing_ids), "over_limit": plan.over_limit,
        "killed": result.killed if result else 0, "already_gone": list(result.already_gone) if result else [],
        # How the server was asked: the CLIENT LIST filters it applied itself, and whether the kill went in
        # batches of IDs (re-checked by address and age first) or one CLIENT KILL ID per client.
        "server_side": {"client_list": " ".join(listing), "batched_kill": features.multi_id_kill,
                        "round_trips": result.round_trips if result else 0},
    }


def _text(reply: object) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _sockets_hint(target: Target) -> str:
    """A full server that stays full: say what still works, when it does (this host, a TCP target)."""
    from connguard.remedy.sockets import local_server

    try:
        local_server(target)
    except ConnguardError:
        return ""
    from connguard.analysis.shell import Commands

    url = Commands.for_target(target.redacted).url
    return (f"; on this host, as root, `connguard kill {url} --sockets --source HOST` frees slots without a "
            "Redis connection (dry run until --yes)")


def _print_clients(p: dict[str, Any], max_kills: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = console_for()
    dry = p["dry_run"]
    count = p["would_kill"] if dry else p["killed"]
    console.print(f"{'Would kill' if dry else 'Killed'} {count} client(s) on {escape(p['target'])}"
                  + ("  (dry run: add --yes to disconnect)" if dry else ""))
    if p["targets"]:
        table = Table("id", "addr", "name", "idle", "age", "kind", "last cmd", title="clients" + (" to kill" if dry else ""),
                      title_justify="left")
        for c in p["targets"][:SHOWN_IN_TEXT]:
            table.add_row(str(c["id"]), c["addr"], escape(c["name"] or "-"), f"{c['idle_s']}s", f"{c['age_s']}s",
                          c["kind"], escape(c["cmd"]))
        console.print(table)
        if len(p["targets"]) > SHOWN_IN_TEXT:
            console.print(f"... and {len(p['targets']) - SHOWN_IN_TEXT} more (--json lists every one)")
        console.print("By source: " + ", ".join(f"{h} {n}" for h, n in p["by_source"].items()))
    for c in p["forced"]:
        how = "" if "chosen by" in c["protected_as"] else " (--force)"
        console.print(f"{'Would kill' if dry else 'Killed'} a protected kind{how}: id {c['id']} {c['addr']} "
                      f"{escape(c['name'] or '-')} is a {escape(c['protected_as'])}, output buffer {c['omem']} bytes")
    if p["already_gone"]:
        console.print(f"Already gone: {', '.join(map(str, p['already_gone']))}")
    if p["missing_ids"]:
        console.print(f"Not connected (no such ID): {', '.join(map(str, p['missing_ids']))}")
    if p["skipped"]:
        reasons = Counter(s["reason"] for s in p["skipped"])
        console.print("Protected, not touched: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common())
                      + ": ids " + ", ".join(str(s["id"]) for s in p["skipped"][:50]))
    if p["over_limit"]:
        console.print(f"{p['over_limit']} more matched but exceed --max {max_kills}")


# -- by socket, from outside Redis --------------------------------------------------------------------

def _kill_sockets(target: Target, sources, idle_min_s, names, ids, force, yes) -> dict[str, Any]:
    from connguard.probe.census import read_census
    from connguard.remedy.kill import check_source
    from connguard.remedy.sockets import (
        EFFECT, check_can_destroy, destroy_sockets, local_server, plan_sockets, refuse_internal,
    )

    if idle_min_s is not None or names or ids:
        raise BadArguments("--sockets selects by --source only: from outside Redis there are no idle times, names or "
                           "IDs to go by")
    if not sources:
        raise BadArguments("--sockets needs --source HOST (repeatable): the client host whose connections to abort")
    try:
        chosen = tuple(dict.fromkeys(check_source(s) for s in sources))
    except ValueError as exc:
        raise BadArguments(str(exc)) from None
    if "unix" in chosen:
        raise BadArguments("--sockets aborts TCP connections; unix-socket clients cannot be chosen by host")
    port, pid = local_server(target)
    internal = refuse_internal(chosen, pid, force=force)
    if yes:
        check_can_destroy()
    plan = plan_sockets(read_census(port), chosen, pid)
    result = destroy_sockets(plan) if yes and plan.total else None
    return {
        "schema": SCHEMA, "target": target.redacted, "mode": "sockets", "dry_run": not yes, "port": port,
        "server_pid": pid, "connections_on_port": plan.census_total, "by_source": dict(plan.per_host),
        "would_abort": plan.total, "commands": plan.commands(), "effect": EFFECT,
        "aborted": (result.before - result.after) if result else 0,
        "still_connected": result.after if result else None,
        "freed_slots": result.freed_slots if result else 0,
        "errors": list(result.errors) if result else [],
        "internal_forced": internal,
    }


def _print_sockets(p: dict[str, Any]) -> None:
    console = console_for()
    dry = p["dry_run"]
    per = ", ".join(f"{h} ({n})" for h, n in p["by_source"].items())
    if dry:
        console.print(f"Would abort {p['would_abort']} TCP connection(s) to port {p['port']} of {p['target']} "
                      f"from {per}  (dry run: add --yes, as root)")
        console.print(f"This {p['effect']}.")
        for cmd in p["commands"]:
            console.print(f"  $ {cmd}")
        return
    console.print(f"Aborted {p['aborted']} TCP connection(s) from {per}; the server's port now holds "
                  f"{p['freed_slots']} fewer connections ({p['still_connected']} from those hosts again)")
    for err in p["errors"]:
        console.print(f"failed: {err}")
