"""`connguard fleet status|doctor` over a fleet file of real servers: one full, one busy with a password, one
idle, one where nothing listens, and a line that does not parse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerProcess, free_port

from conftest import BINARIES

SECRET = "fl33t-s3cret-pw"
PREFERRED = [b for b in BINARIES if b.flavor == "redis" and b.version.startswith("7.")] or BINARIES


class Fleet:
    def __init__(self, idle: ServerProcess, busy: ServerProcess, full: ServerProcess, dead_port: int) -> None:
        self.idle, self.busy, self.full, self.dead_port = idle, busy, full, dead_port

    def plain_file(self, tmp: Path) -> Path:
        path = tmp / "fleet.txt"
        path.write_text(
            "# a fleet: blank lines and comments are skipped\n"
            f"{self.idle.url}\n"
            f"redis://:{SECRET}@127.0.0.1:{self.busy.port}   # the busy one, with its password\n"
            "\n"
            f"redis://:{SECRET}@127.0.0.1:notaport\n"
            f"redis://127.0.0.1:{self.full.port}\n"
            f"redis://127.0.0.1:{self.dead_port}\n"
        )
        return path


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    if not PREFERRED:
        pytest.skip("no server binary found")
    binary = PREFERRED[0]
    servers = [ServerProcess(binary, maxclients=100), ServerProcess(binary, maxclients=20, password=SECRET),
               ServerProcess(binary, maxclients=10)]
    crowds: list[Crowd] = []
    try:
        for s in servers:
            s.start()
        idle, busy, full = servers
        crowds.append(Crowd("127.0.0.1", busy.port, password=SECRET))
        assert len(crowds[-1].open(17, source="127.0.0.7").sockets) == 17  # 85%: past the warning line
        crowds.append(Crowd("127.0.0.1", full.port))
        assert len(crowds[-1].open(10, source="127.0.0.8").sockets) == 10  # at maxclients: refuses everyone
        yield Fleet(idle, busy, full, free_port())
    finally:
        for crowd in crowds:
            crowd.close()
        for s in servers:
            s.stop()


def cg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connguard", *args], capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("cmd", [("fleet", "doctor"), ("doctor",)], ids=["fleet-doctor", "doctor"])
def test_doctor_over_a_fleet_file_is_one_risk_sorted_table_with_the_worst_exit(cmd: tuple[str, ...], fleet: Fleet, tmp_path: Path) -> None:
    proc = cg(*cmd, "--once", "--connect-timeout", "1", "--fleet", str(fleet.plain_file(tmp_path)))
    assert proc.returncode == 2, proc.stdout + proc.stderr  # the full server is CRITICAL
    rows = [line for line in proc.stdout.splitlines() if line.lstrip()[:1].isdigit()]
    order = [next(p for p in (fleet.full.port, fleet.dead_port, fleet.busy.port, fleet.idle.port) if f":{p}" in row)
             for row in rows]
    assert order == [fleet.full.port, fleet.dead_port, fleet.busy.port, fleet.idle.port]
    assert "CRITICAL" in rows[0] and "exhausted" in rows[0]
    assert "UNKNOWN" in rows[1] and "refused the connection" in rows[1]
    assert "WARNING" in rows[2] and "17/20" in rows[2] and "OK" in rows[3]
    # The bad line and the dead target are named on stderr, one line each; everything else was still reported.
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith("connguard: line 5: ") and "notaport" in errors[0]
    assert errors[1].startswith(f"connguard: target redis://127.0.0.1:{fleet.dead_port}: ")
    assert "Traceback" not in proc.stderr


def test_fleet_json_has_every_target_and_the_bad_line_and_never_the_password(fleet: Fleet, tmp_path: Path) -> None:
    proc = cg("fleet", "doctor", "--once", "--json", "--connect-timeout", "1", str(fleet.plain_file(tmp_path)))
    out = json.loads(proc.stdout)
    assert out["schema"] == "connguard.fleet/1" and out["kind"] == "fleet" and out["exit_code"] == proc.returncode == 2
    assert [t["status"] for t in out["targets"]] == ["critical", "unknown", "warning", "ok"]
    assert [p["where"] for p in out["problems"]] == ["line 5"]
    busy = out["targets"][2]
    assert busy["target"] == f"redis://:***@127.0.0.1:{fleet.busy.port}" and busy["member"]["line"] == 3
    assert out["summary"]["nearest"]["status"] == "critical" and out["summary"]["by_status"]["critical"] == 1
    assert SECRET not in proc.stdout and SECRET not in proc.stderr


@pytest.mark.parametrize("cmd", [("fleet", "status"), ("status",)], ids=["fleet-status", "status"])
def test_status_over_a_toml_fleet_shows_names_and_groups(cmd: tuple[str, ...], fleet: Fleet, tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(
        f'[[target]]\nurl = "{fleet.idle.url}"\nname = "sessions"\ngroup = "prod"\n\n'
        f'[[target]]\nurl = "redis://:{SECRET}@127.0.0.1:{fleet.busy.port}"\nname = "orders"\ngroup = "prod"\n\n'
        f'[[target]]\nname = "typo"\nurl = "redis://:{SECRET}@127.0.0.1:{fleet.idle.port}/x"\n'
    )
    proc = cg(*cmd, "--fleet", str(path), "--concurrency", "2")
    assert proc.returncode == 3, proc.stdout + proc.stderr  # a bad entry is UNKNOWN, which outranks the warning
    rows = [line for line in proc.stdout.splitlines() if line.lstrip()[:1].isdigit()]
    assert "orders" in rows[0] and "prod" in rows[0] and "WARNING" in rows[0]
    assert "sessions" in rows[1] and "OK" in rows[1]
    assert proc.stderr.startswith("connguard: target 3 (typo): ") and "'x' is not a number" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, words", [
    (["--concurrency", "0"], "out of range"),
    (["--concurrency", "nan"], "not a finite number"),
    (["--concurrency", "2.5"], "not a whole number"),
    (["--connect-timeout", "inf"], "not a finite number"),
])
def test_bad_numbers_are_usage_errors_exit_3(fleet: Fleet, args: list[str], words: str) -> None:
    proc = cg("fleet", "status", fleet.idle.url, *args)
    assert proc.returncode == 3 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_missing_fleet_file_or_url_and_file_together_are_one_line_exit_3(fleet: Fleet, tmp_path: Path) -> None:
    proc = cg("fleet", "status", "--fleet", str(tmp_path / "nope.txt"))
    assert proc.returncode == 3 and "cannot read fleet file" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = cg("fleet", "status", str(tmp_path / "nope.txt"))
    assert proc.returncode == 3 and "neither a URL" in proc.stderr
    proc = cg("fleet", "status", f"redis://:{SECRET}@127.0.0.1:1", "--fleet", str(fleet.plain_file(tmp_path)))
    assert proc.returncode == 3 and "not both" in proc.stderr and SECRET not in proc.stderr


def test_a_single_plain_url_is_a_fleet_of_one(fleet: Fleet) -> None:
    proc = cg("fleet", "status", "--json", f"redis://:{SECRET}@127.0.0.1:{fleet.busy.port}")
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["kind"] == "single" and len(out["targets"]) == 1
    assert out["targets"][0]["schema"] == "connguard.status/1" and out["targets"][0]["used"] == 17
    assert SECRET not in proc.stdout + proc.stderr
