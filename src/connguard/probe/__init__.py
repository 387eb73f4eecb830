"""The probe: the only layer that talks to a server or reads /proc. It turns a held connection into a Snapshot
(and, through `connguard.probe.sampler.Sampler`, a stream of Observations).

- `connguard.probe.model`: the Snapshot and its parts (pure dataclasses);
- `connguard.probe.build`: `RawCapture` and `build_snapshot` (pure parsing);
- `connguard.probe.capture`: `capture` and `take_snapshot` (redis-py).

Importing this package imports no driver: `from connguard.probe import take_snapshot` still works, loaded
on first use, so `connguard.analysis` (which reads `connguard.probe.model`) stays free of redis-py."""

from __future__ import annotations

from typing import Any

__all__ = ["RawCapture", "build_snapshot", "capture", "take_snapshot"]

_HOMES = {"RawCapture": "build", "build_snapshot": "build", "capture": "capture", "take_snapshot": "capture"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'connguard.probe' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"connguard.probe.{home}"), name)
