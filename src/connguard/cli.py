"""The command line: parse, call, render. Each command lives in connguard.commands.<name>."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from connguard import __version__
from connguard.errors import ExitCode

# (module, attribute) of every command. Kept as data so the CLI stays a thin table of contents.
COMMANDS = [
    ("connguard.commands.status", "status_command"),
    ("connguard.commands.doctor", "doctor_command"),
    ("connguard.commands.lab", "lab_group"),
    ("connguard.commands.demo", "demo_command"),
    ("connguard.commands.plan", "plan_command"),
    ("connguard.commands.kill", "kill_command"),
    ("connguard.commands.config", "config_command"),
    ("connguard.commands.fleet", "fleet_group"),
]


class ConnguardGroup(click.Group):
    """click exits 2 on a usage error, which DESIGN.md reserves for CRITICAL; bad arguments are UNKNOWN (3)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
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
    """connguard keeps Redis from running out of connections: status, doctor, lab, demo, plan."""


for _module, _attr in COMMANDS:
    try:
        main.add_command(getattr(importlib.import_module(_module), _attr))
    except ModuleNotFoundError as _exc:  # a command still being built in a parallel branch
        if _exc.name != _module:
            raise
