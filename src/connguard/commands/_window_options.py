"""The doctor's window options (--interval, --samples, --once, --idle-threshold, --top), shared by `doctor` and
`fleet doctor` so their ranges and defaults cannot drift. Defaults come from DoctorSettings, their one home."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import click

from connguard.analysis.findings import DoctorSettings
from connguard.analysis.window import DEFAULT_SAMPLES
from connguard.commands._common import FiniteNumber, idle_threshold_option, interval_option

F = TypeVar("F", bound=Callable[..., Any])

DEFAULTS = DoctorSettings()


def window_options(func: F) -> F:
    options = [
        interval_option(DEFAULTS.interval_s,
                        "Seconds between Snapshots (rates, growth, churn); a fleet's targets wait in parallel."),
        click.option("--samples", type=FiniteNumber(1, 1000, integer=True), default=DEFAULT_SAMPLES,
                     show_default=True,
                     help="Snapshots in the window, --interval apart: rates, growth and churn cover all of them."),
        click.option("--once", is_flag=True, help="One Snapshot only: faster, but no rates or growth."),
        idle_threshold_option(),
        click.option("--top", type=FiniteNumber(0, 100_000, integer=True), default=DEFAULTS.top, show_default=True,
                     help="Sources to list per target; the rest fold into one row."),
    ]
    for option in reversed(options):
        func = option(func)
    return func
