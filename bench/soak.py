"""Soak under faults (issue 13 item 6): `watch --json` and the exporter, as real processes, against one server that
is filled to maxclients and released, restarted twice on the same port, and CLIENT KILLed (their own connections
too), then 50 concurrent scrapes of the exporter. Bounded: every phase has a fixed length and the run stops itself.

    python bench/soak.py                      # about 2.5 minutes; writes bench/results/soak.json
    python bench/soak.py --scale 0.2          # the short version tests/test_soak.py runs

What it measures, per process (watch, exporter): tracebacks on stderr; for each fault, the seconds from the end of
the fault (the server answers again, or the kill returned) to the first sample that observed the server; negative
or non-finite rates (watch's per-second rates; the exporter's counters and gauges); open fds (/proc/PID/fd) and
RSS (/proc/PID/status) after warm-up, after the faults, halfway through the scrapes and at the end; and for the
scrape phase, responses, incomplete ones, errors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from connguard.lab.servers import ServerProcess, default_binary, free_port, resp_command
from connguard.probe.sampler import BACKOFF_CAP_S

INTERVAL_S = 0.5  # watch's tick and the scraper's period
SCRAPERS = 50
MAXCLIENTS = 40
RSS_FILL_ALLOWANCE_KB = 6 * 1024  # the bounded window and forecast points filling up, not a leak


def proc_fds(pid: int, samples: int = 5) -> int:
    """Open fds of `pid`, the least of a few looks 0.2 s apart: a scrape in flight holds one for a moment."""
    seen = []
    for i in range(samples):
        seen.append(len(os.listdir(f"/proc/{pid}/fd")))
        if i + 1 < samples:
            time.sleep(0.2)
    return min(seen)


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Watcher:
    """`connguard watch --json` as a child process; every NDJSON line with the monotonic time it arrived."""

    url: str
    lines: list[tuple[float, dict]] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)

    def start(self) -> "Watcher":
        self.proc = subprocess.Popen([sys.executable, "-m", "connguard", "watch", self.url, "--json",
                                      "--interval", str(INTERVAL_S)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.append((time.monotonic(), json.loads(line)))
            except ValueError:
                self.bad_lines.append(line[:200])

    def observed_after(self, t: float) -> float | None:
        return next((at for at, obj in list(self.lines) if at >= t and obj.get("reachable")), None)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.reader.join(timeout=5)
        return err


@dataclass
class Exporter:
    """`connguard exporter --target URL` as a child process, and a scraper polling /metrics every INTERVAL_S."""

    url: str
    scrapes: list[tuple[float, bool, str]] = field(default_factory=list)  # (arrived, up, problem)

    def start(self) -> "Exporter":
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "connguard", "exporter", "--listen", f"127.0.0.1:{self.port}",
                                      "--target", self.url, "--connect-timeout", "2"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.get()
                break
            except OSError:
                time.sleep(0.1)
        self.stopping = threading.Event()
        self.poller = threading.Thread(target=self._poll, daemon=True)
        self.poller.start()
        return self

    def get(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as resp:
            body = resp.read().decode()
            length = resp.headers.get("Content-Length")
        if resp.status != 200 or (length is not None and int(length) != len(body.encode())) or not body.endswith("\n") \
                or "connguard_up " not in body:
            raise ValueError(f"incomplete page (status {resp.status}, {len(body)} bytes)")
        return body

    def _poll(self) -> None:
        while not self.stopping.wait(INTERVAL_S):
            try:
                body = self.get()
                self.scrapes.append((time.monotonic(), "\nconnguard_up 1.0" in body, problems(body)))
            except (OSError, ValueError) as exc:
                self.scrapes.append((time.monotonic(), False, f"scrape failed: {exc}"))

    def observed_after(self, t: float) -> float | None:
        return next((at for at, up, _ in list(self.scrapes) if at >= t and up), None)

    def stop(self) -> str:
        self.stopping.set()
        self.poller.join(timeout=40)
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def problems(body: str) -> str:
    """A non-finite value anywhere, or a negative counter or time-to-exhaustion: '' when there is none."""
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        v = float(value)
        # Documented non-finite values: a histogram's +Inf bucket bound, and seconds_to_exhaustion (+Inf when not
        # heading to full, NaN when unknown; docs/contract.md).
        if not math.isfinite(v) and "le=\"+Inf\"" not in name and not name.endswith("seconds_to_exhaustion"):
            return f"non-finite: {line}"
        if v < 0 and (name.split("{")[0].endswith(("_total", "_created", "seconds_to_exhaustion", "_count", "_sum"))):
            return f"negative: {line}"
    return ""


def fill(port: int, limit: int) -> list[socket.socket]:
    """Open connections until the server refuses one for maxclients (or `limit` are open)."""
    held: list[socket.socket] = []
    for _ in range(limit):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(resp_command("PING"))
        reply = sock.recv(128)
        if not reply.startswith(b"+PONG"):
            sock.close()
            break
        held.append(sock)
    return held


def client_kill_all(port: int) -> int:
    """CLIENT KILL every normal client but this one: watch's and the exporter's held connections go too."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(resp_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
        reply = sock.recv(64)
    return int(reply[1:].strip() or 0) if reply.startswith(b":") else -1


