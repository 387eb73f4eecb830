"""docs/contract.md and connguard/contract.py say the same: every schema name, exit code, cause name and probe-error
reason in one is in the other, and the code emits only those."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connguard import contract
from connguard.errors import AuthFailed, BadArguments, BadTarget, ExitCode, NotRedis, ServerFull, Unreachable
from connguard.monitor.exporter_targets import probe_reason

DOC = (Path(__file__).resolve().parents[1] / "docs" / "contract.md").read_text()


def section(title: str) -> str:
    start = DOC.index(f"## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:] if end < 0 else DOC[start:end]


def first_column(text: str) -> list[str]:
    """The first cell of every table row under a section, without the header and its rule."""
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [row.split("|")[1].strip().strip("`") for row in rows[1:]]


def test_every_schema_is_documented_and_every_documented_schema_exists():
    named = set(re.findall(r"connguard\.[a-z.]+/\d+", DOC)) - {"connguard.doctor/2"}  # the example of a break
    assert named == set(contract.SCHEMAS)
    assert first_column(section("Schema names")) == list(contract.SCHEMAS)


def test_exit_codes():
    table = {int(code): meaning for code, meaning in
             (row.split("|")[1:3] for row in section("Exit codes").splitlines() if re.match(r"\| \d \|", row))}
    assert sorted(table) == [int(c) for c in contract.ExitCode]
    for code in contract.ExitCode:
        assert table[int(code)].strip().startswith(code.name)
    assert ExitCode is contract.ExitCode, "errors re-exports the one ExitCode"


def test_cause_names():
    assert first_column(section("Cause names")) == list(contract.CAUSES)


def test_probe_error_reasons():
    row = next(line for line in DOC.splitlines() if line.startswith("| `connguard_probe_error`"))
    documented = re.findall(r"(?:: |, )`([a-z_]+)`", row.split("|")[4])  # the listed values, not the words between
    assert documented == list(contract.PROBE_ERROR_REASONS)


@pytest.mark.parametrize("error", [BadTarget("x"), BadArguments("x"), AuthFailed("x"), NotRedis("x"), ServerFull("x"),
                                   Unreachable("redis://h:1 refused the connection: nothing listens there"),
                                   Unreachable("TLS handshake with rediss://h:1 failed"),
                                   Unreachable("redis://h:1 did not answer in time")])
def test_the_exporter_gives_only_contract_reasons(error):
    assert probe_reason(error) in contract.PROBE_ERROR_REASONS
