"""The command line: parse, call, render. Each command lives in connguard.commands.<name>."""

from __future__ import annotations

import importlib

import click

from connguard import __version__

# (module, attribute) of every command. Kept as data so the CLI stays a thin table of contents.
COMMANDS = [
    ("connguard.commands.status", "status_command"),
    ("connguard.commands.doctor", "doctor_command"),
    ("connguard.commands.lab", "lab_group"),
    ("connguard.commands.demo", "demo_command"),
    ("connguard.commands.plan", "plan_command"),
    ("connguard.commands.kill", "kill_command"),
    ("connguard.commands.config", "config_command"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="connguard")
def main() -> None:
    """connguard keeps Redis from running out of connections: status, doctor, lab, demo, plan."""


for _module, _attr in COMMANDS:
    try:
        main.add_command(getattr(importlib.import_module(_module), _attr))
    except ModuleNotFoundError as _exc:  # a command still being built in a parallel branch
        if _exc.name != _module:
            raise
