"""CLIENT LIST's budget: how often watch may run it so that it takes at most a share of the server's time.

CLIENT LIST is O(N) on the server's one thread (7–16 ms at 10k clients). Its cost comes from the server's
own INFO commandstats (`cmdstat_client|list`; 6.2 folds every CLIENT subcommand into `cmdstat_client`),
as the change in usec over the change in calls between two INFOs, else the lifetime `usec_per_call`.
Pure: no clock of its own (times are the Observation's monotonic seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

DEFAULT_SHARE = 0.01  # CLIENT LIST may take at most 1% of the server's wall time
PLAN_MARGIN = 0.8  # plan for 80% of the budget: the cost per call varies (first calls, a busy server)
COMMANDSTAT_KEYS = ("cmdstat_client|list", "cmdstat_client")  # 7.0+/Valkey, then 6.2


def parse_commandstat(value: str) -> tuple[int, int, float] | None:
    """`calls=3,usec=120,usec_per_call=40.00,...` -> (calls, usec, usec_per_call)."""
    fields = dict(part.split("=", 1) for part in value.split(",") if "=" in part)
    try:
        return int(fields["calls"]), int(fields["usec"]), float(fields["usec_per_call"])
    except (KeyError, ValueError):
        return None


def client_list_stat(sections: Mapping[str, Mapping[str, str]]) -> tuple[int, int, float] | None:
    stats = sections.get("commandstats") or {}
    for key in COMMANDSTAT_KEYS:
        if key in stats:
            return parse_commandstat(stats[key])
    return None


@dataclass(frozen=True)
class BudgetView:
    """What the screen shows about the budget."""

    every_s: float  # the current spacing of CLIENT LIST calls
    cost_ms: float | None  # server time per CLIENT LIST, None until measured
    share: float | None  # our CLIENT LIST time / wall time since watch started
    budget_share: float
    fixed: bool  # --clients-every given: no adaptation
    calls: int  # CLIENT LISTs watch ran


class ClientListBudget:
    """Decides, tick by tick, whether this tick includes CLIENT LIST."""

    def __init__(self, interval_s: float, *, fixed_every_s: float | None = None, share: float = DEFAULT_SHARE) -> None:
        self.interval_s = interval_s
        self.fixed_every_s = fixed_every_s
        self.share = share
        self.cost_us: float | None = None
        self.last_at: float | None = None
        self.started_at: float | None = None
        self.calls = 0
        self.spent_us = 0.0
        self._stat: tuple[int, int, float] | None = None

    @property
    def every_s(self) -> float:
        if self.fixed_every_s is not None:
            return self.fixed_every_s
        if self.cost_us is None:
            return self.interval_s
        return max(self.interval_s, self.cost_us / 1e6 / (self.share * PLAN_MARGIN))

    def due(self, now: float) -> bool:
        if self.last_at is None:
            return True
        every = self.every_s
        # When the budget allows every tick, half a tick of slack keeps timer jitter from skipping ticks;
        # a spacing beyond one tick is never shortened, or the share would creep over the budget.
        slack = self.interval_s / 2 if every <= self.interval_s else 0.0
        return now - self.last_at >= every - slack

    def note(self, now: float, sections: Mapping[str, Mapping[str, str]] | None, included: bool) -> None:
        """After a tick: learn the cost from commandstats, and count our call."""
        if self.started_at is None:
            self.started_at = now
        stat = client_list_stat(sections) if sections is not None else None
        if stat is not None:
            calls, usec, per_call = stat
            if self._stat is not None and calls > self._stat[0] and usec >= self._stat[1]:
                self.cost_us = (usec - self._stat[1]) / (calls - self._stat[0])
            elif self.cost_us is None and calls:
                self.cost_us = per_call
            self._stat = stat
        if included:
            self.last_at = now
            self.calls += 1
            # INFO runs before CLIENT LIST in a tick, so this call's cost shows in the next tick's stats.
            self.spent_us += self.cost_us or 0.0

    def view(self, now: float) -> BudgetView:
        elapsed = (now - self.started_at) if self.started_at is not None else 0.0
        share = (self.calls * (self.cost_us or 0.0) / 1e6 / elapsed) if elapsed > 0 and self.cost_us else None
        return BudgetView(self.every_s, None if self.cost_us is None else self.cost_us / 1000.0, share, self.share,
                          self.fixed_every_s is not None, self.calls)
