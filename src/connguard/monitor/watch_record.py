"""--record for watch: raw observations (and kills) as JSONL, through the probe's recorder."""

from __future__ import annotations

from typing import Any

from connguard.target import Target


def open_recorder(path: str, target: Target) -> Any:
    raise NotImplementedError("waiting for connguard.probe.recording")
