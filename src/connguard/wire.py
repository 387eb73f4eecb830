"""Facts of the wire that several layers recognise: the server's max-clients refusal and connguard's own client name.

One home, imported by the target, the probe, the guard, the lab and the remedies, so the copies cannot drift."""

from __future__ import annotations

MAXCLIENTS_MESSAGE = "max number of clients"  # the stable part of `-ERR max number of clients reached`
MAXCLIENTS_MESSAGE_BYTES = MAXCLIENTS_MESSAGE.encode()
CLIENT_NAME = "connguard"  # CLIENT SETNAME of every connection a connguard tool holds
