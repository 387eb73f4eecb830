"""Time `connguard doctor --once` against a server holding 10,000 (or 50,000) client connections.

Prints: the in-process time (connect, INFO, CONFIG GET, CLIENT LIST, parse, diagnose), the end-to-end
time of `python -m connguard doctor --once --json` as a subprocess with its client CPU (user + sys) and
peak RSS (from wait4), the CLIENT LIST calls the doctor made (one per snapshot), and the server-side time
of each CLIENT LIST read from SLOWLOG and INFO commandstats (slowlog-log-slower-than 0 on the server).

    python bench/bench_doctor.py [--clients 10000] [--runs 3] [--server-bin PATH]
    python bench/bench_doctor.py --clients 50000      # as root: raises this process's fd limit to fit

Budgets: <= 1 s wall up to 10,000 clients; <= 3 s wall and <= 250 MB peak RSS at 50,000 (issue #12).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import tempfile
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

from connguard.analysis.diagnosis import DoctorSettings
from connguard.doctor import run_doctor
from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerProcess, default_binary
from connguard.target import parse_target


MAX_CLIENTS = 60_000  # bounded: the bench never opens more than this


FD_SPARE = 600  # descriptors kept free in this process and the server beyond the clients


def raise_nofile(need: int) -> int:
    """Room for up to `need` descriptors in this process (raising the hard limit too, where allowed: root
    with CAP_SYS_RESOURCE); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(need, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_RENUMBER = re.compile(r"^id=\d+ addr=([^ ]+):\d+ (.*?)fd=\d+ ")


def grow_reply(reply: str, lines: int, own_id: int) -> str:
    """A real CLIENT LIST grown to `lines` lines: its client lines repeated with fresh id, fd and client
    port (ids stay below `own_id`'s range clash by starting past it); our own line kept once, at the end."""
    real = [ln for ln in reply.splitlines() if ln and not ln.startswith(f"id={own_id} ")]
    own = next(ln for ln in reply.splitlines() if ln.startswith(f"id={own_id} "))
    out = []
    for n in range(lines - 1):
        m = _RENUMBER.match(real[n % len(real)])
        line = real[n % len(real)]
        if m:
            line = f"id={own_id + 1 + n} addr={m.group(1)}:{10000 + n % 50000} {m.group(2)}fd={n + 8} " + line[m.end():]
        out.append(line)
    return "\n".join(out + [own]) + "\n"


def replayed_at(recording: Path, clients: int, out: Path) -> None:
    """Rewrite a one-observation recording of the live server as if it held `clients` connections: the real
    CLIENT LIST grown line by line, INFO's connected_clients and maxclients to match."""
    header, obs = [json.loads(ln) for ln in recording.read_text().splitlines() if ln.strip()][:2]
    raw = obs["raw"]
    raw["client_list"] = grow_reply(raw["client_list"], clients, obs["own_client_id"])
    raw["info_all"] = re.sub(r"connected_clients:\d+", f"connected_clients:{clients}", raw["info_all"])
    raw["info_all"] = re.sub(r"maxclients:\d+", f"maxclients:{clients + 100}", raw["info_all"])
    raw["config_maxclients"] = clients + 100
    out.write_text(json.dumps(header) + "\n" + json.dumps(obs) + "\n")


def run_measured(argv: list[str]) -> tuple[float, float, int, int]:
    """(wall s, client CPU s, peak RSS in MB, exit code) of one child process, from wait4."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024, proc.returncode


def client_list_stats(admin: redis.Redis) -> tuple[int, float]:
    """(calls, usec per call) of CLIENT LIST from INFO commandstats."""
    stats = admin.info("commandstats")
    entry = stats.get("cmdstat_client|list") or {}
    return int(entry.get("calls", 0)), float(entry.get("usec_per_call", 0.0))


def open_crowd(port: int, clients: int) -> Crowd:
    crowd = Crowd("127.0.0.1", port)
    per_source = 1000
    for i in range(0, clients, per_source):
        n = min(per_source, clients - i)
        crowd.open(n, source=f"127.0.{10 + i // per_source}.1", name=f"app-{i // per_source}")
    return crowd


def client_list_server_times(admin: redis.Redis) -> list[float]:
    """Server time (ms) of every CLIENT LIST in the slowlog, oldest first."""
    entries = admin.slowlog_get(1024)
    return [e["duration"] / 1000 for e in reversed(entries)
            if [a.decode().lower() if isinstance(a, bytes) else str(a).lower() for a in e["command"].split()[:2]]
            == ["client", "list"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-bin")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 1 <= args.runs <= 10:
        parser.error(f"--clients 1..{MAX_CLIENTS}, --runs 1..10")
    limit = raise_nofile(args.clients + 2 * FD_SPARE)
    live = min(args.clients, limit - 2 * FD_SPARE)  # what this machine's fd limit lets us hold for real
    binary = default_binary(args.server_bin)
    nofile = live + FD_SPARE if live > 9000 else None
    wanted, args.clients = args.clients, live
    if live < wanted:
        print(f"fd limit {limit}: {live} live clients, then a recording of them grown to {wanted} and replayed")
    with ServerProcess(binary, maxclients=args.clients + 100, nofile=nofile) as server:
        admin = redis.Redis(port=server.port)
        admin.config_set("slowlog-log-slower-than", 0)
        admin.config_set("slowlog-max-len", 1024)
        t0 = time.perf_counter()
        crowd = open_crowd(server.port, args.clients)
        opened = time.perf_counter() - t0
        try:
            print(f"server: {binary.label}; {crowd.connected} client connections opened in {opened:.1f}s")
            target = parse_target(server.url)
            settings = DoctorSettings(interval_s=0)
            admin.slowlog_reset()
            inproc = []
            for _ in range(args.runs):
                t = time.perf_counter()
                diag = run_doctor(target, settings, once=True)
                inproc.append(time.perf_counter() - t)
            print(f"in-process run_doctor --once: median {statistics.median(inproc) * 1000:.0f} ms, "
                  f"max {max(inproc) * 1000:.0f} ms over {args.runs} runs "
                  f"(status {diag.status}, {sum(s.connections for s in diag.sources or ())} clients in top sources)")
            e2e = []
            cpu: list[float] = []
            rss: list[int] = []
            calls_before, _ = client_list_stats(admin)
            for _ in range(args.runs):
                wall, used_cpu, peak, code = run_measured(
                    [sys.executable, "-m", "connguard", "doctor", server.url, "--once", "--json"])
                e2e.append(wall)
                cpu.append(used_cpu)
                rss.append(peak)
            calls_after, usec = client_list_stats(admin)
            print(f"subprocess `connguard doctor --once --json`: median {statistics.median(e2e) * 1000:.0f} ms, "
                  f"max {max(e2e) * 1000:.0f} ms (exit {code}); client CPU median "
                  f"{statistics.median(cpu) * 1000:.0f} ms; peak RSS max {max(rss)} MB; CLIENT LIST calls per "
                  f"run {(calls_after - calls_before) / args.runs:g} (commandstats: {usec / 1000:.1f} ms per call)")
            text = []
            for _ in range(args.runs):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "connguard", "doctor", server.url, "--once"],
                               capture_output=True, text=True, timeout=60)
                text.append(time.perf_counter() - t)
            print(f"subprocess `connguard doctor --once` (rich text): median {statistics.median(text) * 1000:.0f} ms, "
                  f"max {max(text) * 1000:.0f} ms")
            e2e += text
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import connguard.cli"], check=True)
            print(f"  of which Python start + imports: {(time.perf_counter() - t) * 1000:.0f} ms")
            server_ms = client_list_server_times(admin)
            if server_ms:
                print(f"server time of CLIENT LIST (SLOWLOG): median {statistics.median(server_ms):.1f} ms, "
                      f"max {max(server_ms):.1f} ms over {len(server_ms)} calls")
            if wanted > live:
                grown = replay_leg(server.url, wanted, args.runs)
                e2e, rss, args.clients = grown[0], grown[1], wanted
                per_call = statistics.median(server_ms) if server_ms else 0.0
                print(f"server time of CLIENT LIST at {wanted} clients: about {per_call * wanted / live:.0f} ms "
                      f"(SLOWLOG {per_call:.1f} ms at {live}, scaled linearly: the server walks its client list)")
            wall_budget = 1.0 if args.clients <= 10_000 else 3.0
            ok = max(e2e) <= wall_budget and (args.clients <= 10_000 or max(rss) <= 250)
            print(f"budget: doctor --once <= {wall_budget:g} s wall"
                  f"{' and <= 250 MB peak RSS' if args.clients > 10_000 else ''} at {args.clients} clients: "
                  f"{'PASS' if ok else 'FAIL'}")
            return 0 if ok else 1
        finally:
            crowd.close()
            admin.close()


def replay_leg(url: str, clients: int, runs: int) -> tuple[list[float], list[int]]:
    """Record one observation of the live server, grow it to `clients`, time `doctor --replay` on it."""
    with tempfile.TemporaryDirectory(prefix="connguard-bench-") as tmp:
        live_rec, grown = Path(tmp) / "live.jsonl", Path(tmp) / "grown.jsonl"
        subprocess.run([sys.executable, "-m", "connguard", "doctor", url, "--once", "--record", str(live_rec),
                        "--json"], capture_output=True, timeout=120)
        replayed_at(live_rec, clients, grown)
        e2e, cpu, rss = [], [], []
        for _ in range(runs):
            wall, used_cpu, peak, code = run_measured(
                [sys.executable, "-m", "connguard", "doctor", "--replay", str(grown), "--json"])
            e2e.append(wall)
            cpu.append(used_cpu)
            rss.append(peak)
        size = grown.stat().st_size / 2 ** 20
    print(f"replayed at {clients} clients (`connguard doctor --replay`, {size:.0f} MB recording, one CLIENT LIST "
          f"reply): median {statistics.median(e2e) * 1000:.0f} ms, max {max(e2e) * 1000:.0f} ms (exit {code}); "
          f"client CPU median {statistics.median(cpu) * 1000:.0f} ms; peak RSS max {max(rss)} MB")
    return e2e, rss


if __name__ == "__main__":
    sys.exit(main())
