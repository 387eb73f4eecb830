"""Ask the Sentinels of a `redis+sentinel://` URL for the primary, its replicas and each other.

Sentinels are asked in the URL's order over one short-lived connection each (the same `open_connection` the
rest of connguard holds, so a full Sentinel is ridden out and named like any server). The first Sentinel that
knows the master answers for the topology; the others' mistakes become one-line Problems."""

from __future__ import annotations

from typing import Any, Callable

import redis

from connguard.discovery.model import PRIMARY, REPLICA, SENTINEL, Member, Problem, Topology
from connguard.discovery.sentinel_url import SentinelSpec
from connguard.errors import AuthFailed, BadTarget, ConnguardError, Unreachable
from connguard.target import HeldConnection, Target, open_connection


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def pairs(reply: Any) -> dict[str, str]:
    """A RESP2 flat [k1, v1, k2, v2, ...] reply (SENTINEL MASTER/REPLICAS entries) as a dict of strings."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    items = list(reply or [])
    return {_text(items[i]): _text(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def _where(t: Target) -> str:
    return f"sentinel {t.host}:{t.port}"


def _short(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _health(flags: str) -> str:
    """Sentinel's flags for an instance, reduced to what a person needs: online, s_down, o_down, disconnected."""
    found = [f for f in ("o_down", "s_down", "disconnected") if f in flags.split(",")]
    return found[0] if found else "online"


def _instances(conn: HeldConnection, what: str, master: str) -> list[dict[str, str]]:
    try:
        reply = conn.execute("SENTINEL", what, master)
    except redis.exceptions.ResponseError:
        if what != "REPLICAS":
            raise
        reply = conn.execute("SENTINEL", "SLAVES", master)  # before 5.0
    return [pairs(entry) for entry in reply or []]


def read_topology(conn: HeldConnection, spec: SentinelSpec, asked: Target) -> tuple[Member, ...] | None:
    """What one Sentinel says: None when it does not know the master. Raises ResponseError (IDONTKNOW ...)."""
    addr = conn.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", spec.master_name)
    if not addr:
        return None
    group = spec.master_name
    master = pairs(conn.execute("SENTINEL", "MASTER", spec.master_name))
    members = [Member(spec.node_target(_text(addr[0]), int(addr[1])), PRIMARY, group=group,
                      health=_health(master.get("flags", "")))]
    for rep in _instances(conn, "REPLICAS", spec.master_name):
        members.append(Member(spec.node_target(rep["ip"], int(rep["port"])), REPLICA, group=group,
                              health=_health(rep.get("flags", ""))))
    sentinels = [(asked, "online")]
    for other in _instances(conn, "SENTINELS", spec.master_name):
        sentinels.append((spec.sentinel_target(other["ip"], int(other["port"]), asked), _health(other.get("flags", ""))))
    sentinels += [(t, None) for t in spec.sentinels]  # the URL's own, even if the others never heard of them
    seen: set[tuple[object, ...]] = set()
    for target, health in sentinels:
        key = (target.host, target.port)
        if key not in seen:
            seen.add(key)
            members.append(Member(target, SENTINEL, group=group, health=health))
    return tuple(members)


def known_masters(conn: HeldConnection) -> list[str]:
    """The master names this Sentinel monitors (SENTINEL MASTERS), to say which names would have worked."""
    try:
        return [pairs(entry).get("name", "?") for entry in conn.execute("SENTINEL", "MASTERS") or []]
    except redis.exceptions.ResponseError:
        return []


def sentinel_auth_hint(asked: Target, err: AuthFailed | None) -> str:
    """A Sentinel refused us: the fix is ?sentinel_password= (the data nodes' password is not sent to Sentinels)."""
    if asked.password is not None and err is not None and "rejected" in err.message:
        return (f"sentinel {asked.host}:{asked.port} rejected ?sentinel_username=/?sentinel_password= "
                "(check them; the data nodes' password in the URL is never sent to Sentinels)")
    return ("the Sentinels require a password: add ?sentinel_password=... (and ?sentinel_username=... for an "
            "ACL user) to the URL; the data nodes' password is never sent to Sentinels")


def refusal(text: str, where: str, master: str) -> tuple[str, Problem]:
    """A Sentinel's error reply, judged: `idontknow` (it has not heard enough yet: ask another), `unknown`
    (no such master) or `not_sentinel` (the port is something else)."""
    if text.upper().startswith("IDONTKNOW"):
        return "idontknow", Problem(where, f"answered -IDONTKNOW for master {master!r}", "warning")
    if "no such master" in text.lower():
        return "unknown", Problem(where, f"does not know a master named {master!r}", "warning")
    return "not_sentinel", Problem(where, f"is not a Sentinel (SENTINEL answered {_short(text)!r})", "warning")


