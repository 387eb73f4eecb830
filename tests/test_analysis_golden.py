"""Golden pairs: raw captures from live scenarios (tests/testdata/<version>/<scenario>/) must give the
recorded diagnosis without a server: the same causes, severities and offending hosts."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from connguard.analysis.diagnosis import Diagnosis, DoctorSettings, diagnose
from connguard.probe import build_snapshot
from connguard.probe.model import HostFacts, Snapshot
from connguard.probe.serialize import read_raw_capture

DATA = Path(__file__).parent / "testdata"
# Captured over the doctor's held connection, as take_snapshot does (when the probe supports it).
OBSERVER = {"observer_connections": 1} if "observer_connections" in inspect.signature(build_snapshot).parameters else {}
CASES = sorted(p.parent for p in DATA.glob("*/*/diagnosis.json"))


def load(folder: Path) -> tuple[list[Snapshot], DoctorSettings, dict]:
    meta = json.loads((folder / "meta.json").read_text())
    host = HostFacts(**meta["host"]) if meta["host"] else None
    snaps = [
        build_snapshot(read_raw_capture(folder / f"snapshot{i + 1}", taken_at=t, limitations=tuple(lim)),
                       host=host, own_client_id=meta["own_client_id"], **OBSERVER)
        for i, (t, lim) in enumerate(zip(meta["taken_at"], meta["limitations"]))
    ]
    return snaps, DoctorSettings(**meta["settings"]), json.loads((folder / "diagnosis.json").read_text())


def serious(diag: Diagnosis) -> set[str]:
    return {f.cause for f in diag.findings if f.severity != "info"}


def test_there_are_golden_cases_for_every_cause_on_two_servers():
    causes = {json.loads((c / "diagnosis.json").read_text())["scenario"] for c in CASES}
    assert {"connection_leak", "pool_oversize", "serverless_fanout", "retry_storm", "maxclients_too_low",
            "fd_limit", "internal_connections", "blocked_clients", "healthy", "mixed"} <= causes
    assert len({c.parent.name for c in CASES}) >= 2


@pytest.mark.parametrize("folder", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_capture_gives_the_recorded_diagnosis(folder):
    (first, second), settings, golden = load(folder)
    diag = diagnose(first, second, settings, "redis://127.0.0.1:6379")
    got = [{"cause": f.cause, "severity": f.severity, "hosts": list(f.hosts)} for f in diag.findings]
    assert got == golden["findings"]
    assert diag.status == golden["status"]
    assert serious(diag) == set(golden["expected_causes"])
    main = next((f for f in diag.findings if f.cause == (golden["expected_causes"] or [None])[0]), None)
    for host in golden["offenders"]:
        assert host in main.hosts


@pytest.mark.parametrize("folder", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_one_snapshot_still_names_the_cause(folder):
    """--once has no rates: the cause must still come out of one Snapshot (at lower confidence for a storm)."""
    (_first, second), settings, golden = load(folder)
    diag = diagnose(second, None, settings, "redis://127.0.0.1:6379")
    assert set(golden["expected_causes"]) <= {f.cause for f in diag.findings}
    assert diag.rates is None
    if golden["scenario"] == "healthy":
        assert diag.status == "ok"
