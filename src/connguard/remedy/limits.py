"""The maxclients a file-descriptor limit allows, and the checks before CONFIG SET maxclients/timeout."""

from __future__ import annotations

from dataclasses import dataclass

from connguard.analysis.capacity import RESERVED_FDS


def max_clients_for_fd_limit(fd_limit: int) -> int:
    return max(0, fd_limit - RESERVED_FDS)


def fd_limit_for_maxclients(maxclients: int, margin: int = 0) -> int:
    return maxclients + RESERVED_FDS + margin


@dataclass(frozen=True)
class ConfigCheck:
    """Whether a CONFIG SET may go ahead, and why (or why not)."""

    allowed: bool
    reason: str


def check_maxclients(new: int, *, used: int, fd_limit: int | None) -> ConfigCheck:
    if new < 1:
        return ConfigCheck(False, f"maxclients must be at least 1, got {new}")
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
