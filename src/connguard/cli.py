"""The command line: parse, call, render. Each command lives in connguard.commands.<name>, imported only when run.

`connguard --version` and `connguard --help` import no command module (and so no redis-py, rich or lab):
the table below carries each command's one-line help, and a command's module is imported when that
command is invoked. A module listed here and missing is a broken install, and fails loudly when invoked."""

from __future__ import annotations

import importlib
import sys
from typing import Any, NamedTuple

import click
from click.utils import make_default_short_help

from connguard import __version__
from connguard.errors import ExitCode


class Entry(NamedTuple):
    """One command: where it lives, and its short help for `connguard --help` without importing it."""

    module: str
    attr: str
    short_help: str


# Adding a command is one line. The short help must match the command's own (tests/test_cli_lazy.py checks).
COMMANDS: dict[str, Entry] = {
    "status": Entry("connguard.commands.status", "status_command",
                    "How close the server is to maxclients: used (clients + replicas + cluster bus), ratio, headroom."),
    "doctor": Entry("connguard.commands.doctor", "doctor_command",
                    "Diagnose connection exhaustion: verdict, numbered findings with evidence and commands, top sources."),
    "watch": Entry("connguard.commands.watch", "watch_command",
                   "Watch a server live: usage, rates and a forecast of when it fills, every interval."),
    "exporter": Entry("connguard.commands.exporter", "exporter_command",
                      "Serve connguard's view of a server as Prometheus metrics."),
    "lab": Entry("connguard.commands.lab", "lab_group",
                 "Throwaway servers and live reproductions of every cause of connection exhaustion (loopback only)."),
    "demo": Entry("connguard.commands.demo", "demo_command",
                  "Start a throwaway server, reproduce a connection leak and a retry storm, and diagnose each live."),
    "plan": Entry("connguard.commands.plan", "plan_command",
                  "How many connections a deployment takes against maxclients, and what to set so it stays under 80%."),
    "kill": Entry("connguard.commands.kill", "kill_command", "Disconnect matching clients by ID."),
    "config": Entry("connguard.commands.config", "config_command",
                    "Set maxclients (checked against the server's fd limit) or timeout (a safety net for leaks)."),
    "fleet": Entry("connguard.commands.fleet", "fleet_group",
                   "status or doctor over many servers at once: a fleet file, a redis+sentinel:// URL, or a Cluster."),
}


class MissingCommand(click.ClickException):
    """A command in the table whose module is not installed: a packaging bug, said plainly (exit 3)."""

    exit_code = int(ExitCode.UNKNOWN)

    def show(self, file: Any = None) -> None:
        click.echo(f"connguard: broken install: {self.format_message()}", err=True)


def load(name: str) -> click.Command:
    """Import one command. Only the command's own module being absent is reported as MissingCommand; an
    import error inside it is a bug and propagates as is."""
    entry = COMMANDS[name]
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name != entry.module:
            raise
        raise MissingCommand(f"command {name!r} is listed but not installed (no module {entry.module}): "
                             "reinstall connguard") from None
    command = getattr(module, entry.attr)
    if not isinstance(command, click.Command):
        raise TypeError(f"{entry.module}.{entry.attr} is not a click command")
    return command


class ConnguardGroup(click.Group):
    """Lazy: commands come from COMMANDS on first use. And click exits 2 on a usage error, which docs/design.md
    reserves for CRITICAL; bad arguments are UNKNOWN (3)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        command = load(cmd_name)
        self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the table's short help: `--help` imports no command."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)  # as click.Group.format_commands does
        rows = [(name, make_default_short_help(COMMANDS[name].short_help, limit) if name in COMMANDS
                 else self.commands[name].get_short_help_str(limit)) for name in names]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as err:
            # One line, like every other bad input (click's own form is four: usage, hint, blank, error).
            where = err.ctx.command_path if err.ctx is not None else "connguard"
            click.echo(f"connguard: bad arguments: {err.format_message()} (see: {where} --help)", err=True)
            sys.exit(int(ExitCode.UNKNOWN))
        except click.ClickException as err:
            err.show()
            sys.exit(int(ExitCode.UNKNOWN))
        except click.Abort:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=ConnguardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="connguard")
def main() -> None:
    """connguard keeps Redis from running out of connections: status, doctor, watch, lab, demo, plan."""
