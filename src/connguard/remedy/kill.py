"""Choose which clients a kill may touch, and disconnect them: by ID only, never replicas, the primary link,
Sentinel, pub/sub, MONITOR, another connguard, or our own connection (classify.py says which is which)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

import redis

from connguard.analysis.classify import OWN_CONNECTION, kind_of, protection_reason
from connguard.probe.model import ClientRecord

DEFAULT_MAX_KILLS = 1000


def check_source(source: str) -> str:
    """A client host as CLIENT LIST shows it: an IP address (v4 or v6) or `unix`. Anything else matches
    nothing, so a typo would be a silent no-op; refuse it instead."""
    if source == "unix":
        return source
    try:
        return str(ipaddress.ip_address(source.strip("[]")))
    except ValueError:
        raise ValueError(f"--source {source!r} is not an IP address (or 'unix'): CLIENT LIST names clients by IP") from None


@dataclass(frozen=True)
class KillFilter:
    """What the operator asked for. At least one selector must be set: there is no 'kill everything'.
    `force` lets explicitly listed IDs (`--id`) include protected kinds; it never reaches our own connection."""

    sources: tuple[str, ...] = ()
    idle_min_s: int | None = None
    names: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()
    include_blocked: bool = False
    max_kills: int = DEFAULT_MAX_KILLS
    force: bool = False

    def __post_init__(self) -> None:
        if not (self.sources or self.idle_min_s is not None or self.names or self.ids):
            raise ValueError("kill needs a selector: --source, --idle, --name or --id (there is no 'kill all')")
        object.__setattr__(self, "sources", tuple(check_source(s) for s in self.sources))
        if self.idle_min_s is not None and self.idle_min_s < 0:
            raise ValueError(f"--idle must be >= 0 seconds, got {self.idle_min_s}")
        if self.max_kills < 1:
            raise ValueError(f"--max must be at least 1, got {self.max_kills}")
        if self.force and not self.ids:
            raise ValueError("--force applies only to clients named by --id: list the IDs you mean")

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
    """The clients to disconnect, and the matching ones that are protected, each with its reason.
    `forced`: protected clients that --id plus --force put among the targets anyway, with what they are."""

    targets: tuple[ClientRecord, ...]
    skipped: tuple[Skipped, ...]
    over_limit: int  # matching, killable, but beyond --max
    forced: tuple[Skipped, ...] = ()
    missing_ids: tuple[int, ...] = ()  # asked for by --id, not connected (any more)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(c.id for c in self.targets)


def plan_kill(clients: Iterable[ClientRecord], wanted: KillFilter, own_client_id: int | None) -> KillPlan:
    targets: list[ClientRecord] = []
    skipped: list[Skipped] = []
    forced: list[Skipped] = []
    seen: set[int] = set()
    over = 0
    for client in clients:
        if not wanted.matches(client):
            continue
        seen.add(client.id)
        reason = protection_reason(client, own_client_id, include_blocked=wanted.include_blocked)
        if reason and wanted.force and reason != OWN_CONNECTION:
            forced.append(Skipped(client, reason))
            reason = None
        if reason:
            skipped.append(Skipped(client, reason))
        elif len(targets) >= wanted.max_kills:
            over += 1
        else:
            targets.append(client)
    kept = {c.id for c in targets}
    missing = tuple(i for i in wanted.ids if i not in seen)
    return KillPlan(tuple(targets), tuple(skipped), over, tuple(f for f in forced if f.client.id in kept), missing)


def describe(client: ClientRecord) -> dict[str, Any]:
    """What the operator needs to recognise a client before it goes: ID, address, name, idle, age, kind."""
    return {"id": client.id, "addr": client.addr, "name": client.name, "idle_s": client.idle_s, "age_s": client.age_s,
            "kind": kind_of(client), "cmd": client.cmd}


class Executor(Protocol):
    def execute(self, *args: Any) -> Any: ...


@dataclass(frozen=True)
class KillResult:
    killed: int
    already_gone: tuple[int, ...]


def execute_kills(conn: Executor, plan: KillPlan) -> KillResult:
    """CLIENT KILL ID one by one: an ID is never reused, so a client that reconnected is not hit.
    SKIPME yes keeps our own connection even if an ID list went wrong."""
    killed = 0
    gone: list[int] = []
    for client_id in plan.ids:
        try:
            killed += int(conn.execute("CLIENT", "KILL", "ID", str(client_id), "SKIPME", "yes"))
        except redis.exceptions.ResponseError as exc:
            if "no such client" not in str(exc).lower():
                raise
            gone.append(client_id)  # it left on its own
    return KillResult(killed, tuple(gone))