def concurrent_scrapes(exporter: Exporter, seconds: float, workers: int = SCRAPERS) -> dict[str, int]:
    stop_at = time.monotonic() + seconds
    counts = {"responses": 0, "incomplete": 0, "errors": 0}
    lock = threading.Lock()

    def worker() -> None:
        while time.monotonic() < stop_at:
            try:
                exporter.get()
                key = "responses"
            except ValueError:
                key = "incomplete"
            except OSError:
                key = "errors"
            with lock:
                counts[key] += 1

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for f in [pool.submit(worker) for _ in range(workers)]:
            f.result()
    return counts


def run_soak(scale: float = 1.0, binary_path: str | None = None, log=lambda *_: None, scrape_s: float | None = None) -> dict:
    """The whole soak; phase lengths are multiplied by `scale` (1.0: about 2.5 minutes; the scrape phase is 60 s,
    or `scrape_s`)."""
    binary = default_binary(binary_path)
    port = free_port()
    server = ServerProcess(binary, port=port, maxclients=MAXCLIENTS).start()
    url = f"redis://127.0.0.1:{port}"
    watcher = exporter = None
    faults: list[dict] = []
    result: dict = {"server": binary.label, "scale": scale, "interval_s": INTERVAL_S, "backoff_cap_s": BACKOFF_CAP_S}
    try:
        watcher, exporter = Watcher(url).start(), Exporter(url).start()
        # Warm-up, with a short burst of concurrent scrapes so the exporter's threads and arenas exist before the
        # baseline (a steady state is what "no growth" is measured against).
        time.sleep(max(2.0, 10 * scale))
        concurrent_scrapes(exporter, max(1.0, 5 * scale))
        time.sleep(1.0)
        base = {"watch": (proc_fds(watcher.proc.pid), proc_rss_kb(watcher.proc.pid)),
                "exporter": (proc_fds(exporter.proc.pid), proc_rss_kb(exporter.proc.pid))}
        log(f"warm: {base}")

        def fault(name: str, end: float) -> None:
            # Wait until both observed the server again (at most 10 s: far past any bound), then let it run steady.
            while time.monotonic() < end + 10 and (watcher.observed_after(end) is None
                                                   or exporter.observed_after(end) is None):
                time.sleep(0.1)
            time.sleep(max(1.0, 6 * scale))
            faults.append({"fault": name, "watch_resumed_s": _delay(watcher.observed_after(end), end),
                           "exporter_resumed_s": _delay(exporter.observed_after(end), end)})
            log(f"{name}: {faults[-1]}")

        for round_ in range(2):  # a fill and a restart, twice; a kill in between
            held = fill(port, MAXCLIENTS + 10)
            time.sleep(max(2.0, 10 * scale))
            for sock in held:
                sock.close()
            fault(f"fill {round_ + 1} ({len(held)} connections) released", time.monotonic())
            server.stop()
            time.sleep(max(1.0, 3 * scale))
            server = ServerProcess(binary, port=port, maxclients=MAXCLIENTS).start()
            fault(f"restart {round_ + 1}", time.monotonic())
            if round_ == 0:
                killed = client_kill_all(port)
                fault(f"CLIENT KILL ({killed} killed)", time.monotonic())
        def rss_now() -> dict[str, int]:
            return {"watch": proc_rss_kb(watcher.proc.pid), "exporter": proc_rss_kb(exporter.proc.pid)}

        after_faults = rss_now()
        # The concurrent scrapes in two halves: the first reaches this machine's peak of handler threads (and the
        # malloc arenas they create, which stay), so a leak per scrape is growth over the second half.
        scrape_s = scrape_s or max(3.0, 60 * scale)
        first = concurrent_scrapes(exporter, scrape_s / 2)
        scrape_mid = rss_now()
        second = concurrent_scrapes(exporter, scrape_s / 2)
        result["scrapes"] = {**{k: first[k] + second[k] for k in first}, "seconds": scrape_s, "workers": SCRAPERS}
        time.sleep(1.0)
        end = {"watch": (proc_fds(watcher.proc.pid), proc_rss_kb(watcher.proc.pid)),
               "exporter": (proc_fds(exporter.proc.pid), proc_rss_kb(exporter.proc.pid))}
        result["faults"] = faults
        result["fds"] = {k: {"after_warmup": base[k][0], "end": end[k][0]} for k in base}
        result["rss_kb"] = {k: {"after_warmup": base[k][1], "after_faults": after_faults[k],
                                "scrape_mid": scrape_mid[k], "end": end[k][1],
                                "growth": round(end[k][1] / base[k][1] - 1, 4)} for k in base}
    finally:
        errs = {"watch": watcher.stop() if watcher else "", "exporter": exporter.stop() if exporter else ""}
        server.stop()
    rates = [(k, obj.get(k)) for _, obj in watcher.lines for k in ("rejected_per_s", "connections_received_per_s")]
    result["watch"] = {"lines": len(watcher.lines), "unreachable_lines": sum(not o.get("reachable") for _, o in watcher.lines),
                       "bad_lines": len(watcher.bad_lines),
                       "negative_or_nonfinite_rates": sum(1 for _, v in rates if v is not None and not (math.isfinite(v) and v >= 0)),
                       "traceback": "Traceback" in errs["watch"], "stderr_tail": errs["watch"][-300:]}
    result["exporter"] = {"scrapes": len(exporter.scrapes), "down_scrapes": sum(not up for _, up, _ in exporter.scrapes),
                          "value_problems": [p for _, _, p in exporter.scrapes if p and not p.startswith("scrape failed")][:5],
                          "failed_scrapes": sum(p.startswith("scrape failed") for _, _, p in exporter.scrapes),
                          "traceback": "Traceback" in errs["exporter"], "stderr_tail": errs["exporter"][-300:]}
    return result


