"""Classify each connection by the kind of slot it holds: normal, internal link, pub/sub, monitor, blocked."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from connguard.probe.model import ClientRecord, Snapshot
from connguard.wire import CLIENT_NAME

# Commands that park a client until data (or a timeout) arrives: each holds a slot with no throughput.
BLOCKING_COMMANDS = frozenset({
    "blpop", "brpop", "blmove", "brpoplpush", "bzpopmin", "bzpopmax", "blmpop", "bzmpop",
    "xread", "xreadgroup", "wait", "waitaof",
})

# Kinds, in precedence order: a replica that is also in pub/sub is still a replica.
REPLICA, PRIMARY_LINK, SENTINEL, MONITOR, PUBSUB, BLOCKED, NORMAL = (
    "replica", "primary_link", "sentinel", "monitor", "pubsub", "blocked", "normal",
)
INTERNAL_KINDS = frozenset({REPLICA, PRIMARY_LINK, SENTINEL})

# Kinds connguard never disconnects on its own (kill, watch): why, in words for the operator.
# Blocked clients are protected too, but only by default (`kill --include-blocked`).
PROTECTED_KINDS = {
    REPLICA: "replica link",
    PRIMARY_LINK: "link to the primary",
    SENTINEL: "Sentinel link",
    MONITOR: "MONITOR client",
    PUBSUB: "pub/sub subscriber",
}
BLOCKED_REASON = "blocked in a command (use --include-blocked)"
OWN_CONNECTION = "our own connection"
OTHER_CONNGUARD = "another connguard tool"


def is_blocked(rec: ClientRecord) -> bool:
    """The `b` flag, or a blocking command as the last one (CLIENT LIST shows it while parked)."""
    return rec.is_blocked or rec.cmd.partition("|")[0].lower() in BLOCKING_COMMANDS


def kind_of(rec: ClientRecord) -> str:
    if rec.is_replica:
        return REPLICA
    if rec.is_primary_link:
        return PRIMARY_LINK
    if rec.is_sentinel:
        return SENTINEL
    if rec.is_monitor:
        return MONITOR
    if rec.is_pubsub:
        return PUBSUB
    if is_blocked(rec):
        return BLOCKED
    return NORMAL


def protection_reason(rec: ClientRecord, own_client_id: int | None, *, include_blocked: bool = False) -> str | None:
    """Why connguard must not disconnect this client, or None if it may. The one definition `kill`,
    `watch` and the doctor's kill advice share."""
    if own_client_id is not None and rec.id == own_client_id:
        return OWN_CONNECTION
    kind = kind_of(rec)
    if kind in PROTECTED_KINDS:
        return PROTECTED_KINDS[kind]
    if rec.name == CLIENT_NAME:
        return OTHER_CONNGUARD
    if kind == BLOCKED and not include_blocked:
        return BLOCKED_REASON
    return None


@dataclass(frozen=True)
class ConnectionClasses:
    """How the slots split by kind. `cluster_bus` comes from INFO, the rest from CLIENT LIST when seen."""

    normal: int | None
    blocked: int
    pubsub: int | None
    monitor: int | None
    sentinel: int | None
    replicas: int
    primary_link: int | None
    cluster_bus: int
    from_client_list: bool

    @property
    def internal(self) -> int:
        """Slots taken by the server's own topology: replicas, the primary link, Sentinel, cluster bus."""
        return self.replicas + (self.primary_link or 0) + (self.sentinel or 0) + self.cluster_bus

    def to_dict(self) -> dict[str, object]:
        return {
            "normal": self.normal, "blocked": self.blocked, "pubsub": self.pubsub, "monitor": self.monitor,
            "sentinel": self.sentinel, "replicas": self.replicas, "primary_link": self.primary_link,
            "cluster_bus": self.cluster_bus, "internal": self.internal, "from_client_list": self.from_client_list,
        }


def client_records(snapshot: Snapshot) -> Iterable[ClientRecord]:
    """Every client the server lists, except connguard's own connection."""
    own = snapshot.own_client_id
    return (r for r in snapshot.clients or () if r.id != own)


def classify(snapshot: Snapshot) -> ConnectionClasses:
    info = snapshot.info
    if snapshot.clients is None:
        # INFO alone: replicas, blocked and cluster bus are known; the rest are not.
        primary = 1 if info.role in ("slave", "replica") else None
        return ConnectionClasses(None, info.blocked_clients, info.pubsub_clients, None, None,
                                 info.connected_slaves, primary, info.cluster_connections, False)
    counts = Counter(kind_of(r) for r in client_records(snapshot))
    return ConnectionClasses(
        normal=counts[NORMAL], blocked=counts[BLOCKED], pubsub=counts[PUBSUB], monitor=counts[MONITOR],
        sentinel=counts[SENTINEL], replicas=max(counts[REPLICA], info.connected_slaves),
        primary_link=counts[PRIMARY_LINK], cluster_bus=info.cluster_connections, from_client_list=True,
    )
