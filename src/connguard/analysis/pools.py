"""Pool arithmetic: the largest pool that keeps a total under a line of maxclients, and the least maxclients
for a total. Pure; used by the doctor's rules (analysis) and by `connguard plan` (remedy)."""

from __future__ import annotations

import math
from fractions import Fraction

from connguard.analysis.capacity import WARNING_RATIO


def _exact(line: float) -> Fraction:
    # 0.8 as a float is 0.8000000000000000444…; the exact fraction keeps "strictly under" exact at the boundary.
    return Fraction(line).limit_denominator(10_000)


def largest_under(line: float, maxclients: int, other: int, units: int) -> int:
    """The largest per-unit size p with units x p + other strictly under line x maxclients: the ratio
    then stays below the warning line, which is reached at or above it (>=, as in capacity.py)."""
    room = _exact(line) * maxclients - other
    if room <= 0:
        return 0
    return max(0, math.ceil(room / units) - 1)


def least_maxclients_for(total: int, line: float = WARNING_RATIO) -> int:
    """The smallest maxclients that keeps `total` strictly under `line`."""
    return math.floor(total / _exact(line)) + 1
