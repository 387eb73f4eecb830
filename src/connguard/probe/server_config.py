"""Read the settings the doctor's advice must respect (CONFIG GET timeout tcp-keepalive) and, in cluster mode,
the other nodes' hosts (CLUSTER NODES): each may be denied by an ACL, and then stays unknown."""

from __future__ import annotations

from typing import Any, Protocol

import redis

from connguard.probe.model import ServerConfig


class Executor(Protocol):
    def execute(self, *args: Any) -> Any: ...


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_config_reply(reply: object) -> dict[str, str]:
    """CONFIG GET's flat [name, value, ...] list (RESP2) or map (RESP3) as {name: value}."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    if isinstance(reply, (list, tuple)):
        items = [_text(x) for x in reply]
        return dict(zip(items[::2], items[1::2]))
    return {}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_cluster_nodes(text: str) -> dict[str, str]:
    """{host: role} of every node but this one (`myself`), from CLUSTER NODES' `ip:port@bus` column."""
    nodes: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or "myself" in fields[2] or "noaddr" in fields[2]:
            continue
        host = fields[1].split("@", 1)[0].rsplit(":", 1)[0].strip("[]")
        if host:
            role = "primary" if "master" in fields[2] else "replica"
            nodes[host] = role if nodes.get(host) in (None, role) else "primary, replica"
    return nodes


def read_server_config(conn: Executor, *, cluster: bool) -> ServerConfig | None:
    """None when CONFIG GET is denied and there is no cluster to ask about."""
    settings: dict[str, str] = {}
    try:
        settings = parse_config_reply(conn.execute("CONFIG", "GET", "timeout"))
        settings.update(parse_config_reply(conn.execute("CONFIG", "GET", "tcp-keepalive")))
    except redis.exceptions.ResponseError:
        pass  # denied: the advice then says what it would check
    nodes: dict[str, str] = {}
    if cluster:
        try:
            nodes = parse_cluster_nodes(_text(conn.execute("CLUSTER", "NODES")))
        except redis.exceptions.ResponseError:
            pass
    if not settings and not nodes:
        return None
    return ServerConfig(timeout_s=_int(settings.get("timeout")), tcp_keepalive_s=_int(settings.get("tcp-keepalive")),
                        cluster_nodes=nodes)


def server_config_to_dict(config: ServerConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    return {"timeout_s": config.timeout_s, "tcp_keepalive_s": config.tcp_keepalive_s,
            "cluster_nodes": dict(config.cluster_nodes)}


def server_config_from_dict(data: Any) -> ServerConfig | None:
    """Back from a recording; anything malformed reads as not known (a recording never fails on it)."""
    if not isinstance(data, dict):
        return None

    def number(key: str) -> int | None:
        value = data.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    nodes = data.get("cluster_nodes")
    nodes = {str(k): str(v) for k, v in nodes.items()} if isinstance(nodes, dict) else {}
    return ServerConfig(timeout_s=number("timeout_s"), tcp_keepalive_s=number("tcp_keepalive_s"), cluster_nodes=nodes)
