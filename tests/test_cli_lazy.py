"""The lazy command table: `--version` and `--help` import no command (no redis-py), the table's short help
matches each command's own, and a listed command whose module is missing fails loudly, only when invoked."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import click
from click.testing import CliRunner
import pytest

from connguard.cli import COMMANDS, main

HEAVY = ("redis", "rich", "connguard.lab", "connguard.guard", "connguard.commands")


def imported_modules(*args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "connguard", *args], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-500:]
    return {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [("--version",), ("--help",)])
def test_version_and_help_import_no_command_and_no_redis(args):
    modules = imported_modules(*args)
    assert "connguard.cli" in modules
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"connguard {' '.join(args)} imported {heavy[:10]}"


def installed(name: str) -> bool:
    return importlib.util.find_spec(COMMANDS[name].module) is not None


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_matches_each_installed_command(name):
    entry = COMMANDS[name]
    if not installed(name):
        pytest.skip(f"{entry.module} is not on this branch yet (see the next test for how it fails)")
    command = getattr(importlib.import_module(entry.module), entry.attr)
    assert isinstance(command, click.Command) and command.name == name
    assert entry.short_help == command.get_short_help_str(limit=10**6), (
        f"update the short help of {name!r} in connguard/cli.py COMMANDS")


def test_help_lists_every_command_with_its_short_help():
    out = subprocess.run([sys.executable, "-m", "connguard", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for name, entry in COMMANDS.items():
        line = next((ln for ln in out.stdout.splitlines() if ln.strip().startswith(name + " ")), "")
        assert entry.short_help.split()[0] in line, (name, line)


def test_a_listed_command_whose_module_is_missing_fails_loudly_when_invoked(monkeypatch):
    from connguard import cli

    monkeypatch.setitem(cli.COMMANDS, "ghost", cli.Entry("connguard.commands.ghost", "ghost_command", "Not here."))
    result = CliRunner().invoke(main, ["ghost"])
    assert result.exit_code == 3
    assert "command 'ghost' is listed but not installed" in result.output
    # ...while everything else still works: the missing one is not imported by --help.
    assert CliRunner().invoke(main, ["--help"]).exit_code == 0


def test_an_import_error_inside_a_command_is_not_hidden(monkeypatch, tmp_path):
    (tmp_path / "connguard_broken_cmd.py").write_text("import connguard_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from connguard import cli

    monkeypatch.setitem(cli.COMMANDS, "broken", cli.Entry("connguard_broken_cmd", "x", "Broken."))
    with pytest.raises(ModuleNotFoundError, match="connguard_no_such_dependency"):
        cli.load("broken")


def test_usage_errors_are_one_line_with_exit_3():
    out = subprocess.run([sys.executable, "-m", "connguard", "nosuchcommand"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 3 and out.stderr.count("\n") == 1
    assert out.stderr.startswith("connguard: bad arguments: No such command 'nosuchcommand'")
