"""Which client hosts get their own `source` label: the top K by connections, chosen with hysteresis.

Choosing the top K afresh on every CLIENT LIST makes every host that is briefly among the busiest a new
series: 300 churning sources gave 108 distinct series in 15 minutes against 11 at any moment. Each distinct
series lives in Prometheus for its retention, so the selection is sticky:

- free slots (fewer than K labelled hosts) are filled at once, busiest first;
- once full, a labelled host keeps its label (it may show 0) until a newcomer needs its slot: the newcomer
  must hold clearly more connections than the weakest labelled host (`margin`), and
- at most one such swap happens per `3600 / K` seconds, so any hour sees at most K hosts labelled at its
  start plus K swapped in, plus `other`: 2K + 1 distinct series, whatever the churn.

A host's `name` and `lib` labels are pinned when it gets its slot (they are part of the series identity too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

from connguard.analysis.sources import host_key
from connguard.monitor.exporter_metrics import HostRow

HOUR_S = 3600.0
SWAP_MARGIN = 1.5  # a newcomer must hold 1.5x the weakest labelled host's connections (and at least 2 more)
SWAP_MIN_GAIN = 2


@dataclass
class StickyTopK:
    k: int
    margin: float = SWAP_MARGIN
    members: dict[str, tuple[str, str]] = field(default_factory=dict)  # host -> pinned (name, lib)
    last_swap: float = -math.inf

    @property
    def swap_every_s(self) -> float:
        return HOUR_S / self.k if self.k else math.inf

    def choose(self, rows: Sequence[HostRow], now: float) -> tuple[HostRow, ...]:
        """The labelled hosts for this CLIENT LIST (`rows` busiest first, as host_rows gives them), busiest
        first; hosts not returned fold into `other`."""
        if self.k <= 0:
            return ()
        by_host = {r.host: r for r in rows}
        newcomers = [r for r in rows if r.host not in self.members and r.connections > 0]
        for row in newcomers[: max(0, self.k - len(self.members))]:
            self.members[row.host] = (row.name, row.lib)
        newcomers = [r for r in newcomers if r.host not in self.members]
        if newcomers and len(self.members) >= self.k and now - self.last_swap >= self.swap_every_s:
            weakest = min(self.members, key=lambda h: (by_host[h].connections if h in by_host else 0, h))
            held = by_host[weakest].connections if weakest in by_host else 0
            best = newcomers[0]
            if best.connections >= max(held * self.margin, held + SWAP_MIN_GAIN):
                del self.members[weakest]
                self.members[best.host] = (best.name, best.lib)
                self.last_swap = now
        chosen = []
        for host, (name, lib) in self.members.items():
            row = by_host.get(host) or HostRow(host, 0, 0, name, lib)
            chosen.append(replace(row, name=name, lib=lib))
        chosen.sort(key=lambda r: (-r.connections, -r.idle_over_threshold, host_key(r.host)))
        return tuple(chosen)
