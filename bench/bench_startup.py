"""Start-up cost of the CLI, as whole processes: `connguard --version`, `--help` and `status` against a local
throwaway server, each beside `python -c "import redis"` measured in the same run (the floor any command
that talks to a server pays), with ratios. `redis-cli INFO clients` (Debian's
redis-tools) is the non-Python reference. Also says, from `python -X importtime`, whether each one
imported redis-py, rich, the lab or the guard.

Run: PYTHONPATH=src python bench/bench_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from connguard.lab.servers import ServerProcess, default_binary

STATUS_BUDGET = 1.3  # issue 23: the whole `status` process within 1.3x of `python -c "import redis"`
HEAVY = ("redis", "rich", "connguard.lab", "connguard.guard")


# As installed: bytecode cached. redis-py comes with its .pyc from the wheel install; connguard run from a source
# tree under PYTHONDONTWRITEBYTECODE=1 would compile every module on every start, which no installed copy does.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, env=ENV)
        times.append(time.perf_counter() - start)
    return times


def imported(argv: list[str]) -> tuple[set[str], int]:
    """Top-level packages of HEAVY that the process imported, and how many modules in all."""
    out = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, env=ENV).stderr
    names = [line.rsplit("|", 1)[-1].strip() for line in out.splitlines() if line.startswith("import time:")]
    names = [n for n in names if n and n != "package"]
    heavy = {h for h in HEAVY for n in names if n == h or n.startswith(h + ".")}
    return heavy, len(names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    py = sys.executable
    server = ServerProcess(default_binary(), maxclients=100).start()
    try:
        cases = {
            'python -c "import redis"': [py, "-c", "import redis"],
            "connguard --version": [py, "-m", "connguard", "--version"],
            "connguard --help": [py, "-m", "connguard", "--help"],
            "connguard status URL": [py, "-m", "connguard", "status", server.url],
            'python -c "pass"': [py, "-c", "pass"],
        }
        redis_cli = shutil.which("redis-cli")
        if redis_cli:  # the reference a shell check would use (Debian's redis-tools): INFO clients, no Python
            cases["redis-cli INFO clients"] = [redis_cli, "-h", "127.0.0.1", "-p", str(server.port), "INFO", "clients"]
        for argv in cases.values():  # warm up: bytecode written, page cache filled
            timed(argv, 1)
        # Interleave the cases run by run, so a busy moment on a shared machine hits them all alike.
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, argv in cases.items():
                samples[name] += timed(argv, 1)
        baseline = statistics.median(samples['python -c "import redis"'])
        print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {server.binary.label}; "
              f"median of {args.runs} whole-process runs each, interleaved")
        status = statistics.median(samples["connguard status URL"]) / baseline
        print(f"status vs import redis: {status:.2f}x ({'within' if status <= STATUS_BUDGET else 'OVER'} the "
              f"{STATUS_BUDGET}x budget)")
        print(f"{'command':28} {'median':>9} {'p90':>9} {'vs import redis':>16}  imports")
        for name, argv in cases.items():
            times = sorted(samples[name])
            median, p90 = statistics.median(times), times[int(0.9 * (len(times) - 1))]
            if argv[0] == py:
                heavy, count = imported(argv)
                what = f"{count} modules; {', '.join(sorted(heavy)) or 'none of ' + '/'.join(HEAVY)}"
            else:
                what = "(not Python)"
            print(f"{name:28} {median * 1000:7.0f}ms {p90 * 1000:7.0f}ms {median / baseline:15.2f}x  {what}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
