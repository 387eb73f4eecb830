"""`connguard watch`: the live view (gauge, forecast, alerts, sources) or, with --json / no TTY, NDJSON per tick."""

from __future__ import annotations

import signal
import sys

import click
from rich.console import Console

from connguard.commands._common import (
    FiniteNumber, SECONDS, cli_target, connect_timeout_option, fail, handle_errors, insecure_option, url_argument,
)
from connguard.discovery.sentinel_url import is_sentinel_url, parse_sentinel_url
from connguard.monitor.watch import WatchOptions, WatchRunner
from connguard.monitor.watch_model import WatchSettings


@click.command("watch", short_help="Watch a server live: usage, rates and a forecast of when it fills, every interval.")
@url_argument
@click.option("--interval", "interval_s", type=FiniteNumber(0.1, 3600), default=2.0, show_default=True,
              help="Seconds between ticks (INFO every tick).")
@click.option("--idle-threshold", "idle_threshold_s", type=SECONDS, default=300.0, show_default=True,
              help="Seconds idle after which a connection counts as idle (idle_source alert, kill preview).")
@click.option("--forecast-alert", "forecast_alert_s", type=SECONDS, default=900.0, show_default=True,
              help="exhaustion_soon fires when the forecast says full in under this many seconds.")
@click.option("--forecast-window", "forecast_window_s", type=FiniteNumber(20, 86_400), default=600.0,
              show_default=True, help="Seconds of recent history the forecast fits.")
@click.option("--diagnose-every", "diagnose_every_s", type=FiniteNumber(1, 86_400), default=10.0, show_default=True,
              help="Run the doctor's rules at most this often (seconds).")
@click.option("--clients-every", "clients_every_s", type=FiniteNumber(0.1, 86_400), default=None,
              help="Seconds between CLIENT LISTs. Default: adaptive, so CLIENT LIST takes <= 1% of server time.")
@click.option("--top", type=FiniteNumber(1, 1000, integer=True), default=10, show_default=True,
              help="Sources to show.")
@click.option("--json", "as_json", is_flag=True,
              help="NDJSON, one connguard.watch/1 object per tick (also when stdout is not a terminal).")
@click.option("--count", type=FiniteNumber(1, 10_000_000, integer=True), default=None,
              help="Stop after this many ticks (default: run until Ctrl-C or q).")
@click.option("--record", "record_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Append the raw observations (and kills) to this JSONL file, for doctor --replay.")
@click.option("--alert-cmd", default=None,
              help="Shell command run with the alert as JSON on stdin when an alert starts, changes or clears.")
@click.option("--alert-timeout", "alert_timeout_s", type=FiniteNumber(0.1, 3600), default=10.0, show_default=True,
              help="Seconds --alert-cmd may run before it is killed.")
@connect_timeout_option
@insecure_option
@handle_errors
def watch_command(url, interval_s, idle_threshold_s, forecast_alert_s, forecast_window_s, diagnose_every_s,
                  clients_every_s, top, as_json, count, record_path, alert_cmd, alert_timeout_s,
                  connect_timeout_s) -> None:
    """Live view of one server: capacity gauge with the 0.8/0.9 lines, time to exhaustion, the runbook's
    alerts, the doctor's verdict and the top sources. Keys: ↑/↓ select a source, x previews killing its
    idle connections through watch's own connection, y confirms, [ and ] change the preview's idle threshold,
    q quits. Ctrl-C exits 0. A full server is waited out (census view when local) and the first free slot kept;
    a redis+sentinel:// URL is followed across failovers."""
    settings = WatchSettings(interval_s=interval_s, idle_threshold_s=idle_threshold_s, forecast_alert_s=forecast_alert_s,
                             forecast_window_s=forecast_window_s, diagnose_every_s=diagnose_every_s,
                             clients_every_s=clients_every_s, top=top)
    json_mode = as_json or not sys.stdout.isatty()
    options = WatchOptions(settings=settings, as_json=json_mode, count=count, alert_cmd=alert_cmd,
                           alert_timeout_s=alert_timeout_s, record=record_path, connect_timeout_s=connect_timeout_s)
    target = cli_target(url)  # a redis+sentinel:// URL: the primary the Sentinels name now
    spec = None
    if is_sentinel_url(url):
        spec = parse_sentinel_url(url)  # type: ignore[arg-type]
    runner = WatchRunner(target, options, sentinel=spec)
    runner.open()  # fail fast (bad URL, wrong password, nothing listening); a full server is waited out
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` leaves as cleanly as Ctrl-C: terminal restored
    keys = None
    try:
        if json_mode:
            code = runner.run_json()
        else:
            if sys.stdin.isatty():
                from connguard.monitor.watch_keys import KeyReader

                keys = KeyReader()
            code = runner.run_live(Console(), keys)
    except KeyboardInterrupt:  # Ctrl-C is how one leaves a live view: a clean exit, not an error
        code = 0
    finally:
        if keys is not None:
            keys.close()
        runner.close()
    never = runner.never_observed()
    if never is not None:  # a run that never saw the server is not OK: its one line and exit code (2 if full)
        fail(never)
    sys.exit(code)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
