"""Crowds of raw-socket clients from loopback aliases, standing in for application hosts."""

from __future__ import annotations

import select
import socket
import threading
from dataclasses import dataclass, field

from connguard.lab.servers import resp_command

from connguard.wire import MAXCLIENTS_MESSAGE_BYTES as REFUSED_MARKER
from connguard.settings import CROWD_CONNECT_TIMEOUT_S


@dataclass
class ClientGroup:
    """Sockets opened together from one source address, with one behaviour."""

    source: str
    kind: str  # idle | active | blocked | pubsub
    name: str | None
    sockets: list[socket.socket] = field(default_factory=list)
    refused: int = 0


class Crowd:
    """Opens, drives and closes many raw connections to one server. Close it, or use `with`."""

    def __init__(self, host: str, port: int, password: str | None = None, connect_timeout_s: float = CROWD_CONNECT_TIMEOUT_S) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.connect_timeout_s = connect_timeout_s
        self.groups: list[ClientGroup] = []
        self._active_stop = threading.Event()
        self._active_thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- opening ---------------------------------------------------------------------------
    def open(
        self,
        count: int,
        *,
        source: str = "127.0.0.1",
        kind: str = "idle",
        name: str | None = None,
        lib_name: str | None = None,
        key: str = "connguard:lab:empty",
    ) -> ClientGroup:
        """Open `count` connections from `source`. Each is confirmed admitted before it counts;
        refusals (server full) are tallied in `group.refused` and their sockets closed."""
        if kind not in {"idle", "active", "blocked", "pubsub"}:
            raise ValueError(f"unknown client kind {kind!r}")
        group = ClientGroup(source=source, kind=kind, name=name)
        pending: list[socket.socket] = []
        for _ in range(count):
            try:
                sock = socket.create_connection(
                    (self.host, self.port), timeout=self.connect_timeout_s, source_address=(source, 0)
                )
            except OSError:
                group.refused += 1
                continue
            handshake = b""
            if self.password:
                handshake += resp_command("AUTH", self.password)
            if name:
                handshake += resp_command("CLIENT", "SETNAME", name)
            if lib_name:
                handshake += resp_command("CLIENT", "SETINFO", "LIB-NAME", lib_name)
            handshake += resp_command("PING")
            try:
                sock.sendall(handshake)
            except OSError:
                sock.close()
                group.refused += 1
                continue
            pending.append(sock)
        expected_replies = 1 + bool(self.password) + bool(name) + bool(lib_name)
        for sock in pending:
            if self._confirm(sock, expected_replies):
                group.sockets.append(sock)
            else:
                sock.close()
                group.refused += 1
        for sock in group.sockets:
            if kind == "blocked":
                sock.sendall(resp_command("BLPOP", key, "0"))
            elif kind == "pubsub":
                sock.sendall(resp_command("SUBSCRIBE", f"connguard:lab:{source}"))
        if kind == "pubsub":
            for sock in group.sockets:
                _drain(sock)
        with self._lock:
            self.groups.append(group)
        if kind == "active":
            self._ensure_active_thread()
        return group

    def _confirm(self, sock: socket.socket, replies: int) -> bool:
        """Read the handshake replies; a refusal or a closed socket means not admitted."""
        data = b""
        sock.settimeout(self.connect_timeout_s)
        try:
            while data.count(b"\r\n") < replies:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
                if REFUSED_MARKER in data:
                    return False
        except OSError:
            return False
        return b"+PONG" in data

    # -- driving ---------------------------------------------------------------------------
    def _ensure_active_thread(self, interval_s: float = 0.5) -> None:
        if self._active_thread is not None:
            return
        self._active_thread = threading.Thread(target=self._keep_active, args=(interval_s,), daemon=True)
        self._active_thread.start()

    def _keep_active(self, interval_s: float) -> None:
        while not self._active_stop.wait(interval_s):
            with self._lock:
                socks = [s for g in self.groups if g.kind == "active" for s in g.sockets]
            self.ping(socks)

    @staticmethod
    def ping(socks: list[socket.socket]) -> None:
        """One PING on each socket, replies read, so their idle time resets."""
        alive = []
        for sock in socks:
            try:
                sock.sendall(resp_command("PING"))
                alive.append(sock)
            except OSError:
                continue
        for sock in alive:
            _drain(sock)

    # -- closing ---------------------------------------------------------------------------
    def close_group(self, group: ClientGroup) -> None:
        with self._lock:
            if group in self.groups:
                self.groups.remove(group)
        for sock in group.sockets:
            sock.close()
        group.sockets.clear()

    def close(self) -> None:
        self._active_stop.set()
        if self._active_thread is not None:
            self._active_thread.join(timeout=5)
            self._active_thread = None
        with self._lock:
            groups, self.groups = self.groups, []
        for group in groups:
            for sock in group.sockets:
                sock.close()
            group.sockets.clear()

    @property
    def connected(self) -> int:
        with self._lock:
            return sum(len(g.sockets) for g in self.groups)

    def __enter__(self) -> "Crowd":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def admit(
    host: str,
    port: int,
    *,
    source: str = "127.0.0.1",
    password: str | None = None,
    name: str | None = None,
    timeout_s: float = 2.0,
) -> socket.socket | None:
    """One connection attempt from `source`: the socket if the server admitted it (PING answered),
    None if it refused (max number of clients) or the attempt failed otherwise."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s, source_address=(source, 0))
    except OSError:
        return None
    handshake = resp_command("AUTH", password) if password else b""
    if name:
        handshake += resp_command("CLIENT", "SETNAME", name)
    handshake += resp_command("PING")
    replies = 1 + bool(password) + bool(name)
    data = b""
    try:
        sock.sendall(handshake)
        while data.count(b"\r\n") < replies and REFUSED_MARKER not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    if REFUSED_MARKER in data or b"+PONG" not in data:
        sock.close()
        return None
    return sock


def _drain(sock: socket.socket, timeout_s: float = 2.0) -> bytes:
    """Read whatever one reply brings, waiting at most `timeout_s` for the first byte."""
    try:
        ready, _, _ = select.select([sock], [], [], timeout_s)
        if ready:
            return sock.recv(65536)
    except (OSError, ValueError):
        pass
    return b""
