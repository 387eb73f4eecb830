"""The vocabulary of a verdict: DoctorSettings in, Finding and Action out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from connguard.analysis.capacity import CRITICAL_RATIO, WARNING_RATIO

SEVERITIES = ("info", "warning", "critical")  # worst last
CAUSES = (
    "exhausted", "connection_leak", "pool_oversize", "serverless_fanout", "retry_storm",
    "maxclients_too_low", "fd_limit", "internal_connections", "blocked_clients",
    "output_buffer_bloat",  # slow consumers (subscribers, replicas) whose output buffers hold memory
    "capacity_pressure",  # usage at or over the warning line that no other cause explains
    "monitor_sessions",  # MONITOR clients holding slots (and CPU: every command is copied to each)
)


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def worst(*severities: str) -> str:
    return max(severities, key=severity_rank)


@dataclass(frozen=True)
class DoctorSettings:
    """How the doctor looks: sampling interval, what counts as idle, how many sources to show."""

    interval_s: float = 5.0
    idle_threshold_s: float = 300.0
    top: int = 10
    warning_ratio: float = WARNING_RATIO
    critical_ratio: float = CRITICAL_RATIO

    def __post_init__(self) -> None:
        if self.interval_s < 0:
            raise ValueError(f"--interval must be >= 0 (got {self.interval_s})")
        if self.idle_threshold_s <= 0:
            raise ValueError(f"--idle-threshold must be > 0 seconds (got {self.idle_threshold_s})")
        if self.top < 0:
            raise ValueError(f"--top must be >= 0 (got {self.top})")
        if not 0 < self.warning_ratio <= self.critical_ratio <= 1:
            raise ValueError("ratios must satisfy 0 < warning <= critical <= 1")


@dataclass(frozen=True)
class Action:
    """One next step. `command` is exact and runnable (never with a password); None for advice only."""

    title: str
    command: str | None
    changes_server: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "command": self.command, "changes_server": self.changes_server}


@dataclass(frozen=True)
class Finding:
    """One cause, how sure we are, the numbers behind it and what to do."""

    cause: str
    severity: str
    confidence: float
    summary: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    actions: tuple[Action, ...] = ()

    def __post_init__(self) -> None:
        if self.cause not in CAUSES:
            raise ValueError(f"unknown cause {self.cause!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self.evidence.get("hosts", ()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause, "severity": self.severity, "confidence": round(self.confidence, 2),
            "summary": self.summary, "evidence": dict(self.evidence), "actions": [a.to_dict() for a in self.actions],
        }
