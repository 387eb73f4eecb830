"""Parse the text of INFO (all sections) into sections and a typed ServerInfo."""

from __future__ import annotations

from typing import Mapping

from connguard.probe.model import ServerInfo


def parse_info_sections(text: str | bytes) -> dict[str, dict[str, str]]:
    """Split INFO text into {section: {field: raw value}}. Unknown sections and fields are kept."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("default", {})
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            current = sections.setdefault(line.lstrip("# ").strip().lower(), {})
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key] = value
    if not sections["default"]:
        del sections["default"]
    return sections


def _field(sections: Mapping[str, Mapping[str, str]], key: str) -> str | None:
    for fields in sections.values():
        if key in fields:
            return fields[key]
    return None


def _int(sections: Mapping[str, Mapping[str, str]], key: str) -> int | None:
    value = _field(sections, key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def server_info_from_sections(sections: Mapping[str, Mapping[str, str]]) -> ServerInfo:
    """Type the fields connguard depends on. Missing counters read as 0, missing facts as None."""
    server_name = _field(sections, "server_name")
    flavor = "valkey" if (server_name == "valkey" or _field(sections, "valkey_version")) else "redis"
    version = _field(sections, "valkey_version") if flavor == "valkey" else None
    version = version or _field(sections, "redis_version") or "unknown"
    return ServerInfo(
        flavor=flavor,
        version=version,
        role=_field(sections, "role") or "unknown",
        process_id=_int(sections, "process_id"),
        tcp_port=_int(sections, "tcp_port"),
        uptime_s=_int(sections, "uptime_in_seconds"),
        cluster_enabled=_int(sections, "cluster_enabled") == 1,
        connected_clients=_int(sections, "connected_clients") or 0,
        connected_slaves=_int(sections, "connected_slaves") or 0,
        cluster_connections=_int(sections, "cluster_connections") or 0,
        blocked_clients=_int(sections, "blocked_clients") or 0,
        maxclients=_int(sections, "maxclients"),
        total_connections_received=_int(sections, "total_connections_received") or 0,
        rejected_connections=_int(sections, "rejected_connections") or 0,
        pubsub_clients=_int(sections, "pubsub_clients"),
        executable=_field(sections, "executable"),
        config_file=_field(sections, "config_file"),
        sections=sections,
    )


def parse_info(text: str | bytes) -> ServerInfo:
    return server_info_from_sections(parse_info_sections(text))
