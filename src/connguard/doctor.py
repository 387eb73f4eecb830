"""`run_doctor`: the doctor's I/O. A Sampler, a window of N observations, then the pure diagnosis."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from connguard.analysis.diagnosis import Diagnosis, DoctorSettings, diagnose_observations
from connguard.analysis.window import DEFAULT_SAMPLES
from connguard.probe.sampler import Observation, Sampler
from connguard.target import Target
from connguard.settings import CONNECT_TIMEOUT_S

if TYPE_CHECKING:
    from connguard.probe.recording import Recorder

CENSUS_PAUSE_MAX_S = 2.0  # between two censuses of a refusing server: long enough to see churn, short for an incident


def observe(
    sampler: Sampler, settings: DoctorSettings, *, samples: int = DEFAULT_SAMPLES,
    sleep: Callable[[float], None] = time.sleep, recorder: Recorder | None = None,
) -> list[Observation]:
    """`samples` Observations `settings.interval_s` apart, each written to `recorder` as it is taken.

    A server that refuses the doctor is looked at from outside only: a second socket census after a short
    pause, without knocking again, so a storm (connections changing hands) can be told from a still pile."""
    if samples < 1:
        raise ValueError(f"--samples must be >= 1 (got {samples})")

    def take(**kwargs: bool) -> Observation:
        obs = sampler.sample(**kwargs)
        if recorder is not None:
            recorder.write(obs)
        return obs

    window = [take()]
    first = window[0]
    if first.snapshot is None:
        if first.refused and first.census is not None and samples > 1:
            sleep(min(settings.interval_s, CENSUS_PAUSE_MAX_S))
            window.append(take(connect=False))
        return window
    for _ in range(samples - 1):
        sleep(settings.interval_s)
        window.append(take())
    return window


def examine(
    sampler: Sampler, settings: DoctorSettings, *, once: bool = False, samples: int = DEFAULT_SAMPLES,
    sleep: Callable[[float], None] = time.sleep, recorder: Recorder | None = None,
) -> Diagnosis:
    """Observe a window (one Observation with `once`) and diagnose it. Nothing is written to the server."""
    window = observe(sampler, settings, samples=1 if once else samples, sleep=sleep, recorder=recorder)
    return diagnose_observations(window, settings, sampler.target)


def run_doctor(
    target: Target, settings: DoctorSettings, *, once: bool = False, samples: int = DEFAULT_SAMPLES,
    connect_timeout_s: float = CONNECT_TIMEOUT_S, sleep: Callable[[float], None] = time.sleep, recorder: Recorder | None = None,
) -> Diagnosis:
    """Connect (riding out a full server for `connect_timeout_s`), examine, close. A server that stays full
    is diagnosed from outside; any other failure to observe raises its ConnguardError."""
    with Sampler(target, connect_timeout_s=connect_timeout_s, sleep=sleep) as sampler:
        return examine(sampler, settings, once=once, samples=samples, sleep=sleep, recorder=recorder)
