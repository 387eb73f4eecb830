"""`connguard status URL` for one server imports its own path only: target, probe, capacity, the one-line
render. Not the fleet machinery, the doctor's analysis, rich, the lab or the guard (it runs every minute on every
server, so its start-up is what users feel). The set is asserted, never the time (bench/bench_startup.py times it).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from connguard.lab.servers import ServerProcess

NEVER_ON_THE_STATUS_PATH = (
    "rich", "connguard.commands.fleet", "connguard.doctor", "connguard.analysis.diagnosis",
    "connguard.analysis.rules", "connguard.discovery.cluster", "connguard.discovery.sentinel", "connguard.lab",
    "connguard.guard", "connguard.render.fleet", "connguard.monitor",
)

PROGRAM = """
import runpy, sys
sys.argv = ["connguard", *sys.argv[1:]]
try:
    runpy.run_module("connguard", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("\\n".join(sorted(sys.modules)), file=sys.stderr)
print("exit", code, file=sys.stderr)
"""


def modules_imported(*args: str) -> tuple[set[str], str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True, env=env, timeout=60)
    lines = run.stderr.splitlines()
    return set(lines[:-1]), lines[-1] + " | " + run.stdout.strip()


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules for h in NEVER_ON_THE_STATUS_PATH if m == h or m.startswith(h + ".")}


def test_status_of_one_server_imports_only_its_path(default_binary, start_server) -> None:
    server: ServerProcess = start_server(default_binary, maxclients=50)
    modules, outcome = modules_imported("status", server.url)
    assert outcome.startswith("exit 0 | OK:"), outcome  # the run itself worked: one OK line
    assert heavy(modules) == set()
    for needed in ("connguard.target", "connguard.probe", "connguard.analysis.capacity", "connguard.render.status_line"):
        assert needed in modules


def test_the_fleet_machinery_still_loads_when_status_becomes_a_fleet_run(tmp_path, default_binary, start_server) -> None:
    """The lazy import is taken when the run is a fleet: the same command, a fleet file."""
    server: ServerProcess = start_server(default_binary, maxclients=50)
    fleet = tmp_path / "fleet.txt"
    fleet.write_text(server.url + "\n")
    modules, outcome = modules_imported("status", "--fleet", str(fleet))
    assert outcome.startswith("exit 0"), outcome
    assert "connguard.commands.fleet" in modules


@pytest.mark.parametrize("first", ["connguard.commands.status", "connguard.commands.fleet"])
def test_status_and_fleet_import_in_either_order(first: str) -> None:
    """No import cycle: neither module imports the other (the status/1 object lives in render.status_line)."""
    other = "connguard.commands.fleet" if first.endswith("status") else "connguard.commands.status"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    program = f"import {first}, sys; assert {other!r} not in sys.modules; import {other}"
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
