"""The maxclients a file-descriptor limit allows, the checks before CONFIG SET maxclients/timeout, and the
CONFIG GET/SET themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import redis

from connguard.analysis.capacity import RESERVED_FDS

# Slots kept free for people and tools (redis-cli, exporters, connguard itself): a maxclients below
# used + this locks out every new connection, the next connguard run included.
DEFAULT_RESERVE = 10


def max_clients_for_fd_limit(fd_limit: int) -> int:
    return max(0, fd_limit - RESERVED_FDS)


def fd_limit_for_maxclients(maxclients: int, margin: int = 0) -> int:
    return maxclients + RESERVED_FDS + margin


@dataclass(frozen=True)
class ConfigCheck:
    """Whether a CONFIG SET may go ahead, and why (or why not)."""

    allowed: bool
    reason: str


def check_maxclients(new: int, *, used: int, fd_limit: int | None, reserve: int = DEFAULT_RESERVE,
                     force: bool = False) -> ConfigCheck:
    if new < 1:
        return ConfigCheck(False, f"maxclients must be at least 1, got {new}")
    if new < used + reserve and not force:
        return ConfigCheck(
            False,
            f"{new} leaves no room: {used} connections are in use, and below {used} + {reserve} (a reserve for "
            "people and tools) every new connection is refused, redis-cli and connguard's next run included; "
            "free connections first, or add --force if that is what you want",
        )
    if fd_limit is not None and new > max_clients_for_fd_limit(fd_limit):
        return ConfigCheck(
            False,
            f"the server's fd limit is {fd_limit}, which allows at most maxclients "
            f"{max_clients_for_fd_limit(fd_limit)} ({fd_limit} - {RESERVED_FDS}); raise `ulimit -n` "
            f"(LimitNOFILE) to at least {fd_limit_for_maxclients(new)} and restart first",
        )
    if new < used:
        return ConfigCheck(
            True,
            f"{new} is below the {used} connections in use: nobody is disconnected, but every new "
            "connection is refused until usage falls under it",
        )
    if fd_limit is None:
        return ConfigCheck(True, "fd limit unknown (server on another host): the server itself refuses values it cannot serve")
    return ConfigCheck(True, f"within the fd limit {fd_limit} (allows up to {max_clients_for_fd_limit(fd_limit)})")


def check_timeout(new: int) -> ConfigCheck:
    if new < 0:
        return ConfigCheck(False, f"timeout must be >= 0 seconds, got {new}")
    if new == 0:
        return ConfigCheck(True, "timeout 0 turns the idle timeout off")
    if new < 60:
        return ConfigCheck(
            False, f"timeout {new}s would cut healthy pooled connections; use 60 s or more (the runbook uses 300)"
        )
    return ConfigCheck(
        True,
        f"closes clients idle over {new}s; it never closes pub/sub, blocked, MONITOR or replica connections",
    )


class Executor(Protocol):
    def execute(self, *args: Any) -> Any: ...


@dataclass(frozen=True)
class ConfigRead:
    value: int | None
    denied: str | None  # why CONFIG GET failed (an ACL), else None


def read_config(conn: Executor, setting: str) -> ConfigRead:
    try:
        reply = conn.execute("CONFIG", "GET", setting)
    except redis.exceptions.ResponseError as exc:
        return ConfigRead(None, " ".join(str(exc).split())[:120])
    try:
        return ConfigRead(int(reply[1]), None)
    except (IndexError, TypeError, ValueError):
        return ConfigRead(None, f"CONFIG GET {setting} returned nothing")


class ConfigSetRefused(Exception):
    """The server refused CONFIG SET (ACL, or a value it cannot serve); the message is the server's."""


def apply_config(conn: Executor, setting: str, value: int) -> None:
    """CONFIG SET one setting. Lasts until restart: the caller says so (CONFIG REWRITE / redis.conf)."""
    try:
        conn.execute("CONFIG", "SET", setting, str(value))
    except redis.exceptions.ResponseError as exc:
        raise ConfigSetRefused(" ".join(str(exc).split())) from None
