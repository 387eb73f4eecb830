"""The members a discovery finds: each an ordinary Target with its role, plus one-line Problems."""

from __future__ import annotations

from dataclasses import dataclass

from connguard.target_url import Target

PRIMARY, REPLICA, SENTINEL, TARGET = "primary", "replica", "sentinel", "target"


@dataclass(frozen=True)
class Member:
    """One server to observe. `target` carries the password; every display goes through `label`/`redacted`."""

    target: Target
    role: str = TARGET  # primary | replica | sentinel | target (a fleet line whose role is not discovered)
    name: str | None = None  # from the fleet file; for cluster nodes the first 8 characters of the node id
    group: str | None = None  # fleet file group, or the master name / "cluster"
    slots: int | None = None  # hash slots served (cluster primaries)
    node_id: str | None = None
    health: str | None = None  # what the topology itself says: online, failed, s_down, ...
    line: int | None = None  # fleet file line

    @property
    def redacted(self) -> str:
        return self.target.redacted

    @property
    def label(self) -> str:
        return self.name or self.redacted

    @property
    def endpoint(self) -> str:
        """host:port (or the socket path), never credentials: how a node is named in one-line problems."""
        t = self.target
        return t.path or f"{t.host}:{t.port}"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role, "group": self.group, "target": self.redacted,
                "slots": self.slots, "node_id": self.node_id, "health": self.health, "line": self.line}


@dataclass(frozen=True)
class Problem:
    """Something that did not become a member (a bad fleet line, a Sentinel that did not answer): one line."""

    where: str  # "line 4", "node 127.0.0.1:7001", "sentinel 127.0.0.1:26379"
    message: str  # already free of passwords
    status: str = "unknown"  # what it does to the fleet's status: a bad line is unknown, a dead Sentinel a warning

    def line(self) -> str:
        return f"connguard: {self.where}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "error": self.message, "status": self.status}


@dataclass(frozen=True)
class Topology:
    """What one source resolved to. `kind`: sentinel | cluster | fleet | single."""

    kind: str
    source: str  # redacted
    members: tuple[Member, ...]
    problems: tuple[Problem, ...] = ()

    def selected(self, all_members: bool) -> tuple[Member, ...]:
        """Sentinel: the primary only unless `all_members`; every other kind: everything."""
        if self.kind != "sentinel" or all_members:
            return self.members
        return tuple(m for m in self.members if m.role == PRIMARY)
