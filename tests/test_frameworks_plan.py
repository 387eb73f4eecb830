"""`plan --deployment`: each framework formula stays within 20% of what the real framework held, for every
configuration in the recorded table (docs/frameworks-measured.json, written by tools/measure_frameworks.py),
and bad deployment files are one line and exit 3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from connguard.cli import main
from connguard.remedy.deployment import Component, Deployment, ServerSide, per_instance, plan_deployment

MEASURED = json.loads((Path(__file__).resolve().parent.parent / "docs" / "frameworks-measured.json").read_text())


def component_for(row: dict) -> Component:
    """The component a measured configuration describes (one instance)."""
    cfg, kind = row["config"], row["kind"]
    if kind == "celery":
        return Component("m", "celery", pool=cfg["pool"], concurrency=cfg["concurrency"],
                         result_backend="redis" if cfg["result_backend"] else None,
                         broker_pool_limit=cfg["broker_pool_limit"] or 10,
                         redis_max_connections=cfg["redis_max_connections"])
    if kind == "celery-client":
        return Component("m", kind, result_backend=cfg["result_backend"], waits_for_results=cfg["waits_for_results"])
    if kind in ("celery-beat", "flower"):
        return Component("m", kind, result_backend=cfg["result_backend"])
    if kind == "gunicorn":
        return Component("m", "gunicorn", workers=cfg["workers"], threads=cfg["threads"],
                         max_connections=cfg["max_connections"])
    if kind == "django-cache":
        return Component("m", "django-cache", backend=cfg["backend"], threads=cfg["threads"],
                         max_connections=cfg["max_connections"])
    return Component("m", kind)


def test_the_recorded_table_covers_what_the_issue_asks():
    rows = MEASURED["measurements"]
    celery = {(r["config"]["pool"], r["config"]["concurrency"], r["config"]["result_backend"])
              for r in rows if r["kind"] == "celery"}
    for pool in ("prefork", "threads"):
        for conc in (1, 4, 16):
            assert {(pool, conc, True), (pool, conc, False)} <= celery
    assert ("solo", 1, True) in celery and ("solo", 1, False) in celery
    assert {r["kind"] for r in rows} >= {"celery-beat", "flower", "celery-client", "gunicorn", "django-cache", "rq"}
    assert {r["config"]["backend"] for r in rows if r["kind"] == "django-cache"} == {"django", "django-redis"}


@pytest.mark.parametrize("row", MEASURED["measurements"],
                         ids=[f"{r['kind']}-{'-'.join(str(v) for v in r['config'].values())}"
                              for r in MEASURED["measurements"]])
def test_each_formula_is_within_20_percent_of_the_measured_count(row):
    planned = per_instance(component_for(row))[0]
    measured = row["after_load"]  # what the pools hold once every slot has been used: the planning number
    assert abs(planned - measured) <= 0.2 * measured, (planned, measured)


def test_a_result_backend_adds_one_connection_per_prefork_child_and_nothing_without_one():
    with_backend = Component("w", "celery", pool="prefork", concurrency=16, result_backend="redis")
    without = Component("w", "celery", pool="prefork", concurrency=16)
    assert per_instance(with_backend)[0] - per_instance(without)[0] == 16
    assert per_instance(Component("w", "celery", pool="prefork", concurrency=1))[0] == per_instance(without)[0]


def test_web_processes_that_wait_on_results_hold_a_producer_and_a_result_consumer_each():
    waiting = Component("web", "celery-client", instances=20, processes=4, result_backend="redis",
                        waits_for_results=True)
    assert per_instance(waiting)[0] == 4 * 4
    assert per_instance(Component("web", "celery-client", processes=4))[0] == 4 * 2  # no result backend


def test_the_tracker_deployment_20_web_and_5_workers_against_400():
    """The Celery tracker's report: 20 web dynos and 5 worker dynos against a 400-connection limit."""
    dep = Deployment((Component("web", "gunicorn", instances=20, workers=4, threads=1, max_connections=10),
                      Component("worker", "celery", instances=5, pool="prefork", concurrency=8,
                                result_backend="redis")), ServerSide(maxclients=400, reserve=10))
    result = plan_deployment(dep)
    by = {c.name: c for c in result.components}
    assert by["web"].connections == 80 and by["worker"].connections == 5 * 18
    assert result.total == 80 + 90 + 10 and result.status == "ok"
    # the largest concurrency keeps the whole deployment strictly under 0.8 x 400 = 320
    safe = by["worker"].largest_safe_knob
    over = Deployment((dep.components[0], Component("worker", "celery", instances=5, pool="prefork",
                                                    concurrency=safe + 1, result_backend="redis")), dep.server)
    at = Deployment((dep.components[0], Component("worker", "celery", instances=5, pool="prefork",
                                                  concurrency=safe, result_backend="redis")), dep.server)
    assert plan_deployment(at).ratio < 0.8 <= plan_deployment(over).ratio


