"""The forecast as each reader gives it, from the same Observations: the LiveWindow itself, `watch`'s model and
the exporter's target state. Shared by tests/test_forecast_shapes.py (recorded traces) and
tests/test_forecast_live.py (a live server)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Iterator

from connguard.analysis.window import LiveWindow, used_slots
from connguard.monitor.exporter_targets import ExporterSettings, TargetRegistry
from connguard.monitor.watch_model import WatchModel, WatchSettings
from connguard.probe.sampler import Observation
from connguard.target_url import parse_target


@dataclass(frozen=True)
class Seen:
    """One tick as a reader showed it."""

    t: float  # monotonic seconds
    used: int | None  # None when not observed
    seconds: float | None  # seconds to full when a forecast is given, else None
    exhaustion_alert: bool = False  # watch only: exhaustion_soon active
    exported: float | None = None  # exporter only: the gauge's value (None: no value)


def by_window(observations: Iterable[Observation]) -> list[Seen]:
    window, out = LiveWindow(), []
    for o in observations:
        if o.snapshot is None:
            fc = window.unobserved()
            out.append(Seen(o.monotonic, None, fc.seconds_to_full))
        else:
            moved = window.push(o.snapshot)
            out.append(Seen(o.monotonic, moved.used, moved.forecast.seconds_to_full))
    return out


def by_watch(observations: Iterable[Observation]) -> list[Seen]:
    model, out = WatchModel("redis://trace", WatchSettings()), []
    for o in observations:
        frame = model.update(o)
        alert = any(a.name == "exhaustion_soon" for a in frame.alerts)
        used = frame.used if frame.reachable else None  # watch shows used_slots (capacity.used)
        out.append(Seen(o.monotonic, used, frame.forecast.seconds_to_full, alert))
    return out


class Replay:
    """A Sampler that hands back recorded (or just taken) Observations, one per sample()."""

    connects = 1
    connected = True  # each scrape replays the next recorded Observation: the exporter's backoff never holds one back

    def __init__(self, observations: Iterable[Observation]) -> None:
        self._next: Iterator[Observation] = iter(observations)

    def sample(self, *, client_list: bool = True, connect: bool = True) -> Observation:
        return next(self._next)

    def close(self) -> None:
        pass


def by_exporter(observations: Iterable[Observation]) -> list[Seen]:
    """Each Observation as one scrape: `connguard_seconds_to_exhaustion` as the exporter exports it (a finite
    number is a forecast; +Inf is "observed, not heading there"; None is no value at all)."""
    obs = list(observations)
    ticks = itertools.count()
    registry = TargetRegistry(ExporterSettings(diagnose_every_s=1e9), lambda target: Replay(obs),
                              clock=lambda: float(next(ticks)))
    target = parse_target("redis://127.0.0.1:1", env={})
    out = []
    try:
        for o in obs:
            view = registry.scrape(target)
            value = view.seconds_to_exhaustion
            used = None if view.snapshot is None else used_slots(view.snapshot)
            out.append(Seen(o.monotonic, used, value if value is not None and math.isfinite(value) else None,
                            exported=value))
    finally:
        registry.close()
    return out


READERS = {"window": by_window, "watch": by_watch, "exporter": by_exporter}
