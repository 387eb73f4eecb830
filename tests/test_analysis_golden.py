"""Golden data, compared whole: raw captures from live scenarios (tests/testdata/<version>/<scenario>/) must give
the recorded `connguard.doctor/1` object, evidence and actions included, without a server.

Each scenario folder holds
- snapshot1/, snapshot2/ and meta.json: the classic doctor's two raw captures, and diagnosis.json: their verdict;
- window.jsonl: a recorded multi-snapshot window (`doctor --record` format), and window_diagnosis.json.

After a deliberate change to the rules or their texts, regenerate every golden map with one command and
review the diff:  python tests/doctor_scenarios.py regolden tests/testdata
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connguard.analysis.diagnosis import Diagnosis, DoctorSettings, diagnose, diagnose_observations
from connguard.analysis.window import Window
from connguard.probe import build_snapshot
from connguard.probe.model import HostFacts, Snapshot
from connguard.probe.recording import read_recordings
from connguard.probe.serialize import read_raw_capture

DATA = Path(__file__).parent / "testdata"
TARGET = "redis://127.0.0.1:6379"
CASES = sorted(p.parent for p in DATA.glob("*/*/meta.json"))
WINDOWS = sorted(p.parent for p in DATA.glob("*/*/window.jsonl"))
# Facts of the capture's moment, not of the analysis: left out so a re-capture diffs only in what matters.
VOLATILE = {"server": ("process_id", "uptime_s", "tcp_port")}


def ids(cases: list[Path]) -> list[str]:
    return [f"{c.parent.name}/{c.name}" for c in cases]


def meta_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())


def load(folder: Path) -> tuple[list[Snapshot], DoctorSettings, dict[str, Any]]:
    """The two Snapshots of a scenario, rebuilt from the raw replies as the probe builds them."""
    meta = meta_of(folder)
    host = HostFacts(**meta["host"]) if meta["host"] else None
    snaps = [
        build_snapshot(read_raw_capture(folder / f"snapshot{i + 1}", taken_at=t, limitations=tuple(lim)),
                       host=host, own_client_id=meta["own_client_id"], observer_connections=1)
        for i, (t, lim) in enumerate(zip(meta["taken_at"], meta["limitations"]))
    ]
    return snaps, DoctorSettings(**meta["settings"]), meta


def diagnose_pair(folder: Path) -> Diagnosis:
    snaps, settings, _meta = load(folder)
    return diagnose(snaps, settings, TARGET)


def diagnose_window(folder: Path) -> Diagnosis:
    """The recorded window, diagnosed exactly as `doctor --replay` does."""
    session = read_recordings(folder / "window.jsonl")[-1]
    settings = DoctorSettings(**{k: session.settings[k] for k in ("interval_s", "idle_threshold_s", "top")})
    return diagnose_observations(session.observations, settings, session.target)


def golden_map(diag: Diagnosis) -> dict[str, Any]:
    """The whole doctor --json object minus the VOLATILE fields, through JSON (tuples become lists)."""
    data = json.loads(json.dumps(diag.to_dict()))
    for section, fields in VOLATILE.items():
        if data.get(section):
            for f in fields:
                data[section].pop(f, None)
    return data


def serious(diag: Diagnosis) -> set[str]:
    return {f.cause for f in diag.findings if f.severity != "info"}


def test_there_are_golden_cases_for_every_cause_on_two_servers():
    causes = {meta_of(c)["scenario"] for c in CASES}
    assert {"connection_leak", "pool_oversize", "serverless_fanout", "retry_storm", "maxclients_too_low",
            "fd_limit", "internal_connections", "blocked_clients", "healthy", "mixed"} <= causes
    assert len({c.parent.name for c in CASES}) >= 2
    assert {c.name for c in WINDOWS} == {c.name for c in CASES}, "every scenario has a recorded window"


@pytest.mark.parametrize("folder", CASES, ids=ids(CASES))
def test_two_captures_give_the_whole_recorded_diagnosis(folder):
    diag = diagnose_pair(folder)
    assert golden_map(diag) == json.loads((folder / "diagnosis.json").read_text())
    meta = meta_of(folder)
    assert serious(diag) == set(meta["expected_causes"])
    main = next((f for f in diag.findings if f.cause == (meta["expected_causes"] or [None])[0]), None)
    for host in meta["offenders"]:
        assert host in main.hosts


@pytest.mark.parametrize("folder", WINDOWS, ids=ids(WINDOWS))
def test_a_recorded_window_gives_the_whole_recorded_diagnosis(folder):
    diag = diagnose_window(folder)
    assert golden_map(diag) == json.loads((folder / "window_diagnosis.json").read_text())
    meta = meta_of(folder)
    assert serious(diag) == set(meta["expected_causes"]), "the window names what the scenario reproduces"


@pytest.mark.parametrize("folder", WINDOWS, ids=ids(WINDOWS))
def test_window_logic_covers_the_middle_of_the_window(folder):
    """Over the recorded window, churn by client ID is at least what its two ends show, and the rates are
    the sum over every interval in it."""
    observed = [o.snapshot for o in read_recordings(folder / "window.jsonl")[-1].observations if o.snapshot]
    assert len(observed) >= 3
    whole = Window.of(observed)
    ends = Window.of([observed[0], observed[-1]])
    assert whole.churn is not None and ends.churn is not None
    for host, churn in ends.churn.items():
        assert whole.churn[host].opened >= churn.opened and whole.churn[host].closed >= churn.closed
        assert whole.churn[host].growth == churn.growth
    rates = diagnose(observed, DoctorSettings(), TARGET).rates
    received = sum(b.info.total_connections_received - a.info.total_connections_received
                   for a, b in zip(observed, observed[1:]))
    assert rates is not None and rates.snapshots == len(observed) and rates.connections_received == received


def test_a_storm_window_sees_more_turnover_than_its_ends():
    storms = [w for w in WINDOWS if w.name == "retry_storm"]
    assert storms
    for folder in storms:
        observed = [o.snapshot for o in read_recordings(folder / "window.jsonl")[-1].observations if o.snapshot]
        whole, ends = Window.of(observed).churn, Window.of([observed[0], observed[-1]]).churn
        assert sum(c.opened for c in whole.values()) > sum(c.opened for c in ends.values()), folder


@pytest.mark.parametrize("folder", CASES, ids=ids(CASES))
def test_one_snapshot_still_names_the_cause(folder):
    """--once has no rates: the cause must still come out of one Snapshot (at lower confidence for a storm)."""
    (_first, second), settings, meta = load(folder)
    diag = diagnose([second], settings, TARGET)
    assert set(meta["expected_causes"]) <= {f.cause for f in diag.findings}
    assert diag.rates is None
    if meta["scenario"] == "healthy":
        assert diag.status == "ok"