def discover_sentinel(
    spec: SentinelSpec, *, connect_timeout_s: float = 10.0,
    connect: Callable[..., HeldConnection] = open_connection,
) -> Topology:
    """The primary, replicas and Sentinels of `spec.master_name`. Raises a ConnguardError (exit 3) when no
    Sentinel can say: all unreachable, the master name unknown to all, or `-IDONTKNOW` from all."""
    problems: list[Problem] = []
    unknown: list[str] = []
    dont_know: list[str] = []
    auth: list[str] = []
    known: set[str] = set()
    for asked in spec.sentinels:
        where = _where(asked)
        try:
            # The data nodes' password is never tried here: a secret goes only where the URL sends it.
            with connect(asked, connect_timeout_s=connect_timeout_s) as conn:
                members = read_topology(conn, spec, asked)
                if members is None:
                    known.update(known_masters(conn))
        except AuthFailed as err:
            auth.append(where)
            problems.append(Problem(where, f"auth failed: {sentinel_auth_hint(asked, err)}", "warning"))
            continue
        except ConnguardError as err:  # the others may still answer; one Sentinel fewer is a warning
            problems.append(Problem(where, err.message, "warning"))
            continue
        except redis.exceptions.ResponseError as exc:
            verdict, problem = refusal(str(exc), where, spec.master_name)
            (dont_know if verdict == "idontknow" else unknown if verdict == "unknown" else []).append(where)
            problems.append(problem)
            continue
        if members is None:
            unknown.append(where)
            problems.append(Problem(where, f"does not know a master named {spec.master_name!r}", "warning"))
            continue
        return Topology("sentinel", spec.redacted, members, tuple(problems))
    if dont_know:
        raise Unreachable(
            f"{spec.redacted}: the Sentinels answered -IDONTKNOW (not enough information about "
            f"{spec.master_name!r} yet): ask again in a few seconds, or ask another Sentinel")
    if unknown:
        names = f"the Sentinels know {', '.join(sorted(known))}" if known else "the Sentinels know no master"
        raise BadTarget(f"{spec.redacted}: no Sentinel knows a master named {spec.master_name!r} "
                        f"(asked {', '.join(w.removeprefix('sentinel ') for w in unknown)}; {names}): "
                        "check the name in the URL")
    if auth and len(auth) == len(problems):
        raise AuthFailed(f"{spec.redacted}: {sentinel_auth_hint(spec.sentinels[0], None)}")
    raise Unreachable(f"{spec.redacted}: no Sentinel could name the primary: "
                      + "; ".join(p.message if p.message.startswith(("redis", "unix")) else f"{p.where} {p.message}"
                                  for p in problems))


def masters_if_sentinel(conn: HeldConnection) -> tuple[str, ...] | None:
    """None for a data node; for a Sentinel, the masters it monitors as `name (host:port)`, so a status that
    landed on a Sentinel's port can say what it is and which URL reaches the data."""
    try:
        if "redis_mode:sentinel" not in _text(conn.execute("INFO", "server")):
            return None
        entries = [pairs(entry) for entry in conn.execute("SENTINEL", "MASTERS") or []]
    except redis.exceptions.ResponseError:
        return None
    return tuple(f"{e.get('name', '?')} ({e.get('ip', '?')}:{e.get('port', '?')})" for e in entries)


def sentinel_note(target: Target, masters: tuple[str, ...]) -> str:
    """One clause for `status`: this port is a Sentinel, what it monitors, and the URL for the data."""
    if not masters:
        return "this is a Sentinel, and it monitors no master"
    first = masters[0].split(" ", 1)[0]
    return (f"this is a Sentinel monitoring {', '.join(masters)}: for the data nodes use "
            f"redis+sentinel://{_host(target)}:{target.port}/{first}")


def _host(t: Target) -> str:
    return f"[{t.host}]" if t.host and ":" in t.host else (t.host or "")


def current_primary(spec: SentinelSpec, *, connect_timeout_s: float = 10.0,
                    connect: Callable[..., HeldConnection] = open_connection) -> Target:
    """The primary the Sentinels name now, as an ordinary Target with the data nodes' credentials: how the
    single-server commands (watch, kill, config) take a redis+sentinel:// URL."""
    topology = discover_sentinel(spec, connect_timeout_s=connect_timeout_s, connect=connect)
    return next(m.target for m in topology.members if m.role == PRIMARY)
