"""Choose which clients a kill may touch: by ID only, never replicas, the primary link, Sentinel,
pub/sub, MONITOR, another connguard, or our own connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from connguard.probe.model import ClientRecord
from connguard.wire import CLIENT_NAME

DEFAULT_MAX_KILLS = 1000


@dataclass(frozen=True)
class KillFilter:
    """What the operator asked for. At least one selector must be set: there is no 'kill everything'."""

    sources: tuple[str, ...] = ()
    idle_min_s: int | None = None
    names: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()
    include_blocked: bool = False
    max_kills: int = DEFAULT_MAX_KILLS

    def __post_init__(self) -> None:
        if not (self.sources or self.idle_min_s is not None or self.names or self.ids):
            raise ValueError("kill needs a selector: --source, --idle, --name or --id (there is no 'kill all')")
        if self.idle_min_s is not None and self.idle_min_s < 0:
            raise ValueError(f"--idle must be >= 0 seconds, got {self.idle_min_s}")
        if self.max_kills < 1:
            raise ValueError(f"--max must be at least 1, got {self.max_kills}")

    def matches(self, client: ClientRecord) -> bool:
        if self.sources and client.host not in self.sources:
            return False
        if self.idle_min_s is not None and client.idle_s < self.idle_min_s:
            return False
        if self.names and client.name not in self.names:
            return False
        if self.ids and client.id not in self.ids:
            return False
        return True


@dataclass(frozen=True)
class Skipped:
    client: ClientRecord
    reason: str


@dataclass(frozen=True)
class KillPlan:
    """The clients to disconnect, and the matching ones that are protected, each with its reason."""

    targets: tuple[ClientRecord, ...]
    skipped: tuple[Skipped, ...]
    over_limit: int  # matching, killable, but beyond --max

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(c.id for c in self.targets)


def protection_reason(client: ClientRecord, own_client_id: int | None) -> str | None:
    """Why this client must never be killed by connguard, or None if it may be."""
    if own_client_id is not None and client.id == own_client_id:
        return "our own connection"
    if client.is_replica:
        return "replica link"
    if client.is_primary_link:
        return "link to the primary"
    if client.is_sentinel:
        return "Sentinel link"
    if client.is_pubsub:
        return "pub/sub subscriber"
    if client.is_monitor:
        return "MONITOR client"
    if client.name == CLIENT_NAME:
        return "another connguard tool"
    return None


def plan_kill(clients: Iterable[ClientRecord], wanted: KillFilter, own_client_id: int | None) -> KillPlan:
    targets: list[ClientRecord] = []
    skipped: list[Skipped] = []
    over = 0
    for client in clients:
        if not wanted.matches(client):
            continue
        reason = protection_reason(client, own_client_id)
        if reason is None and client.is_blocked and not wanted.include_blocked:
            reason = "blocked in a command (use --include-blocked)"
        if reason:
            skipped.append(Skipped(client, reason))
        elif len(targets) >= wanted.max_kills:
            over += 1
        else:
            targets.append(client)
    return KillPlan(tuple(targets), tuple(skipped), over)
