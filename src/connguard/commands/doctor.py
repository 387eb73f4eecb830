"""`connguard doctor`: name the cause of connection exhaustion, with evidence and the next command."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from connguard.analysis.diagnosis import DoctorSettings
from connguard.commands._common import (
    EXIT_BY_STATUS, connect_timeout_option, emit_json, handle_errors, json_option, url_argument,
)
from connguard.doctor import run_doctor
from connguard.errors import ConnguardError
from connguard.render.json import diagnosis_json, error_json
from connguard.render.text import render_text
from connguard.target import parse_target


@click.command("doctor")
@url_argument
@click.option("--interval", "interval_s", type=float, default=5.0, show_default=True,
              help="Seconds between the two Snapshots (rates, growth).")
@click.option("--once", is_flag=True, help="One Snapshot only: faster, but no rates or growth.")
@click.option("--idle-threshold", "idle_threshold_s", type=float, default=300.0, show_default=True,
              help="Seconds idle after which a connection counts as idle (leak candidate).")
@click.option("--top", type=int, default=10, show_default=True, help="Sources to list; the rest fold into one row.")
@json_option
@connect_timeout_option
@handle_errors
def doctor_command(url: str | None, interval_s: float, once: bool, idle_threshold_s: float, top: int,
                   as_json: bool, connect_timeout_s: float) -> None:
    """Diagnose connection exhaustion: verdict, numbered findings with evidence and commands, top sources.
    Read only. Exit 0 ok, 1 warning, 2 critical (including a full server), 3 unknown."""
    settings = DoctorSettings(interval_s=interval_s, idle_threshold_s=idle_threshold_s, top=top)
    target_text = "(invalid URL)" if url else "(default)"  # never echo a raw URL: it may hold a password
    try:
        target = parse_target(url)
        target_text = target.redacted
        diag = run_doctor(target, settings, once=once, connect_timeout_s=connect_timeout_s)
    except ConnguardError as err:
        if as_json:
            emit_json(error_json(target_text, err))
            sys.exit(int(err.exit_code))
        raise
    if as_json:
        emit_json(diagnosis_json(diag))
    else:
        # Piped output (logs, CI, checks) gets a fixed, wide layout instead of 80 columns.
        render_text(diag, Console(highlight=False, width=None if sys.stdout.isatty() else 140))
    sys.exit(int(EXIT_BY_STATUS[diag.status]))
