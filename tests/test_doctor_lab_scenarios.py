"""Cross-check: the lab's own scenarios (written without the doctor's thresholds in view) get the right cause."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

scenarios = pytest.importorskip("connguard.lab.scenarios")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", scenarios.SCENARIO_NAMES)
def test_the_lab_scenario_is_named_by_the_doctor_with_an_offender(name, default_binary):
    with scenarios.run_scenario(name, binary=default_binary, log=lambda _line: None) as run:
        out = subprocess.run([sys.executable, "-m", "connguard", "doctor", run.url, *run.doctor_flags, "--json"],
                             capture_output=True, text=True, timeout=60)
    data = json.loads(out.stdout)
    found = {f["cause"]: f for f in data["findings"] if f["severity"] in ("warning", "critical")}
    assert name in found, [(f["cause"], f["severity"], f["summary"]) for f in data["findings"]]
    assert out.returncode in (1, 2) and data["status"] in ("warning", "critical")
    if run.offenders:
        assert set(run.offenders) & set(found[name]["evidence"]["hosts"]), (run.offenders, found[name]["evidence"])
