"""The alert rules: promtool accepts them, and their unit tests (each alert firing and not firing) pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120)  # type: ignore[list-item]


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_say() -> None:
    result = _promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_and_the_doctor_command() -> None:
    yaml = pytest.importorskip("yaml")  # PyYAML: ask the integrator to keep it in the test extras

    rules = yaml.safe_load((DEPLOY / "rules.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) >= {"ConnguardCapacityWarning", "ConnguardCapacityCritical", "ConnguardRefusing",
                           "ConnguardRejections", "ConnguardChurn", "ConnguardExhaustionSoon", "ConnguardCause",
                           "ConnguardFdLimit"}
    for name, rule in alerts.items():
        assert rule["annotations"]["command"] == "connguard doctor {{ $labels.instance }}", name
        assert rule["annotations"]["next_step"], name
    tests = yaml.safe_load((DEPLOY / "rules_test.yml").read_text())["tests"]
    checked = [c for t in tests for c in t["alert_rule_test"]]
    for name in alerts:
        cases = [c for c in checked if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in cases), f"{name} never tested firing"
        assert any(not c["exp_alerts"] for c in cases), f"{name} never tested quiet"
