"""`connguard config`: change maxclients or timeout only after checking the fd limit; a dry run until --yes."""

from __future__ import annotations

import sys

import click

from connguard.commands._common import (
    cli_target,
    FiniteNumber, OneLineCommand, connect_timeout_option, emit_json, handle_errors, json_option, url_argument,
)
from connguard.errors import BadArguments, ConnguardError, Denied
from connguard.render.json import error_object
from connguard.target import open_connection
from connguard.contract import CONFIG_SCHEMA

SCHEMA = CONFIG_SCHEMA


class ConfigRefused(ConnguardError):
    kind = "config refused"


@click.command("config", cls=OneLineCommand)
@url_argument
@click.option("--maxclients", "maxclients", type=FiniteNumber(1, 10_000_000, integer=True),
              help="New maxclients; refused above the fd limit - 32, and below used + 10 unless --force.")
@click.option("--timeout", "timeout", type=FiniteNumber(0, 10 ** 9, integer=True),
              help="New idle timeout in seconds (0 = off).")
@click.option("--force", is_flag=True, help="Allow a maxclients below the connections in use plus a reserve of 10.")
@click.option("--yes", is_flag=True, help="Really run CONFIG SET. Without it, only show the check.")
@json_option
@connect_timeout_option
@handle_errors
def config_command(url: str | None, maxclients: int | None, timeout: int | None, force: bool, yes: bool,
                   as_json: bool, connect_timeout_s: float) -> None:
    """Set maxclients (checked against the server's fd limit) or timeout (a safety net for leaks)."""
    target_text = "(invalid URL)" if url else "(default)"
    try:
        if (maxclients is None) == (timeout is None):
            raise BadArguments("give exactly one of --maxclients N or --timeout S")
        target = cli_target(url)
        target_text = target.redacted
        payload = _configure(target, maxclients, timeout, force, yes, connect_timeout_s)
    except ConnguardError as err:
        if as_json:
            emit_json(error_object(SCHEMA, target_text, err, reachable=isinstance(err, (ConfigRefused, Denied))))
            sys.exit(int(err.exit_code))
        raise
    if as_json:
        emit_json(payload)
    else:
        _print(payload)
    sys.exit(3 if payload["cannot_read"] else 0)


def _configure(target, maxclients, timeout, force, yes, connect_timeout_s) -> dict:
    from connguard.analysis.capacity import capacity
    from connguard.probe import take_snapshot
    from connguard.remedy.limits import (
        ConfigCheck, ConfigSetRefused, apply_config, check_maxclients, check_timeout, read_config,
    )

    setting, value = ("maxclients", maxclients) if maxclients is not None else ("timeout", timeout)
    with open_connection(target, connect_timeout_s=connect_timeout_s) as conn:
        cap = capacity(take_snapshot(conn, client_list=False))
        current = read_config(conn, setting)
        if setting == "maxclients":
            check: ConfigCheck = check_maxclients(value, used=cap.used, fd_limit=cap.fd_limit, force=force)
        else:
            check = check_timeout(value)
        if not check.allowed:
            raise BadArguments(f"not setting {setting} {value}: {check.reason}")
        cannot_read = None
        if current.denied:
            cannot_read = (f"cannot read the current {setting}: CONFIG GET was denied ({current.denied}); this user "
                           "is denied CONFIG, so --yes will fail (use a user allowed CONFIG GET and CONFIG SET)")
        applied = False
        if yes:
            try:
                apply_config(conn, setting, value)
                applied = True
            except ConfigSetRefused as exc:
                raise ConfigRefused(f"the server refused CONFIG SET {setting} {value}: {exc}") from None
            cannot_read = None
    return {"schema": SCHEMA, "target": target.redacted, "setting": setting, "current": current.value,
            "current_readable": current.denied is None, "requested": value, "dry_run": not yes, "applied": applied,
            "check": check.reason, "cannot_read": cannot_read, "used": cap.used, "fd_limit": cap.fd_limit}


def _print(p: dict) -> None:
    current = p["current"] if p["current_readable"] else "(unknown)"
    state = "set" if p["applied"] else "would set (dry run: add --yes)"
    click.echo(f"{p['target']}: {p['setting']} {current} -> {p['requested']}: {state}. {p['check']}.")
    if p["cannot_read"]:
        click.echo(f"Warning: {p['cannot_read']}.")
    if p["applied"]:
        click.echo(f"This lasts until restart: put `{p['setting']}` in redis.conf too (or run CONFIG REWRITE).")
