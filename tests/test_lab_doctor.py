"""Every lab scenario is named by the doctor, run with the flags the scenario suggests: the lab and the doctor agree."""

from __future__ import annotations

import pytest

from connguard.lab.scenarios import SCENARIO_NAMES, run_scenario

EXTRA = {"retry_storm": {"exhausted"}, "maxclients_too_low": {"exhausted"}}


def settings_from(flags: tuple[str, ...]):
    from connguard.analysis.diagnosis import DoctorSettings

    given = dict(zip(flags[::2], flags[1::2]))
    return DoctorSettings(interval_s=float(given["--interval"]),
                          idle_threshold_s=float(given.get("--idle-threshold", 300)))


@pytest.mark.parametrize("name", [n for n in SCENARIO_NAMES if n != "celery"])  # celery: test_frameworks_live.py
def test_the_doctor_names_the_cause_each_scenario_reproduces(name: str, default_binary) -> None:
    from connguard.doctor import run_doctor
    from connguard.target import parse_target

    scale = 1.0 if name in {"fd_limit", "internal_connections"} else 0.6
    with run_scenario(name, binary=default_binary, scale=scale, log=lambda line: None) as run:
        diag = run_doctor(parse_target(run.url), settings_from(run.doctor_flags), connect_timeout_s=20)
    named = {f.cause for f in diag.findings if f.severity != "info"}
    assert name in named, f"{name}: the doctor named {sorted(named)}"
    assert named <= {name} | EXTRA.get(name, set()), f"{name}: nothing else is blamed, got {sorted(named)}"
    if run.offenders and name not in {"internal_connections"}:
        evidence_hosts = set(diag.finding(name).evidence.get("hosts") or [])
        assert evidence_hosts & set(run.offenders), f"{name}: the offending hosts are the evidence"
