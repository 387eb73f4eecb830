"""The doctor names framework connections from real CLIENT LIST captures (tools/capture_framework_client_lists.py):
a Celery prefork worker and its result-backend children, callers waiting on results, an RQ worker."""

from __future__ import annotations

from pathlib import Path

from connguard.analysis.frameworks import labels, recognize
from connguard.probe.client_list import parse_client_list

DATA = Path(__file__).resolve().parent / "testdata" / "frameworks" / "7.0.15"


def records(name: str, host: str | None = None):
    text = (DATA / name).read_text()
    if host:
        text = text.replace("addr=127.0.0.1:", f"addr={host}:")  # the same capture, as seen from another host
    return parse_client_list(text).records()


def test_a_celery_prefork_worker_with_a_result_backend_is_named_with_one_store_per_child():
    found = {(x.framework, x.role): x for x in recognize(records("celery_worker_prefork4.txt", "127.0.0.13"))}
    worker, backend = found[("celery", "worker")], found[("celery", "result-backend")]
    assert worker.connections == 9 and "BRPOP 1" in worker.evidence and "PSUBSCRIBE 2" in worker.evidence
    assert backend.connections == 4  # concurrency 4: one per prefork child
    assert backend.line.startswith("127.0.0.13: 4 connections look like Celery's Redis result backend")
    assert "each prefork child" in backend.line and "redis_max_connections" in backend.line


def test_a_worker_caught_between_two_polls_is_still_named():
    """kombu's BRPOP returns every brpop_timeout (1 s) and is sent again; a loaded machine's CLIENT LIST once read
    it in between (`flags=N cmd=brpop`), and the whole Celery finding was gone. RQ's pop, the same while a job runs."""
    def unblocked(name: str, cmd: str) -> list:
        text = "".join(line.replace(" flags=b ", " flags=N ") + "\n" if f" cmd={cmd} " in line else line + "\n"
                       for line in (DATA / name).read_text().splitlines())
        assert " flags=b " not in text
        return parse_client_list(text).records()

    celery = {(x.framework, x.role): x.connections for x in recognize(unblocked("celery_worker_prefork4.txt", "brpop"))}
    assert celery == {("celery", "worker"): 9, ("celery", "result-backend"): 4}
    rq = [(x.framework, x.role, x.connections) for x in recognize(unblocked("rq_worker.txt", "blmove"))]
    assert rq == [("rq", "worker", 2)]


def test_callers_waiting_on_results_are_result_consumers_not_workers():
    worker = records("celery_worker_prefork4.txt", "127.0.0.13")
    both = records("celery_worker_and_3_waiting_producers.txt")
    callers = [r for r in both if r.id not in {w.id for w in worker}]
    web = parse_client_list("".join(
        line.replace("addr=127.0.0.1:", "addr=127.0.0.20:") + "\n"
        for line in (DATA / "celery_worker_and_3_waiting_producers.txt").read_text().splitlines()
        if int(line.split()[0][3:]) in {r.id for r in callers})).records()
    found = recognize(web)
    assert [(x.host, x.framework, x.role, x.connections) for x in found] == [("127.0.0.20", "celery", "result-consumer", 3)]  # one per waiting process
    assert "AsyncResult.get()" in found[0].line


def test_an_rq_worker_is_named_by_its_blocking_pop_and_its_named_command_channel():
    found = recognize(records("rq_worker.txt", "127.0.0.7"))
    assert [(x.framework, x.role, x.connections) for x in found] == [("rq", "worker", 2)]
    assert "BLMOVE 1" in found[0].evidence


def test_plain_redis_py_and_raw_clients_are_not_named():
    plain = [r for r in records("celery_worker_prefork4.txt") if r.cmd in ("exec", "ping", "get")]
    assert recognize(plain) == () and labels(plain) == ()


def test_sources_carry_the_names_and_json_shows_them():
    from connguard.analysis.sources import summarize

    src = summarize("127.0.0.13", records("celery_worker_prefork4.txt", "127.0.0.13"), 300)
    assert src.frameworks == ("celery worker", "celery result-backend")
    assert src.to_dict()["frameworks"] == ["celery worker", "celery result-backend"]
