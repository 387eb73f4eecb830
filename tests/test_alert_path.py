"""The alert path end to end: the exporter -> a real Prometheus with the shipped rules -> a real Alertmanager
with the shipped route -> a webhook receiver in this test. Durations of the rules and the route are divided by
20 (tests/alert_path_running.py), so the shipped files are what is tested, in about a minute.

One Prometheus watches four servers at once:
- a steady leak (one idle connection every 0.4 s): pages ConnguardExhaustionSoon once, with a `command`
  annotation that runs as printed; once the leak is killed the page resolves;
- a plateau (16 app hosts scale up to 85% in 2 s, then flat): pages nothing but ConnguardCapacityWarning;
- a server with a password the exporter does not have, and a port where nothing listens: both page
  ConnguardTargetDown with the probe error's reason.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis

from alert_path_running import (ALERTMANAGER, PROMETHEUS, Alertmanager, Prometheus, Webhook, probe_job,
                                scaled_alertmanager, scaled_rules, wait_for)
from connguard.lab.servers import free_port
from connguard.lab.workloads import Leaker, alias
from exporter_running import run_exporter  # noqa: F401 (a fixture)

FACTOR = 20  # 10 min of `for:` -> 30 s

pytestmark = [
    pytest.mark.slow, pytest.mark.timeout(240),
    pytest.mark.skipif(PROMETHEUS is None or ALERTMANAGER is None,
                       reason="needs Debian's prometheus and prometheus-alertmanager"),
]


def _kill_named(port: int, name: str) -> int:
    """CLIENT KILL by ID every connection named `name`: what an operator does after the doctor names it."""
    with redis.Redis(port=port, single_connection_client=True) as r:
        ids = [c["id"] for c in r.client_list() if c["name"] == name]
        for client_id in ids:
            r.execute_command("CLIENT", "KILL", "ID", client_id)
    return len(ids)


def test_leak_pages_once_and_resolves_plateau_warns_only_and_down_targets_page(
        default_binary, start_server, crowd_for, run_exporter, tmp_path):
    leaking = start_server(default_binary, maxclients=200)
    flat = start_server(default_binary, maxclients=100)
    locked = start_server(default_binary, maxclients=20, password="not-the-exporters")
    nowhere = free_port()
    leak_crowd, flat_crowd = crowd_for(leaking), crowd_for(flat)
    leak_crowd.open(5, source="127.0.0.10", kind="active", name="api")
    flat_crowd.open(5, source="127.0.0.10", kind="active", name="api")

    running = run_exporter(diagnose_every_s=1.0)
    url = {name: f"redis://127.0.0.1:{port}" for name, port in
           (("leak", leaking.port), ("flat", flat.port), ("locked", locked.port), ("nowhere", nowhere))}
    hook = Webhook()
    am = Alertmanager(tmp_path, scaled_alertmanager(hook.url, FACTOR))
    prom = Prometheus(tmp_path, [probe_job("connguard", list(url.values()), f"127.0.0.1:{running.port}")],
                      rules=scaled_rules(FACTOR), alertmanager_port=am.port, interval="500ms")
    leaker = Leaker(leak_crowd, "127.0.0.5", name="orders-worker", every_s=0.4, cap=150, max_duration_s=90)
    try:
        wait_for(lambda: len(prom.query("connguard_up")) == 4, "the first scrape of every target", 30)
        leaker.start()
        for step in range(4):  # the plateau: a fleet of 16 app hosts scales up, 80 connections in 2 s, then flat
            for host in range(4):
                flat_crowd.open(5, source=alias(step * 4 + host, subnet=6), kind="active", name="web")
            time.sleep(0.5)

        # Down targets page, each with its reason.
        for name, reason in (("locked", "auth"), ("nowhere", "refused")):
            down = wait_for(lambda: hook.alerts(alertname="ConnguardTargetDown", instance=url[name]),
                            f"ConnguardTargetDown for {name}", 40)
            assert down[0]["status"] == "firing" and down[0]["labels"]["severity"] == "critical"
            assert down[0]["annotations"]["summary"] == f"{url[name]} cannot be observed: {reason}"

        # The leak pages, with a command that runs as printed.
        page = wait_for(lambda: hook.alerts(alertname="ConnguardExhaustionSoon", instance=url["leak"]),
                        "ConnguardExhaustionSoon for the leak", 75)[0]
        command = page["annotations"]["command"]
        assert command == f"connguard doctor {url['leak']}"
        doctor = subprocess.run([sys.executable, "-m", "connguard", *command.split()[1:]], capture_output=True,
                                text=True, timeout=120)
        assert doctor.returncode in (0, 1, 2), doctor.stderr
        assert "Traceback" not in doctor.stderr and "127.0.0.5" in doctor.stdout

        # Kill the leak: the page resolves.
        leaker.stop()
        leaker.join(timeout=10)
        assert _kill_named(leaking.port, "orders-worker") >= 10
        wait_for(lambda: any(a["status"] == "resolved" for a in
                             hook.alerts(alertname="ConnguardExhaustionSoon", instance=url["leak"])),
                 "the leak's page to resolve", 40)
        # The plateau's capacity warning has fired by now (85% for 15 s scaled).
        wait_for(lambda: hook.alerts(alertname="ConnguardCapacityWarning", instance=url["flat"]),
                 "ConnguardCapacityWarning for the plateau", 30)
    finally:
        leaker.stop()
        prom.stop()
        am.stop()
        hook.close()

    leak_pages = hook.alerts(alertname="ConnguardExhaustionSoon", instance=url["leak"])
    assert len({a["startsAt"] for a in leak_pages}) == 1, leak_pages  # one page: it never resolved and refired
    assert len({a["groupKey"] for a in hook.alerts(instance=url["leak"])}) == 1  # one incident per server
    plateau = {a["labels"]["alertname"] for a in hook.alerts(instance=url["flat"])}
    assert plateau == {"ConnguardCapacityWarning"}, [a["annotations"]["summary"] for a in hook.alerts(instance=url["flat"])]
    assert not hook.alerts(alertname="ConnguardExhaustionSoon", instance=url["flat"])
