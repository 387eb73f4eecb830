"""Keys for the interactive view: stdin in cbreak mode (Ctrl-C still interrupts), read by a daemon thread.

The terminal's settings are saved on start and put back by `close()`, whatever happened."""

from __future__ import annotations

import os
import queue
import select
import sys
import termios
import threading
import tty

ARROWS = {"\x1b[A": "up", "\x1b[B": "down", "\x1bOA": "up", "\x1bOB": "down"}


class KeyReader:
    def __init__(self, fd: int | None = None) -> None:
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.keys: queue.Queue[str] = queue.Queue()
        self._saved = termios.tcgetattr(self.fd)
        self._stop = threading.Event()
        tty.setcbreak(self.fd)
        self._thread = threading.Thread(target=self._run, name="connguard-keys", daemon=True)
        self._thread.start()

    def _read(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(self.fd, 1)
        return data.decode("utf-8", "replace") if data else ""

    def _run(self) -> None:
        while not self._stop.is_set():
            ch = self._read(0.2)
            if ch is None:
                continue
            if ch == "":
                return  # stdin closed
            if ch == "\x1b":
                seq = ch
                for _ in range(2):
                    nxt = self._read(0.05)
                    if not nxt:
                        break
                    seq += nxt
                self.keys.put(ARROWS.get(seq, "esc"))
            else:
                self.keys.put(ch)

    def get(self, timeout: float) -> str | None:
        try:
            return self.keys.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def close(self) -> None:
        self._stop.set()
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
        self._thread.join(timeout=1.0)
