"""Choose which clients a kill may touch, and disconnect them: by ID only, never replicas, the primary link,
Sentinel, pub/sub, MONITOR, another connguard, or our own connection (classify.py says which is which)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

import redis

from connguard.analysis.classify import OWN_CONNECTION, PROTECTED_KINDS, PUBSUB, kind_of, protection_reason
from connguard.probe.model import ClientRecord

DEFAULT_MAX_KILLS = 1000
# The one protected kind a selector may reach: a subscriber whose output buffer grows because it never reads
# (output_buffer_bloat, --output-buffer-over), or one of a pile of subscribers never closed (--pubsub).
# Named in every dry run.
SLOW_SUBSCRIBER = PROTECTED_KINDS[PUBSUB]


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
    output_buffer_min: int | None = None  # bytes of omem; also lets pub/sub subscribers be chosen
    pubsub: bool = False  # only pub/sub subscribers (a subscriber pile), which it lets be chosen

    def __post_init__(self) -> None:
        if not (self.sources or self.idle_min_s is not None or self.names or self.ids
                or self.output_buffer_min is not None):
            raise ValueError("kill needs a selector: --source, --idle, --name, --id or --output-buffer-over "
                             "(there is no 'kill all')")
        if self.pubsub and not (self.sources or self.names or self.ids):
            raise ValueError("--pubsub needs --source, --name or --id too: it narrows a selection to subscribers, "
                             "it never means 'every subscriber'")
        if self.output_buffer_min is not None and self.output_buffer_min < 1:
            raise ValueError(f"--output-buffer-over must be at least 1 byte, got {self.output_buffer_min}")
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
        if self.output_buffer_min is not None and client.output_buffer < self.output_buffer_min:
            return False
        if self.pubsub and kind_of(client) != PUBSUB:
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
        elif reason == SLOW_SUBSCRIBER and wanted.output_buffer_min is not None:
            forced.append(Skipped(client, f"{reason} (chosen by --output-buffer-over)"))
            reason = None
        elif reason == SLOW_SUBSCRIBER and wanted.pubsub:
            forced.append(Skipped(client, f"{reason} (chosen by --pubsub)"))
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
            "kind": kind_of(client), "cmd": client.cmd, "omem": client.output_buffer}


class Executor(Protocol):
    def execute(self, *args: Any) -> Any: ...


@dataclass(frozen=True)
class KillResult:
    killed: int
    already_gone: tuple[int, ...]
    round_trips: int = 0  # commands sent to kill (and re-check): what the batched path saves


# Server-side filters, by version. Valkey 8.1 takes many IDs in one CLIENT KILL ID; Valkey 9.0 filters
# CLIENT LIST by IDLE, IP, NAME (and ID) itself, so a narrow selection need not fetch every client.
MULTI_ID_KILL = (8, 1)
LIST_FILTERS = (9, 0)
KILL_BATCH = 1000  # IDs per CLIENT KILL ID / CLIENT LIST ID: bounds one command's size and the server's pause


def _version(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


@dataclass(frozen=True)
class ServerFeatures:
    """What this server can do on its own side for a kill."""

    multi_id_kill: bool = False
    list_filters: bool = False

    @classmethod
    def of(cls, flavor: str, version: str) -> "ServerFeatures":
        v = _version(version)
        valkey = flavor == "valkey"
        return cls(multi_id_kill=valkey and v >= MULTI_ID_KILL, list_filters=valkey and v >= LIST_FILTERS)


def client_list_args(wanted: KillFilter, features: ServerFeatures) -> tuple[str, ...]:
    """The CLIENT LIST that fetches the candidates: every client, or (Valkey 9.0+) only those the server's
    own IDLE / IP / NAME / ID filters let through. The filters are a narrowing only: plan_kill still checks
    every record against the whole KillFilter and the protected kinds."""
    args: list[str] = ["CLIENT", "LIST"]
    if not features.list_filters:
        return tuple(args)
    if wanted.idle_min_s is not None and wanted.idle_min_s > 0:
        args += ["IDLE", str(wanted.idle_min_s)]
    if len(wanted.sources) == 1 and wanted.sources[0] != "unix":
        args += ["IP", wanted.sources[0]]
    if len(wanted.names) == 1 and wanted.names[0]:
        args += ["NAME", wanted.names[0]]
    if wanted.ids:
        args += ["ID", *map(str, wanted.ids)]
    return tuple(args)


def execute_kills(conn: Executor, plan: KillPlan, *, batched: bool = False) -> KillResult:
    """CLIENT KILL ID one by one: an ID is never reused, so a client that reconnected is not hit.
    SKIPME yes keeps our own connection even if an ID list went wrong.

    `batched` (Valkey 8.1+, see ServerFeatures): per KILL_BATCH IDs, one CLIENT LIST ID re-reads them and
    only those still the same client (same address, no younger) go into one CLIENT KILL ID id1 id2 ..."""
    if batched:
        return _execute_batched(conn, plan)
    killed = 0
    gone: list[int] = []
    for client_id in plan.ids:
        try:
            killed += int(conn.execute("CLIENT", "KILL", "ID", str(client_id), "SKIPME", "yes"))
        except redis.exceptions.ResponseError as exc:
            if "no such client" not in str(exc).lower():
                raise
            gone.append(client_id)  # it left on its own
    return KillResult(killed, tuple(gone), len(plan.ids))


def _execute_batched(conn: Executor, plan: KillPlan) -> KillResult:
    from connguard.probe.client_list import parse_client_list

    killed = trips = 0
    gone: list[int] = []
    targets = plan.targets
    for start in range(0, len(targets), KILL_BATCH):
        chunk = targets[start:start + KILL_BATCH]
        ids = [str(c.id) for c in chunk]
        now = {r.id: r for r in parse_client_list(conn.execute("CLIENT", "LIST", "ID", *ids)).records()}
        trips += 1
        same = [c.id for c in chunk if c.id in now and now[c.id].addr == c.addr and now[c.id].age_s >= c.age_s]
        gone += [c.id for c in chunk if c.id not in set(same)]
        if same:
            killed += int(conn.execute("CLIENT", "KILL", "ID", *map(str, same), "SKIPME", "yes"))
            trips += 1
    return KillResult(killed, tuple(gone), trips)
