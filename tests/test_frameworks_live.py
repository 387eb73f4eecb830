"""Real frameworks against a real server, live: a representative subset of tools/measure_frameworks.py's
matrix (the full matrix is recorded in docs/frameworks-measured.json and checked offline by
test_frameworks_plan.py), each kept within 20% of `plan --deployment`; and the `celery` lab scenario, which
the doctor names as Celery's. About 40 s in all (worker start-up dominates)."""

from __future__ import annotations

import pytest

from connguard.lab import framework_runs as fr
from connguard.remedy.deployment import Component, per_instance

pytestmark = pytest.mark.slow
pytest.importorskip("celery")


def within_20_percent(component: Component, measured: int) -> None:
    planned = per_instance(component)[0]
    assert abs(planned - measured) <= 0.2 * measured, f"planned {planned}, measured {measured}"


@pytest.fixture
def url(default_binary, start_server) -> str:
    return start_server(default_binary, maxclients=500).url


def test_celery_threads_without_a_result_backend_hold_the_broker_connections_only(url):
    m = fr.measure_celery_worker(url, fr.CeleryConfig("threads", 4, result_backend=False), tasks=12)
    assert m.at_rest == m.after_load  # no result backend: running tasks opens nothing
    assert m.commands.get("brpop") == 1 and m.commands.get("psubscribe") == 2
    within_20_percent(Component("w", "celery", pool="threads", concurrency=4), m.after_load)


def test_gunicorn_workers_each_fill_their_redis_py_pool_up_to_their_threads(url):
    pytest.importorskip("gunicorn")
    m = fr.measure_gunicorn(url, fr.WebConfig(workers=2, threads=3, max_connections=10))
    assert m.at_rest == 0  # redis-py pools connect lazily
    within_20_percent(Component("web", "gunicorn", workers=2, threads=3, max_connections=10), m.after_load)


@pytest.mark.parametrize("backend", ["django", "django-redis"])
def test_django_caches_take_one_connection_per_busy_thread(url, backend):
    pytest.importorskip("django_redis")
    m = fr.measure_django_cache(url, fr.DjangoCacheConfig(backend, threads=5, max_connections=50))
    within_20_percent(Component("c", "django-cache", backend=backend, threads=5, max_connections=50), m.after_load)


def test_an_rq_worker_holds_two_connections(url):
    pytest.importorskip("rq")
    m = fr.measure_rq_worker(url, jobs=4)
    within_20_percent(Component("q", "rq"), m.after_load)


def test_the_celery_scenario_is_a_result_backend_pile_the_doctor_names_as_celery(default_binary):
    from connguard.analysis.diagnosis import DoctorSettings
    from connguard.doctor import run_doctor
    from connguard.lab.celery import CONCURRENCY
    from connguard.lab.scenarios import run_scenario
    from connguard.target import parse_target

    with run_scenario("celery", binary=default_binary, log=lambda line: None) as run:
        obs = fr.observer(run.url)
        held = len(fr.clients(obs))
        obs.close()
        diag = run_doctor(parse_target(run.url), DoctorSettings(interval_s=0.5), connect_timeout_s=20)
    within_20_percent(Component("w", "celery", pool="prefork", concurrency=CONCURRENCY, result_backend="redis"), held)
    named = diag.finding("framework_connections")
    assert named is not None and named.severity == "info", (diag.reachable, diag.error, diag.causes, held,
                                                            [s.to_dict() for s in diag.sources or ()])
    roles = {(r["framework"], r["role"]): r for r in named.evidence["recognized"]}
    assert abs(roles[("celery", "result-backend")]["connections"] - CONCURRENCY) <= 0.2 * CONCURRENCY
    assert "Celery's Redis result backend" in roles[("celery", "result-backend")]["summary"]
    assert ("celery", "worker") in roles
    src = next(s for s in diag.sources if s.host == "127.0.0.1")
    assert "celery result-backend" in src.frameworks
    # advisory: recognition adds no kill candidates and no finding beyond info
    assert all(f.severity == "info" or f.cause != "framework_connections" for f in diag.findings)


def test_without_celery_the_scenario_says_how_to_install_it_and_exits_3(tmp_path):
    import os
    import subprocess
    import sys

    # a `celery` package that cannot be imported stands for a missing one, in a child process
    (tmp_path / "celery.py").write_text("raise ImportError('not installed')\n")
    shadow = "import importlib.util, sys; real = importlib.util.find_spec\n" \
             "importlib.util.find_spec = lambda n, *a: None if n == 'celery' else real(n, *a)\n" \
             "from connguard.cli import main; sys.argv = ['connguard', 'lab', 'scenario', 'celery']; main()\n"
    done = subprocess.run([sys.executable, "-c", shadow], capture_output=True, text=True, timeout=60,
                          env={**os.environ})
    assert done.returncode == 3
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "pip install 'connguard[frameworks]'" in lines[0] and "celery" in lines[0]
