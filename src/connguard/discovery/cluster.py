"""Every node of a Redis Cluster from one seed: CLUSTER SHARDS (7.0+), falling back to CLUSTER NODES (6.2).

The parsers are pure (raw replies in, ClusterNodes out); `discover_cluster` is the one I/O function."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import redis

from connguard.discovery.model import PRIMARY, REPLICA, Member, Problem, Topology
from connguard.errors import BadTarget, ConnguardError, Denied, NotRedis
from connguard.target import HeldConnection, Target, open_connection, parse_target

NODE_ID_SHOWN = 8  # characters of a node id in tables, like redis-cli


@dataclass(frozen=True)
class ClusterNode:
    node_id: str
    host: str
    port: int
    role: str  # primary | replica
    slots: int  # number of hash slots served (0 for replicas)
    health: str  # online | failed | loading | handshake | noaddr ...
    primary_id: str | None = None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _as_dict(reply: Any) -> dict[str, Any]:
    if isinstance(reply, dict):
        return {_text(k): v for k, v in reply.items()}
    items = list(reply or [])
    return {_text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _slot_count(bounds: list[Any]) -> int:
    """CLUSTER SHARDS gives slots as a flat [start1, end1, start2, end2, ...] list."""
    nums = [int(b) for b in bounds]
    return sum(end - start + 1 for start, end in zip(nums[0::2], nums[1::2]))


def parse_shards(reply: Any) -> list[ClusterNode]:
    """CLUSTER SHARDS (7.0+), raw RESP2 or redis-py-decoded. The endpoint is used unless it is unknown (`?`)."""
    nodes: list[ClusterNode] = []
    for shard in reply or []:
        fields = _as_dict(shard)
        slots = _slot_count(list(fields.get("slots") or []))
        members = [_as_dict(n) for n in fields.get("nodes") or []]
        primary_id = next((_text(n["id"]) for n in members if _text(n.get("role", "")) == "master"), None)
        for n in members:
            endpoint = _text(n.get("endpoint", "") or "")
            host = endpoint if endpoint and endpoint != "?" else _text(n.get("ip", ""))
            port = int(n.get("port") or n.get("tls-port") or 0)
            is_primary = _text(n.get("role", "")) == "master"
            nodes.append(ClusterNode(
                node_id=_text(n.get("id", "")), host=host, port=port,
                role=PRIMARY if is_primary else REPLICA, slots=slots if is_primary else 0,
                health=_text(n.get("health", "online")),
                primary_id=None if is_primary else primary_id,
            ))
    return nodes


def _nodes_slot_count(fields: list[str]) -> int:
    count = 0
    for item in fields:
        if item.startswith("["):  # a slot being imported or migrated: [slot->-node]
            continue
        start, _, end = item.partition("-")
        count += int(end or start) - int(start) + 1
    return count


def parse_nodes(text: str | bytes) -> list[ClusterNode]:
    """CLUSTER NODES (every version): `<id> <ip:port@cport[,hostname]> <flags> <primary> <ping> <pong>
    <epoch> <link> <slot> ...`, one node a line."""
    nodes: list[ClusterNode] = []
    for line in _text(text).splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        node_id, address, flags, primary = parts[0], parts[1], parts[2].split(","), parts[3]
        hostport = address.split("@", 1)[0]
        host, _, port_text = hostport.rpartition(":")
        is_primary = "master" in flags
        if "fail" in flags or "fail?" in flags:
            health = "failed" if "fail" in flags else "suspected"
        elif "noaddr" in flags:
            health = "noaddr"
        elif "handshake" in flags:
            health = "handshake"
        else:
            health = "online" if parts[7] == "connected" else parts[7]
        nodes.append(ClusterNode(
            node_id=node_id, host=host.strip("[]"), port=int(port_text or 0),
            role=PRIMARY if is_primary else REPLICA,
            slots=_nodes_slot_count(parts[8:]) if is_primary else 0,
            health=health, primary_id=None if primary == "-" else primary,
        ))
    return nodes


def read_cluster_nodes(conn: HeldConnection) -> list[ClusterNode]:
    """CLUSTER SHARDS, else (6.2 and earlier) CLUSTER NODES. A server not in cluster mode is a BadTarget."""
    try:
        return parse_shards(conn.execute("CLUSTER", "SHARDS"))
    except redis.exceptions.ResponseError as exc:
        if "cluster support disabled" in str(exc).lower():
            raise BadTarget(f"{conn.target.redacted} is not in cluster mode (cluster_enabled:0): a cluster seed "
                            "must be a cluster node (drop --cluster, or name one server)") from None
    try:
        return parse_nodes(conn.execute("CLUSTER", "NODES"))
    except redis.exceptions.ResponseError as exc:
        text = " ".join(str(exc).split())[:100]
        if isinstance(exc, redis.exceptions.NoPermissionError) or "no permissions" in text.lower():
            raise Denied(f"{conn.target.redacted}: finding the cluster's nodes needs CLUSTER SHARDS or CLUSTER NODES, "
                         f"which the server refused ({text}); list the nodes in a fleet file instead") from None
        raise NotRedis(f"{conn.target.redacted} did not answer CLUSTER NODES: {text}") from None


def node_target(seed: Target, host: str, port: int) -> Target:
    """A node as an ordinary Target: the seed's scheme and credentials at the node's address (db 0: a cluster has one).
    A node that never met another does not know its own IP (CLUSTER SHARDS/NODES give ""): that is the seed."""
    host = host or seed.host or ""
    shown = f"[{host}]" if ":" in host else host
    return dataclasses.replace(parse_target(f"{seed.scheme}://{shown}:{port}", env={}),
                               username=seed.username, password=seed.password, query=seed.query)


def members_of(seed: Target, nodes: list[ClusterNode], group: str | None = None) -> tuple[Member, ...]:
    """Primaries first (by address), each followed by its replicas; all in one group, named by the seed unless
    `group` is given, so the nodes of several clusters in one fleet never lump together."""
    group = group or seed_name(seed)
    by_primary: dict[str | None, list[ClusterNode]] = {}
    for n in nodes:
        by_primary.setdefault(n.primary_id if n.role == REPLICA else n.node_id, []).append(n)
    ordered: list[ClusterNode] = []
    for primary in sorted((n for n in nodes if n.role == PRIMARY), key=lambda n: (n.host, n.port)):
        ordered.append(primary)
        ordered += sorted((n for n in by_primary.get(primary.node_id, []) if n.role == REPLICA),
                          key=lambda n: (n.host, n.port))
    ordered += [n for n in nodes if n not in ordered]  # replicas of an unknown primary
    return tuple(Member(node_target(seed, n.host, n.port), n.role, name=f"{n.host or seed.host}:{n.port}", group=group,
                        slots=n.slots if n.role == PRIMARY else None, node_id=n.node_id, health=n.health)
                 for n in ordered)


def seed_name(seed: Target) -> str:
    """How a cluster is named in a table when nobody named it: its seed's address, never its credentials."""
    return seed.path or f"{seed.host}:{seed.port}"


