"""Measure the connections real frameworks hold against a real server, for `plan --deployment`.

    PYTHONPATH=src python tools/measure_frameworks.py [--only celery,rq,...]

Runs each configuration against a fresh Redis (one server per configuration, so nothing carries over),
writes docs/frameworks-measured.json (read by tests/test_frameworks_plan.py) and prints the Markdown table
for docs/frameworks.md. Takes a few minutes; every process it starts is stopped by its own process group."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

from connguard.lab import framework_runs as fr
from connguard.lab.servers import ServerProcess, default_binary

OUT = Path(__file__).resolve().parent.parent / "docs" / "frameworks-measured.json"


def matrix() -> list[tuple[str, object]]:
    runs: list[tuple[str, object]] = []
    for backend in (True, False):
        for pool in ("prefork", "threads"):
            for c in (1, 4, 16):
                runs.append(("celery", fr.CeleryConfig(pool, c, backend)))
        runs.append(("celery", fr.CeleryConfig("solo", 1, backend)))
    runs.append(("celery", fr.CeleryConfig("prefork", 8, True)))
    runs.append(("celery", fr.CeleryConfig("threads", 8, True, redis_max_connections=4)))
    runs.append(("celery", fr.CeleryConfig("prefork", 4, True, broker_pool_limit=2)))
    runs += [("celery-client", (True, True)), ("celery-client", (False, True)), ("celery-client", (False, False))]
    runs += [("celery-beat", True), ("celery-beat", False), ("flower", True), ("flower", False)]
    runs += [("gunicorn", fr.WebConfig(1, 1, 10)), ("gunicorn", fr.WebConfig(2, 4, 10)),
             ("gunicorn", fr.WebConfig(4, 8, 4))]
    for backend in ("django", "django-redis"):
        runs += [("django-cache", fr.DjangoCacheConfig(backend, 1, 50)),
                 ("django-cache", fr.DjangoCacheConfig(backend, 8, 50))]
    runs.append(("rq", None))
    return runs


def run_one(url: str, kind: str, cfg: object) -> fr.Measurement:
    if kind == "celery":
        return fr.measure_celery_worker(url, cfg)  # type: ignore[arg-type]
    if kind == "celery-beat":
        return fr.measure_celery_sidecar(url, "beat", bool(cfg))
    if kind == "flower":
        return fr.measure_celery_sidecar(url, "flower", bool(cfg))  # kind "flower"
    if kind == "celery-client":
        wait, backend = cfg  # type: ignore[misc]
        return fr.measure_celery_client(url, wait, backend)
    if kind == "gunicorn":
        return fr.measure_gunicorn(url, cfg)  # type: ignore[arg-type]
    if kind == "django-cache":
        return fr.measure_django_cache(url, cfg)  # type: ignore[arg-type]
    return fr.measure_rq_worker(url)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("celery", "kombu", "redis", "django", "django-redis", "rq", "gunicorn", "flower"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| kind | configuration | at rest | after load | commands after load |", "|---|---|---:|---:|---|"]
    for r in rows:
        cfg = ", ".join(f"{k}={v}" for k, v in r["config"].items() if v is not None)  # type: ignore[union-attr]
        mix = ", ".join(f"{k} {v}" for k, v in r["commands"].items())  # type: ignore[union-attr]
        lines.append(f"| {r['kind']} | {cfg} | {r['at_rest']} | {r['after_load']} | {mix} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated kinds")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    binary = default_binary()
    rows: list[dict[str, object]] = []
    started = time.monotonic()
    for kind, cfg in matrix():
        if only and kind not in only:
            continue
        with ServerProcess(binary, maxclients=2000) as server:
            m = run_one(server.url, kind, cfg)
        rows.append(asdict(m))
        print(f"{m.kind:13} {m.config} rest={m.at_rest} after={m.after_load} {m.commands}", flush=True)
    if only and Path(args.out).exists():  # a partial run replaces only its kinds' rows in the recorded table
        kept = [r for r in json.loads(Path(args.out).read_text())["measurements"] if r["kind"] not in only]
        rows = kept + rows
    doc = {"server": binary.label, "versions": versions(), "machine": f"{platform.machine()}, "
           f"{__import__('os').cpu_count()} cores (shared)", "seconds": round(time.monotonic() - started),
           "measurements": rows}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
