"""Capture real CLIENT LIST replies from real framework deployments, as testdata for the doctor's recognition.

    PYTHONPATH=src python tools/capture_framework_client_lists.py

Writes tests/testdata/frameworks/<redis-version>/<name>.txt, one raw CLIENT LIST reply each (the observer's
own line removed): a Celery prefork worker (concurrency 4, Redis broker and result backend) after tasks,
three producer processes that wait on results (as web processes calling AsyncResult.get() do), an RQ worker,
and Django's two caches under load."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from connguard.lab import framework_runs as fr
from connguard.lab.servers import ServerProcess, default_binary

HOLDING_PRODUCER = '''
import sys
from cgapp import add
r = add.delay(1, 2); r.get(timeout=60)   # the result consumer subscribes, and stays subscribed
print("held", flush=True); sys.stdin.readline()
'''


def raw_list(obs) -> str:  # type: ignore[no-untyped-def]
    """The raw reply, as the server wrote it (redis-py would parse it into dicts), without the observer."""
    from redis.connection import Connection

    me = obs.client_id()
    kw = obs.connection_pool.connection_kwargs
    conn = Connection(host=kw["host"], port=kw["port"])
    try:
        conn.send_command("CLIENT", "LIST")
        text = conn.read_response(disable_decoding=True).decode()
    finally:
        conn.disconnect()
    keep = [line for line in text.splitlines() if not line.startswith(f"id={me} ") and "cmd=client|list" not in line]
    return "".join(line + "\n" for line in keep)


def main() -> int:
    binary = default_binary()
    out = Path(__file__).resolve().parent.parent / "tests" / "testdata" / "frameworks" / binary.version
    out.mkdir(parents=True, exist_ok=True)
    with ServerProcess(binary, maxclients=1000) as server:
        dep = fr.CeleryDeployment(server.url, fr.CeleryConfig("prefork", 4, True))
        Path(dep.dir, "hold.py").write_text(textwrap.dedent(HOLDING_PRODUCER))
        obs = fr.observer(server.url)
        with dep.worker():
            fr.settle(obs, at_least=3, timeout_s=40)
            dep.produce(16)
            fr.settle(obs)
            (out / "celery_worker_prefork4.txt").write_text(raw_list(obs))
            holders = [subprocess.Popen([sys.executable, "hold.py"], cwd=dep.dir, env={**os.environ, **dep.env},
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(3)]
            for h in holders:
                h.stdout.readline()  # type: ignore[union-attr]
            fr.settle(obs)
            (out / "celery_worker_and_3_waiting_producers.txt").write_text(raw_list(obs))
            for h in holders:
                h.communicate("\n", timeout=30)
        dep.close()
        obs.close()
    with ServerProcess(binary, maxclients=1000) as server:  # the RQ worker, on a server of its own
        wd = tempfile.mkdtemp(prefix="connguard-rq-")
        Path(wd, "rqjobs.py").write_text(textwrap.dedent(fr.RQ_JOBS))
        obs = fr.observer(server.url)
        with fr.child([sys.executable, "-m", "rq.cli", "worker", "--url", server.url], wd,
                      {"PYTHONPATH": fr.with_path(wd)}):
            fr.settle(obs, at_least=2, timeout_s=40)
            (out / "rq_worker.txt").write_text(raw_list(obs))
        obs.close()
    print(f"wrote {sorted(p.name for p in out.iterdir())} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
