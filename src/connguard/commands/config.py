"""`connguard config`: change maxclients or timeout only after checking the fd limit; a dry run until --yes."""

from __future__ import annotations

import sys

import click
import redis

from connguard.analysis.capacity import capacity
from connguard.commands._common import connect_timeout_option, emit_json, handle_errors, json_option, url_argument
from connguard.errors import BadArguments, ConnguardError, ExitCode
from connguard.probe import take_snapshot
from connguard.remedy.limits import ConfigCheck, check_maxclients, check_timeout
from connguard.target import open_connection, parse_target


class ConfigRefused(ConnguardError):
    kind = "config refused"
    exit_code = ExitCode.UNKNOWN


@click.command("config")
@url_argument
@click.option("--maxclients", "maxclients", type=int, help="New maxclients; refused above the fd limit - 32.")
@click.option("--timeout", "timeout", type=int, help="New idle timeout in seconds (0 = off).")
@click.option("--yes", is_flag=True, help="Really run CONFIG SET. Without it, only show the check.")
@json_option
@connect_timeout_option
@handle_errors
def config_command(url: str | None, maxclients: int | None, timeout: int | None, yes: bool, as_json: bool,
                   connect_timeout_s: float) -> None:
    """Set maxclients (checked against the server's fd limit) or timeout (a safety net for leaks)."""
    if (maxclients is None) == (timeout is None):
        raise BadArguments("give exactly one of --maxclients N or --timeout S")
    setting, value = ("maxclients", maxclients) if maxclients is not None else ("timeout", timeout)
    assert value is not None
    target = parse_target(url)
    with open_connection(target, connect_timeout_s=connect_timeout_s) as conn:
        snap = take_snapshot(conn, client_list=False)
        cap = capacity(snap)
        if setting == "maxclients":
            check: ConfigCheck = check_maxclients(value, used=cap.used, fd_limit=cap.fd_limit)
            current = cap.maxclients
        else:
            check = check_timeout(value)
            try:
                current = int(conn.execute("CONFIG", "GET", "timeout")[1])
            except (redis.exceptions.ResponseError, IndexError, TypeError):
                current = None
        if not check.allowed:
            raise BadArguments(f"not setting {setting} {value}: {check.reason}")
        applied = False
        if yes:
            try:
                conn.execute("CONFIG", "SET", setting, str(value))
                applied = True
            except redis.exceptions.ResponseError as exc:
                raise ConfigRefused(f"the server refused CONFIG SET {setting} {value}: {' '.join(str(exc).split())}") from None
    payload = {"schema": "connguard.config/1", "target": target.redacted, "setting": setting, "current": current,
               "requested": value, "dry_run": not yes, "applied": applied, "check": check.reason,
               "fd_limit": cap.fd_limit}
    if as_json:
        emit_json(payload)
    else:
        state = "set" if applied else "would set (dry run: add --yes)"
        click.echo(f"{target.redacted}: {setting} {current} -> {value}: {state}. {check.reason}.")
        if applied and setting == "maxclients":
            click.echo("This lasts until restart: put `maxclients` in redis.conf too (CONFIG REWRITE).")
    sys.exit(0)
