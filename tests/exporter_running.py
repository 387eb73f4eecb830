"""An exporter served from a thread of the test process, and a parser for its pages (shared by the exporter tests)."""

from __future__ import annotations

import threading
import urllib.parse
import urllib.request
from typing import Callable, Iterator

import pytest

from connguard.analysis.findings import DoctorSettings
from connguard.monitor import exporter as ex
from connguard.monitor.exporter_targets import ExporterSettings, TargetRegistry


class Running:
    """An exporter served from a thread of this process, stopped by its event."""

    def __init__(self, settings: ExporterSettings, creds: ex.Credentials) -> None:
        self.registry = TargetRegistry(settings, ex.sampler_factory(settings))
        self.exporter = ex.Exporter(self.registry, creds)
        self.server = ex.bind("127.0.0.1:0", self.exporter)
        self.port = self.server.server_address[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=ex.run, args=(self.server, self.exporter), kwargs={"stop": self.stop},
                                       daemon=True)
        self.thread.start()

    def get(self, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as resp:
            return resp.status, resp.read().decode()

    def probe(self, target: str) -> dict[str, float]:
        status, body = self.get("/probe?target=" + urllib.parse.quote(target, safe=""))
        assert status == 200
        return parse(body)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def parse(body: str) -> dict[str, float]:
    """`name{labels}` -> value for every sample line of an exposition page."""
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


@pytest.fixture
def run_exporter() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(creds: ex.Credentials = ex.Credentials(), **kwargs: object) -> Running:
        doctor = kwargs.pop("doctor", DoctorSettings())
        running = Running(ExporterSettings(doctor=doctor, **kwargs), creds)  # type: ignore[arg-type]
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()
