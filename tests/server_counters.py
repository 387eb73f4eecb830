"""Counters read from a real server, shared by the guard tests."""

from __future__ import annotations

import redis


def server_attempts(monitor: redis.Redis) -> int:
    """Every connection the server saw: admitted (total_connections_received) plus refused (rejected_connections)."""
    stats = monitor.info("stats")
    return stats["total_connections_received"] + stats["rejected_connections"]
