"""--alert-cmd: run the pager hook with the alert as JSON on stdin, in a thread, with a timeout.

Sampling never waits for the hook: events go into a bounded queue; when the hook is slower than the
alerts, the oldest waiting events are dropped and counted."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from dataclasses import dataclass

from connguard.analysis.alerts import AlertEvent
from connguard.contract import WATCH_ALERT_SCHEMA

ALERT_SCHEMA = WATCH_ALERT_SCHEMA
QUEUE_SIZE = 100


def event_payload(event: AlertEvent, target: str) -> dict[str, object]:
    """What the hook reads on stdin: {"schema", "event": start|change|clear, "target", "ts", "alert"}."""
    return {"schema": ALERT_SCHEMA, "event": event.kind, "target": target, "ts": round(event.at, 3),
            "alert": event.alert.to_dict(), "detail": event.alert.detail}


@dataclass
class HookResult:
    event: str
    name: str
    exit_code: int | None  # None: timed out or could not start
    error: str | None


class AlertHook:
    """One daemon thread runs `command` (through the shell, like cron) once per event, in order."""

    def __init__(self, command: str, target: str, *, timeout_s: float = 10.0) -> None:
        self.command, self.target, self.timeout_s = command, target, timeout_s
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.dropped = 0
        self.results: list[HookResult] = []
        self._thread = threading.Thread(target=self._run, name="connguard-alert-cmd", daemon=True)
        self._thread.start()

    def submit(self, event: AlertEvent) -> None:
        payload = json.dumps(event_payload(event, self.target))
        while True:
            try:
                self._queue.put_nowait((event, payload))
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            event, payload = item
            try:
                done = subprocess.run(self.command, shell=True, input=payload, text=True, timeout=self.timeout_s,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                result = HookResult(event.kind, event.alert.name, done.returncode, None)
            except subprocess.TimeoutExpired:
                result = HookResult(event.kind, event.alert.name, None, f"timed out after {self.timeout_s:g} s")
            except OSError as exc:
                result = HookResult(event.kind, event.alert.name, None, str(exc))
            self.results = (self.results + [result])[-20:]

    def last_problem(self) -> str | None:
        bad = [r for r in self.results if r.exit_code != 0]
        if not bad and not self.dropped:
            return None
        parts = []
        if bad:
            r = bad[-1]
            parts.append(f"--alert-cmd for {r.event} {r.name}: {r.error or f'exit {r.exit_code}'}")
        if self.dropped:
            parts.append(f"{self.dropped} alert event(s) dropped (the hook is slower than the alerts)")
        return "; ".join(parts)

    def close(self, wait_s: float = 2.0) -> None:
        """Let queued events go out for up to `wait_s`, then leave (the thread is a daemon)."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=wait_s)
