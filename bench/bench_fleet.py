"""Time `doctor` over a fleet of 100 local lab servers: the fleet fan-out against a sequential loop, and windows.

In one run, on the same servers:
  0. the default window (two samples an --interval apart), in process at the default concurrency (16): one target
     against all of them, interleaved rounds. Windows overlap (a target's wait holds no worker), so the ratio is
     near 1; the issue's budget is 1.5x.
  1. in process, interleaved rounds: a sequential loop of `run_doctor(target, once=True)` against
     `run_fleet("doctor", ...)` (the fan-out behind `connguard fleet doctor`) at --concurrency 16 (the default)
     and 64;
  2. end to end, once each: `connguard fleet doctor --once --fleet FILE --json` as one process against the loop
     people write today, `for url in ...; do connguard doctor --once "$url"; done`.
Every server holds a few idle clients (so CLIENT LIST has lines to parse); all are stopped by PID at the end.

    python bench/bench_fleet.py [--servers 100] [--clients 20] [--rounds 3] [--interval 5] [--server-bin PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from connguard.analysis.diagnosis import DoctorSettings
from connguard.commands.fleet import FleetRequest, doctor_observer, run_fleet
from connguard.doctor import run_doctor
from connguard.lab.servers import ServerProcess, default_binary
from connguard.target import parse_target


def start_servers(n: int, binary_path: str | None) -> list[ServerProcess]:
    binary = default_binary(binary_path)
    # Started from the main thread on purpose: lab servers die with the thread that forked them
    # (PR_SET_PDEATHSIG follows the parent thread), so a pool's worker threads would take them down.
    servers: list[ServerProcess] = []
    try:
        for _ in range(n):
            servers.append(ServerProcess(binary, maxclients=200).start())
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


CROWD_CHILD = """
import sys
from connguard.lab.crowd import Crowd
crowds = []
for i, port in enumerate(sys.argv[2:]):
    crowd = Crowd("127.0.0.1", int(port))
    crowd.open(int(sys.argv[1]), source=f"127.0.{20 + i % 50}.1")
    crowds.append(crowd)
print("ready", flush=True)
sys.stdin.read()  # hold them until the benchmark closes our stdin
for crowd in crowds:
    crowd.close()
"""


def hold_clients(servers: list[ServerProcess], per_server: int) -> subprocess.Popen[str]:
    """The idle clients live in a child process: 2,000 sockets here would push the doctor's own sockets past
    fd 1024, where select() cannot go, and change what is being measured."""
    child = subprocess.Popen([sys.executable, "-c", CROWD_CHILD, str(per_server), *(str(s.port) for s in servers)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def sequential(urls: list[str], settings: DoctorSettings) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    statuses = [run_doctor(parse_target(u), settings, once=True, connect_timeout_s=5).status for u in urls]
    return time.perf_counter() - t0, statuses


def fleet(path: str, settings: DoctorSettings, concurrency: int, once: bool = True) -> tuple[float, dict]:
    request = FleetRequest(None, path, concurrency=concurrency, connect_timeout_s=5)
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        run_fleet("doctor", request, doctor_observer(settings, once=once, connect_timeout_s=5), as_json=True)
    return time.perf_counter() - t0, json.loads(out.getvalue())


WINDOW_BUDGET = 1.5  # issue 23: N targets with the default window within 1.5x the time of one


def windows(path_one: str, path_all: str, n: int, settings: DoctorSettings, rounds: int) -> None:
    one, many = [], []
    for r in range(rounds):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            elapsed, out = fleet(path_one if which == 0 else path_all, settings, 16, once=False)
            assert out["summary"]["by_status"].get("ok", 0) == (1 if which == 0 else n), out["summary"]
            (one if which == 0 else many).append(elapsed)
    a, b = statistics.median(one), statistics.median(many)
    print(f"default window ({settings.interval_s:g}s interval, 2 samples), concurrency 16, median of {rounds} rounds:")
    print(f"  1 target    : {a:7.2f} s")
    print(f"  {n} targets : {b:7.2f} s  -> {b / a:.2f}x one target "
          f"({'within' if b / a <= WINDOW_BUDGET else 'OVER'} the {WINDOW_BUDGET}x budget)")


def cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connguard", *args], capture_output=True, text=True, timeout=600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=100)
    ap.add_argument("--clients", type=int, default=20, help="idle clients per server")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--server-bin")
    ap.add_argument("--skip-cli", action="store_true", help="only the in-process comparison")
    ap.add_argument("--interval", type=float, default=None, help="window interval (default: the doctor's own)")
    ap.add_argument("--windows-only", action="store_true", help="only the default-window comparison (step 0)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    servers = start_servers(args.servers, args.server_bin)
    crowd: subprocess.Popen[str] | None = None
    workdir = tempfile.mkdtemp(prefix="connguard-bench-fleet-")
    path = os.path.join(workdir, "fleet.txt")
    try:
        crowd = hold_clients(servers, args.clients)
        urls = [s.url for s in servers]
        with open(path, "w") as fh:
            fh.write("\n".join(urls) + "\n")
        print(f"{args.servers} servers ({servers[0].binary.label}), {args.clients} idle clients each, "
              f"started in {time.perf_counter() - t0:.1f}s; nproc {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
        settings = DoctorSettings() if args.interval is None else DoctorSettings(interval_s=args.interval)
        path_one = os.path.join(workdir, "one.txt")
        with open(path_one, "w") as fh:
            fh.write(urls[0] + "\n")
        windows(path_one, path, len(urls), settings, args.rounds)
        if args.windows_only:
            return
        seq_times, fan16, fan64 = [], [], []
        for r in range(args.rounds):
            order = [0, 1, 2] if r % 2 == 0 else [2, 1, 0]
            for which in order:
                if which == 0:
                    elapsed, statuses = sequential(urls, settings)
                    assert statuses.count("ok") == len(urls), statuses
                    seq_times.append(elapsed)
                else:
                    conc = 16 if which == 1 else 64
                    elapsed, out = fleet(path, settings, conc)
                    assert out["summary"]["by_status"]["ok"] == len(urls), out["summary"]
                    (fan16 if conc == 16 else fan64).append(elapsed)
        seq, f16, f64 = (statistics.median(x) for x in (seq_times, fan16, fan64))
        print(f"in process, median of {args.rounds} interleaved rounds:")
        print(f"  sequential run_doctor loop : {seq:7.3f} s  ({seq / len(urls) * 1000:.1f} ms per server)")
        print(f"  fleet, concurrency 16      : {f16:7.3f} s  -> {seq / f16:5.1f}x faster")
        print(f"  fleet, concurrency 64      : {f64:7.3f} s  -> {seq / f64:5.1f}x faster")
        if not args.skip_cli:
            t = time.perf_counter()
            proc = cli(["fleet", "doctor", "--once", "--json", "--fleet", path])
            fleet_cli = time.perf_counter() - t
            assert proc.returncode == 0, proc.stderr
            t = time.perf_counter()
            for url in urls:
                assert cli(["doctor", "--once", url]).returncode == 0
            loop_cli = time.perf_counter() - t
            print("end to end (processes):")
            print(f"  for url: connguard doctor --once $url : {loop_cli:7.2f} s")
            print(f"  connguard fleet doctor --once --fleet  : {fleet_cli:7.2f} s  -> {loop_cli / fleet_cli:5.1f}x faster")
    finally:
        if crowd is not None:
            crowd.communicate("", timeout=60)
        for s in servers:
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
