"""Usage shapes on a real server, as recordings: the forecast's test data (tests/testdata/windows/*.jsonl).

Each shape drives a Crowd against its own throwaway server (maxclients 300) while a Sampler observes it and
a Recorder writes every Observation (INFO only: CLIENT LIST is not what the forecast reads, and would make
the files megabytes). Re-record all of them (about 5 minutes, in parallel) with

    PYTHONPATH=src python tests/window_traces.py tests/testdata/windows

The live test (tests/test_forecast_live.py) runs short versions of the same shapes through `watch`'s
model and the exporter's target state.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from connguard.lab.crowd import ClientGroup, Crowd
from connguard.lab.servers import ServerProcess, default_binary
from connguard.probe.recording import Recorder
from connguard.probe.sampler import Observation, Sampler
from connguard.target import parse_target

MAXCLIENTS = 300
SOURCE = "127.0.0.2"


@dataclass
class Lab:
    """One server, its crowd, and the groups opened so far (closing a group releases its connections)."""

    server: ServerProcess
    crowd: Crowd
    groups: list[ClientGroup]

    def open(self, n: int) -> None:
        if n > 0:
            self.groups.append(self.crowd.open(n, source=SOURCE, name="leaky"))

    def release(self, keep: int) -> None:
        """Close whole groups, newest first, until at most `keep` connections remain."""
        while self.groups and sum(len(g.sockets) for g in self.groups) > keep:
            self.crowd.close_group(self.groups.pop())

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server (its clients die with it), optionally stay down, start it again on the same port."""
        port = self.server.port
        self.crowd.close()
        self.groups.clear()
        self.server.stop()
        time.sleep(down_s)
        self.server = ServerProcess(self.server.binary, port=port, maxclients=MAXCLIENTS).start()
        self.crowd = Crowd("127.0.0.1", port)


def ramp(lab: Lab, per_s: float, seconds: float, tick_s: float = 0.5) -> None:
    """Open connections at `per_s` for `seconds`, a few every `tick_s`."""
    opened, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        lab.open(int(per_s * elapsed) - opened)
        opened = max(opened, int(per_s * elapsed))
        time.sleep(tick_s)


def fall(lab: Lab, per_s: float, seconds: float, tick_s: float = 0.5) -> None:
    start = time.monotonic()
    top = sum(len(g.sockets) for g in lab.groups)
    while (elapsed := time.monotonic() - start) < seconds:
        lab.release(max(0, int(top - per_s * elapsed)))
        time.sleep(tick_s)


def steady_leak(lab: Lab) -> None:  # 2/s from 0 for 100 s: full at 150 s
    ramp(lab, 2.0, 100)


def plateau(lab: Lab) -> None:  # 2/s for 60 s, then flat at ~120 for 90 s
    ramp(lab, 2.0, 60)
    time.sleep(90)


def release(lab: Lab) -> None:  # 3/s for 80 s (~240), then 210 released at once, 30 s after
    ramp(lab, 3.0, 80)
    lab.release(30)
    time.sleep(30)


def sawtooth(lab: Lab) -> None:  # 0 -> 200 -> 0 every 100 s, three times (peak 67 %)
    for _ in range(3):
        ramp(lab, 4.0, 50)
        fall(lab, 4.0, 50)
        lab.release(0)


def step(lab: Lab) -> None:  # 20 for 30 s, +100 at once, flat for 60 s
    lab.open(20)
    time.sleep(30)
    lab.open(100)
    time.sleep(60)


def restart(lab: Lab) -> None:  # 2/s for 40 s, a restart, 2/s for 40 s
    ramp(lab, 2.0, 40)
    lab.restart()
    ramp(lab, 2.0, 40)


def server_down(lab: Lab) -> None:  # 2/s for 30 s, down for 15 s, back (empty) and 2/s for 20 s
    ramp(lab, 2.0, 30)
    lab.restart(down_s=15)
    ramp(lab, 2.0, 20)


SHAPES: dict[str, tuple[Callable[[Lab], None], float]] = {  # name -> (driver, seconds between observations)
    "steady_leak": (steady_leak, 1.0), "plateau": (plateau, 1.0), "release": (release, 1.0),
    "sawtooth": (sawtooth, 2.0), "step": (step, 1.0), "restart": (restart, 1.0), "server_down": (server_down, 1.0),
}


def record(name: str, out: Path) -> int:
    """Run one shape on a fresh server, recording every Observation; returns how many were written."""
    drive, every_s = SHAPES[name]
    server = ServerProcess(default_binary(), maxclients=MAXCLIENTS).start()
    lab = Lab(server, Crowd("127.0.0.1", server.port), [])
    target = parse_target(server.url, env={})
    done = threading.Event()
    observations: list[Observation] = []

    def observe() -> None:
        with Sampler(target, connect_timeout_s=1.0, reconnect_timeout_s=0.3) as sampler, \
                Recorder(out / f"{name}.jsonl", target=target, tool="trace",
                         settings={"shape": name, "interval_s": every_s, "maxclients": MAXCLIENTS}) as rec:
            while not done.is_set():
                obs = sampler.sample(client_list=False)
                rec.write(obs)
                observations.append(obs)
                time.sleep(every_s)

    watcher = threading.Thread(target=observe, daemon=True)
    watcher.start()
    try:
        time.sleep(3 * every_s)  # a few ticks of the empty server first
        drive(lab)
    finally:
        done.set()
        watcher.join(10)
        lab.crowd.close()
        lab.server.stop()
    return len(observations)


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else "tests/testdata/windows")
    out.mkdir(parents=True, exist_ok=True)
    names = argv[2:] or list(SHAPES)
    for name in names:
        (out / f"{name}.jsonl").unlink(missing_ok=True)
    threads = [threading.Thread(target=lambda n=n: print(n, record(n, out), flush=True)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
