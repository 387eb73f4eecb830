"""Learn that a full server has room again over a connection the pools already hold, not by opening new ones.

While an endpoint's breaker is open because the server refused for maxclients, every attempt to find out whether it
has room again is itself a refused connection, and the breaker's timer makes the process notice late (up to one open
period). But a process whose pools still hold live connections to that server can simply ask: `INFO clients` (and
`INFO replication`, for the replicas that take slots too) over one of them says how many slots are used out of
maxclients. So, while the breaker is open for refusals, a checkout that got a live connection from its pool asks at
most every ROOM_CHECK_EVERY_S, before the caller's command:

- room (used < maxclients): the breaker closes at once, as a successful probe would close it (faster recovery);
- still full: a probe that falls due is skipped, the server being known full (fewer refused attempts). With no
  fresh reading (no pool has a live connection, or none was checked out lately) the breaker's timer probes as before.

Servers whose INFO has no maxclients (before 6.2) or that deny INFO give no reading: the timer alone decides.
"""

from __future__ import annotations

import time
from typing import Any

from redis.exceptions import ResponseError

from connguard.probe.info import parse_info_sections
from connguard.probe.model import used_of

ROOM_CHECK_EVERY_S = 0.02  # a round trip on a held connection (no new socket), at most 50 a second per endpoint, only while open
FRESH_S = 1.0  # a "still full" reading younger than this stands in for a probe
_COMMANDS = (("INFO", "clients"), ("INFO", "replication"))


def room_of(replies: list[Any]) -> bool | None:
    """True when INFO says used < maxclients, False when full, None when it does not say (no maxclients field)."""
    fields: dict[str, str] = {}
    for reply in replies:
        if isinstance(reply, (bytes, str)):
            for section in parse_info_sections(reply).values():
                fields.update(section)
    try:
        maxclients = int(fields["maxclients"])
    except (KeyError, ValueError):
        return None
    return used_of(fields) < maxclients


class RoomWatch:
    """Per endpoint: the latest reading, and whose turn it is to take the next one. Only acts while the breaker is
    open for refusals (`watching`); the pools' hot path reads that one attribute."""

    def __init__(self) -> None:
        self.watching = False
        self.checked_at = float("-inf")
        self.room: bool | None = None
        self.checks_total = 0  # INFO round trips made over held connections
        self.room_seen_total = 0  # readings that found room while the breaker was open

    def start(self) -> None:
        """The breaker opened on a refusal: a reading from before says nothing about now."""
        self.room, self.checked_at, self.watching = None, float("-inf"), True

    def stop(self) -> None:
        self.watching = False
        self.room = None

    def claim(self) -> bool:
        """Whether this checkout should ask now. Claimed by stamping the time first, so concurrent checkouts do not
        all ask (a lost race costs one extra INFO, never a connection)."""
        now = time.monotonic()
        if now - self.checked_at < ROOM_CHECK_EVERY_S:
            return False
        self.checked_at = now
        return True

    def knows_full(self) -> bool:
        return self.watching and self.room is False and time.monotonic() - self.checked_at < FRESH_S

    def record(self, room: bool | None) -> bool:
        """Store a reading; True when it says room has returned."""
        self.checks_total += 1
        self.room = room
        if room:
            self.room_seen_total += 1
        return bool(room)


def ask_sync(conn: Any) -> bool | None:
    """INFO clients + INFO replication over a checked-out, connected, clean sync connection (one round trip).
    Every reply is read, an error reply (an ACL denying INFO) included, so the connection is left clean."""
    conn.send_packed_command(conn.pack_commands(_COMMANDS))
    replies = []
    for _ in _COMMANDS:
        try:
            replies.append(conn.read_response())
        except ResponseError:
            replies.append(None)
    return room_of(replies)


async def ask_async(conn: Any) -> bool | None:
    await conn.send_packed_command(conn.pack_commands(_COMMANDS))
    replies = []
    for _ in _COMMANDS:
        try:
            replies.append(await conn.read_response())
        except ResponseError:
            replies.append(None)
    return room_of(replies)