DEPLOYMENT = """
[server]
maxclients = 400
replicas = 1
sentinels = 3

[[component]]
name = "web"
kind = "gunicorn"
instances = 20
workers = 4
threads = 2
max_connections = 10

[[component]]
name = "workers"
kind = "celery"
instances = 5
pool = "prefork"
concurrency = 16
broker = "redis"
result_backend = "redis"
broker_pool_limit = 10

[[component]]
name = "beat"
kind = "celery-beat"
result_backend = "redis"

[[component]]
name = "flower"
kind = "flower"

[[component]]
name = "cache"
kind = "django-cache"
instances = 20
backend = "django-redis"
workers = 4
threads = 2

[[component]]
name = "jobs"
kind = "rq"
instances = 2
workers = 3
"""


def run(tmp_path, text, *args):
    path = tmp_path / "deployment.toml"
    path.write_text(text)
    return CliRunner().invoke(main, ["plan", "--deployment", str(path), *args])


def test_json_names_every_component_and_the_total_and_exits_by_status(tmp_path):
    res = run(tmp_path, DEPLOYMENT, "--json")
    doc = json.loads(res.output)
    assert doc["schema"] == "connguard.plan/2"
    got = {c["name"]: c["connections"] for c in doc["components"]}
    assert got == {"web": 160, "workers": 5 * 26, "beat": 3, "flower": 19, "cache": 160, "jobs": 12}
    internal = {p["name"]: p["connections"] for p in doc["internal"]}
    assert internal == {"replicas": 1, "sentinels": 6, "reserve": 10}
    assert doc["total"] == sum(got.values()) + 17 == 501
    assert doc["status"] == "critical" and res.exit_code == 2  # 501 > 400
    assert doc["recommended_maxclients"] == 627 and doc["recommended_fd_limit"] == 627 + 32 + 64


def test_a_flag_on_the_command_line_overrides_the_server_table(tmp_path):
    res = run(tmp_path, DEPLOYMENT, "--json", "--maxclients", "10000")
    doc = json.loads(res.output)
    assert doc["maxclients"] == 10000 and doc["status"] == "ok" and res.exit_code == 0


def test_the_human_report_has_the_verdict_the_table_and_the_ulimit(tmp_path):
    res = run(tmp_path, DEPLOYMENT)
    assert res.output.startswith("CRITICAL: 501 connections exceed maxclients 400")
    assert "workers" in res.output and "ulimit -n 723" in res.output


@pytest.mark.parametrize("text, says", [
    ("x = ", "not valid TOML"),
    ("[[component]]\nname = 'a'\nkind = 'sidekiq'\n", "kind = 'sidekiq' is not one of"),
    ("[[component]]\nname = 'a'\nkind = 'celery'\nconcurrency = -1\n", "concurrency = -1 must be between"),
    ("[[component]]\nname = 'a'\nkind = 'celery'\nconcurrency = 4.5\n", "must be a whole number"),
    ("[[component]]\nname = 'a'\nkind = 'celery'\npool = 'forks'\n", "pool = 'forks' is not one of"),
    ("[[component]]\nname = 'a'\nkind = 'celery'\nworkers = 3\n", "celery has no field 'workers'"),
    ("[[component]]\nname = 'a'\nkind = 'celery'\nbroker = 'amqp'\n", "only a Redis broker"),
    ("[[component]]\nname = 'a'\nkind = 'celery-client'\nwaits_for_results = 'yes'\n", "must be true or false"),
    ("[[component]]\nname = 'a'\nkind = 'rq'\n[[component]]\nname = 'a'\nkind = 'rq'\n", "names must be unique"),
    ("[server]\nmaxclients = 0\n[[component]]\nname = 'a'\nkind = 'rq'\n", "maxclients = 0 must be between"),
    ("[server]\nmaxclients = 100\n", "no [[component]] tables"),
    ("[[component]]\nkind = 'rq'\n", "needs a name"),
])
def test_a_bad_deployment_file_is_one_line_and_exit_3(tmp_path, text, says):
    res = run(tmp_path, text)
    assert res.exit_code == 3
    assert says in res.output and len(res.output.strip().splitlines()) == 1


def test_a_missing_file_and_an_application_flag_are_one_line_too(tmp_path):
    res = CliRunner().invoke(main, ["plan", "--deployment", str(tmp_path / "nope.toml")])
    assert res.exit_code == 3 and "cannot read" in res.output
    res = run(tmp_path, DEPLOYMENT, "--pool-size", "5")
    assert res.exit_code == 3 and "--pool-size describes one application" in res.output
