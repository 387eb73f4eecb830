"""`connguard lab storm`: the retry-storm experiment, redis-py's defaults against reconnect-at-once and the guard."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.console import Console

from connguard.commands._common import emit_json, handle_errors, json_option
from connguard.lab.servers import default_binary
from connguard.lab.storm import ARMS, run_storm
from connguard.lab.storm_render import machine, render_table, verdict, write_json, write_plot


@click.command("storm")
@click.option("--arms", default=",".join(ARMS), show_default=True, help="Client styles to run, in order.")
@click.option("--workers", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option("--full-s", type=click.FloatRange(0.5, 120), default=7.0, show_default=True,
              help="Seconds the leak keeps the server full.")
@click.option("--after-s", type=click.FloatRange(0.5, 120), default=5.0, show_default=True,
              help="Seconds watched after the leak is cleared.")
@click.option("--maxclients", type=click.IntRange(16, 10_000), default=64, show_default=True)
@click.option("--held", type=click.IntRange(0, 255), default=1, show_default=True,
              help="Live connections each client holds from before the leak (0: it starts at a full server).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write storm.json and storm.png (needs matplotlib, the `lab` extra) into this directory.")
@click.option("--server-bin", metavar="PATH", default=None, help="Server executable for the throwaway server.")
@json_option
@handle_errors
def storm_command(arms: str, workers: int, full_s: float, after_s: float, maxclients: int, held: int, out_dir: Path | None,
                  server_bin: str | None, as_json: bool) -> None:
    """Fill a throwaway server with a leak, let workers storm it in each client style, clear the leak, measure.

    Exits 0 when the guard made at least 50x fewer connection attempts than redis-py's defaults while the server
    was full and served every worker again, with no command failing any more, within 1.5x redis-py's time after the
    leak cleared; 1 otherwise. With --held (default 1) the clients were running before the leak: the guard learns
    over that live connection whether room has returned instead of probing with new ones.
    """
    console = Console(stderr=as_json)
    logging.getLogger("connguard.guard").setLevel(logging.ERROR)  # the breaker logs each trip; the table says it all
    chosen = tuple(a.strip() for a in arms.split(",") if a.strip())
    result = run_storm(chosen, workers=workers, full_s=full_s, after_s=after_s, maxclients=maxclients, held=held,
                       binary=default_binary(server_bin), log=lambda line: console.print(f"  {line}", style="dim"))
    ok, line = verdict(result)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(result, out_dir / "storm.json")
        plotted = write_plot(result, out_dir / "storm.png")
        console.print(f"wrote {out_dir / 'storm.json'}" + (f" and {out_dir / 'storm.png'}" if plotted else
                      " (no plot: pip install 'connguard[lab]' for matplotlib)"))
    if as_json:
        payload = result.to_dict()
        payload["machine"] = machine()
        payload["verdict"] = {"ok": ok, "line": line}
        emit_json(payload)
    else:
        render_table(result, console)
        console.print(("✓ " if ok else "✗ ") + line, style="bold green" if ok else "bold red")
    sys.exit(0 if ok else 1)