def discover_cluster(
    seed: Target | tuple[Target, ...], *, connect_timeout_s: float = 10.0,
    connect: Callable[..., HeldConnection] = open_connection, group: str | None = None,
) -> Topology:
    """Ask one node for every node, trying the seeds in turn: a seed that is full, down or not a cluster node
    is one Problem and the next seed is asked (each gets an equal share of the connect timeout, at least 1 s).
    Nodes the cluster itself marks failed stay members: observing them gives their own error row."""
    seeds = seed if isinstance(seed, tuple) else (seed,)
    share = max(1.0, connect_timeout_s / len(seeds)) if len(seeds) > 1 else connect_timeout_s
    problems: list[Problem] = []
    for number, one in enumerate(seeds, start=1):
        try:
            with connect(one, connect_timeout_s=share) as conn:
                nodes = read_cluster_nodes(conn)
        except ConnguardError as err:
            if isinstance(err, BadTarget) and "not in cluster mode" in err.message:
                raise  # the seeds name one cluster: one that is not a cluster node answers for all of them
            if number == len(seeds):
                if not problems:
                    raise
                raise type(err)(f"no cluster seed answered: {'; '.join(p.message for p in problems)}; "
                                f"{err.message}") from None
            problems.append(Problem(f"seed {seed_name(one)}", err.message, "warning"))
            continue
        return Topology("cluster", one.redacted, members_of(one, nodes, group or seed_name(seeds[0])),
                        tuple(problems))
    raise AssertionError("unreachable: the loop returns or raises")


def is_cluster(conn: HeldConnection) -> bool:
    """INFO cluster says cluster_enabled:1."""
    return "cluster_enabled:1" in _text(conn.execute("INFO", "cluster"))