def _delay(at: float | None, since: float) -> float | None:
    return None if at is None else round(at - since, 2)


def check(result: dict, resume_bound_s: float) -> list[str]:
    """Every broken promise in `result`, as text ([] when the soak held)."""
    out = []
    for who in ("watch", "exporter"):
        if result[who]["traceback"]:
            out.append(f"{who}: a traceback on stderr: {result[who]['stderr_tail']}")
        fds = result["fds"][who]
        if fds["end"] > fds["after_warmup"]:
            out.append(f"{who}: fds grew {fds}")
        rss = result["rss_kb"][who]
        # Growth is a leak only where the same work repeats, past +10 % *and* past what the bounded window can take
        # to fill in a short run (Snapshots over 60 s, forecast points over 600 s: 6 MB). Across the faults
        # (fills, restarts, a kill) against the warm-up; across the scrapes, over their second half only: how much
        # RSS the first half adds follows how many handler threads the machine's scheduling let overlap.
        for phase, before, after in (("across the faults", "after_warmup", "after_faults"),
                                     ("over the second half of the concurrent scrapes", "scrape_mid", "end")):
            grown = rss[after] - rss[before]
            if grown > 0.10 * rss[before] and grown > RSS_FILL_ALLOWANCE_KB:
                out.append(f"{who}: RSS grew more than 10% and {RSS_FILL_ALLOWANCE_KB} kB {phase}: {rss}")
        for f in result["faults"]:
            took = f[f"{who}_resumed_s"]
            if took is None or took > resume_bound_s:
                out.append(f"{who}: after {f['fault']}, sampling resumed in {took} s (bound {resume_bound_s} s)")
    if result["watch"]["negative_or_nonfinite_rates"] or result["watch"]["bad_lines"]:
        out.append(f"watch: {result['watch']}")
    if result["exporter"]["value_problems"]:
        out.append(f"exporter: {result['exporter']['value_problems']}")
    s = result["scrapes"]
    if s["incomplete"] or s["errors"] or not s["responses"]:
        out.append(f"concurrent scrapes: {s}")
    return out


def resume_bound(slack_s: float) -> float:
    """A fault is over when the server answers (or the kill returned); the next tick is at most one interval away,
    a reconnect waits at most the backoff cap, and the scraper or watch line arrives an interval later."""
    return round(2 * INTERVAL_S + BACKOFF_CAP_S + slack_s, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--server-bin", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "soak.json"))
    args = parser.parse_args()
    started = time.monotonic()
    result = run_soak(args.scale, args.server_bin, log=lambda m: print(m, file=sys.stderr, flush=True))
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["resume_bound_s"] = resume_bound(2.0)
    result["broken"] = check(result, result["resume_bound_s"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 1 if result["broken"] else 0


if __name__ == "__main__":
    sys.exit(main())
