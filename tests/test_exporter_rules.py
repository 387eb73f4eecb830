"""The alert rules: promtool accepts them, and their unit tests (each alert firing and not firing) pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
ALERTMANAGER_YML = DEPLOY.parent / "alertmanager" / "alertmanager.yml"
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")

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
    yaml = pytest.importorskip("yaml")  # PyYAML is in the test extras

    rules = yaml.safe_load((DEPLOY / "rules.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) >= {"ConnguardCapacityWarning", "ConnguardCapacityCritical", "ConnguardRefusing",
                           "ConnguardRejections", "ConnguardChurn", "ConnguardExhaustionSoon", "ConnguardCause",
                           "ConnguardFdLimit", "ConnguardTargetDown"}
    for name, rule in alerts.items():
        assert rule["annotations"]["command"] == "connguard doctor {{ $labels.instance }}", name
        assert rule["annotations"]["next_step"], name
    tests = yaml.safe_load((DEPLOY / "rules_test.yml").read_text())["tests"]
    checked = [c for t in tests for c in t["alert_rule_test"]]
    for name in alerts:
        cases = [c for c in checked if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in cases), f"{name} never tested firing"
        assert any(not c["exp_alerts"] for c in cases), f"{name} never tested quiet"


def test_an_alert_identity_never_carries_a_value_that_switches_during_one_incident() -> None:
    """The cause (and the probe error's reason) belong in annotations: as labels, a verdict that switches
    resolves one alert and starts another (9 firing->resolved transitions in 15 minutes on one leak)."""
    yaml = pytest.importorskip("yaml")
    rules = yaml.safe_load((DEPLOY / "rules.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    cause = alerts["ConnguardCause"]
    assert cause["expr"].startswith("max by (instance, job) ("), cause["expr"]
    assert "keep_firing_for" in cause
    assert "reason" not in alerts["ConnguardTargetDown"]["expr"]
    assert "connguard_probe_error" in alerts["ConnguardTargetDown"]["annotations"]["summary"]
    growth = alerts["ConnguardExhaustionSoon"]["expr"]
    assert "connguard:connections_used:deriv5m > 0" in growth and "predict1h" in growth


@pytest.mark.skipif(AMTOOL is None, reason="amtool not installed (Debian: apt-get install prometheus-alertmanager)")
def test_amtool_accepts_the_example_alertmanager_config() -> None:
    result = subprocess.run([AMTOOL, "check-config", str(ALERTMANAGER_YML)], capture_output=True, text=True,
                            timeout=60)  # type: ignore[list-item]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
