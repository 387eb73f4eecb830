"""Open the one connection a tool holds for its whole run, and classify why one could not be opened.

The URL half (parsing, `Target`, redaction, endpoint identity) is `connguard.target_url`."""

from __future__ import annotations

import errno
import random
import select
import socket
import ssl
import time
from typing import Any, Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from connguard import __version__
from connguard.wire import CLIENT_NAME, MAXCLIENTS_MESSAGE
from connguard.errors import AuthFailed, ConnguardError, Denied, NotRedis, ServerFull, Unreachable
from connguard.settings import CONNECT_TIMEOUT_S
# The URL half lives in target_url (no redis-py); re-exported so `from connguard.target import Target` keeps working.
from connguard.target_url import (  # noqa: F401
    CERT_REQS,
    DEFAULT_URL,
    QUERY_OPTIONS,
    SCHEMES,
    TLS_FILES,
    Target,
    insecure,
    parse_target,
    verification_off,
)


class MaxClientsRefused(redis.exceptions.ConnectionError):
    """The server answered `max number of clients reached` and closed the socket."""


class _RefusalAware:
    """Mixin: notice the refusal a full server sends before any command, without waiting for it.

    A full server accepts, writes `-ERR max number of clients reached` and closes. A healthy one says nothing until
    asked, so waiting for a word on every connect would tax every run. Instead: one look that does not wait right
    after the TCP connect, and one more look at whatever the server had sent just before redis-py closes a socket
    that failed in the handshake (a reset on a second write can reach redis-py before the refusal is read; the
    refusal is still queued ahead of the reset). Either look raises or records MaxClientsRefused."""

    _cg_refusal: str | None = None

    def _connect(self):  # type: ignore[no-untyped-def]
        self._cg_refusal = None
        sock = super()._connect()  # type: ignore[misc]
        if isinstance(sock, ssl.SSLSocket):
            return sock  # over TLS a full server writes nothing and just closes
        refusal = _refusal_in(sock)
        if refusal is not None:
            sock.close()
            raise MaxClientsRefused(refusal)
        return sock

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None and self._cg_refusal is None and not isinstance(sock, ssl.SSLSocket):
            self._cg_refusal = _refusal_in(sock)
        super().disconnect(*args, **kwargs)  # type: ignore[misc]


def _refusal_in(sock: socket.socket) -> str | None:
    """The refusal text if the server has sent it (left unread), else None. Never waits."""
    raw = getattr(sock, "_sock", sock)
    try:
        # poll, not select: select() cannot watch a descriptor numbered 1024 or more, which a process holding
        # many connections (a fleet run, the exporter) reaches.
        poller = select.poll()
        poller.register(raw, select.POLLIN)
        if not poller.poll(0):
            return None
        early = raw.recv(256, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (OSError, ValueError):
        return None
    if MAXCLIENTS_MESSAGE.encode() in early:
        return early.decode(errors="replace").strip().lstrip("-")
    return None


class _Conn(_RefusalAware, redis.Connection):
    pass


TLS_FIRST_WAIT_S = 1.0  # a TLS server answers a ClientHello in milliseconds; a plain one never does


class PlainNotTls(redis.exceptions.ConnectionError):
    """rediss:// reached a server that speaks plain RESP."""


class TlsClosedInHandshake(redis.exceptions.ConnectionError):
    """The server closed (EOF or reset) before the TLS handshake completed. A full Redis does exactly this
    (it checks maxclients before it accepts the TLS connection, docs/redis-facts.md); a close *after* a completed
    handshake is something else (a refused client certificate, a kill) and is not raised as this."""


def _closed_in_handshake(exc: BaseException) -> bool:
    low = str(exc).lower()
    return isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError)) or (
        "eof" in low or "reset" in low or "closed" in low)


SNIFF_TIMEOUT_S = 2.0  # a loaded machine may take a while to answer even a one-line request


def sniff(host: str, port: int, timeout_s: float = SNIFF_TIMEOUT_S) -> bytes | None:
    """What a TCP port says to an inline `PING`: RESP starts with + or -, HTTP with HTTP/ or <, TLS with 0x15.
    None when it says nothing in time. Used only to name a failed handshake precisely."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64)
    except OSError:
        return None


class _TlsPatience:
    """Mixin: a plain server never answers a TLS ClientHello, so after a short wait ask the port in
    plain RESP; if it answers, fail at once (rediss:// to a plain server), else wait the full timeout."""

    def _connect(self):  # type: ignore[no-untyped-def]
        sock = redis.Connection._connect(self)  # type: ignore[arg-type]
        sock.settimeout(min(TLS_FIRST_WAIT_S, self.socket_timeout or TLS_FIRST_WAIT_S))  # type: ignore[attr-defined]
        try:
            ssock = self._wrap_socket_with_ssl(sock)  # type: ignore[attr-defined]
        except TimeoutError:
            sock.close()
            reply = sniff(self.host, self.port)  # type: ignore[attr-defined]
            if reply and reply[:1] in (b"+", b"-"):
                raise PlainNotTls("the server speaks plain RESP, not TLS") from None
            sock = redis.Connection._connect(self)  # type: ignore[arg-type]
            try:
                ssock = self._wrap_socket_with_ssl(sock)  # type: ignore[attr-defined]
            except (OSError, redis.exceptions.RedisError) as exc:
                sock.close()
                if isinstance(exc, OSError) and _closed_in_handshake(exc):
                    raise TlsClosedInHandshake(f"closed during the TLS handshake ({exc})") from None
                raise
        except (OSError, redis.exceptions.RedisError) as exc:
            sock.close()
            if isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and _closed_in_handshake(exc):
                raise TlsClosedInHandshake(f"closed during the TLS handshake ({exc})") from None
            raise
        ssock.settimeout(self.socket_timeout)  # type: ignore[attr-defined]
        return ssock


class _SSLConn(_RefusalAware, _TlsPatience, redis.SSLConnection):
    pass


class _UnixConn(_RefusalAware, redis.UnixDomainSocketConnection):
    pass


def _lib_info() -> dict[str, Any]:
    """CLIENT SETINFO lib-name/lib-ver: redis-py 8 takes a DriverInfo (lib_name= is deprecated there)."""
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis-py < 8
        return {"lib_name": CLIENT_NAME, "lib_version": __version__}
    return {"driver_info": DriverInfo(name=CLIENT_NAME, lib_version=__version__)}


def _connection_for(target: Target, socket_timeout_s: float, *, named: bool = True) -> redis.connection.AbstractConnection:
    # Unnamed: an ACL that allows INFO but not CLIENT SETNAME must not lock connguard out (SETINFO
    # is skipped too, since redis-py only sends it to a connection it could name).
    naming: dict[str, Any] = dict(client_name=CLIENT_NAME, **_lib_info()) if named else (
        {"driver_info": None} if "driver_info" in _lib_info() else {"lib_name": None, "lib_version": None})
    common: dict[str, Any] = dict(
        db=target.db,
        username=target.username,
        password=target.password,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=min(socket_timeout_s, 5.0),
        **naming,
        protocol=2,
        retry=Retry(NoBackoff(), 0),  # connguard does its own, slower, jittered retry
    )
    if target.scheme == "unix":
        return _UnixConn(path=target.path, **common)
    if target.tls:
        q = target.query
        return _SSLConn(
            host=target.host, port=target.port, ssl_cert_reqs=q.get("ssl_cert_reqs", "required").lower(),
            ssl_ca_certs=q.get("ssl_ca_certs"), ssl_ca_path=q.get("ssl_ca_path"), ssl_certfile=q.get("ssl_certfile"),
            ssl_keyfile=q.get("ssl_keyfile"), **common,
        )
    return _Conn(host=target.host, port=target.port, **common)


_CLOSED_AFTER_TLS = ("{where} closed the connection right after the TLS handshake: it probably requires a client "
                     "certificate (tls-auth-clients yes): add ?ssl_certfile=/path/client.crt"
                     "&ssl_keyfile=/path/client.key to the URL")


def classify_error(exc: BaseException, target: Target, *, handshake_done: bool = False) -> ConnguardError:
    """Map whatever redis-py or the OS raised to one of our errors, with one line for a person.
    `handshake_done`: the connection was up and answering (a command lost it), so a close is not a
    handshake or TLS problem."""
    where = target.redacted
    text = str(exc)
    low = text.lower()
    if isinstance(exc, ConnguardError):
        return exc
    if isinstance(exc, PlainNotTls) or "not tls" in low:
        return Unreachable(f"{where} speaks plain Redis, not TLS: use redis:// instead of rediss://")
    if MAXCLIENTS_MESSAGE in low:
        return ServerFull(f"{where} refuses new connections: {text.strip()}")
    if isinstance(exc, TlsClosedInHandshake):
        return Unreachable(f"{where} closed the connection during the TLS handshake")
    if isinstance(exc, redis.exceptions.AuthenticationError) or "noauth" in low or "wrongpass" in low or (
        "invalid password" in low or "invalid username-password" in low
    ):
        if "noauth" in low or "authentication required" in low:
            return AuthFailed(f"{where} requires a password: put it in the URL or in $REDISCLI_AUTH")
        return AuthFailed(f"{where} rejected the username or password")
    if isinstance(exc, redis.exceptions.AuthenticationWrongNumberOfArgsError):
        return AuthFailed(f"{where} rejected the credentials (this server takes a password only, no username)")
    if isinstance(exc, (redis.exceptions.InvalidResponse,)) or "protocol error" in low:
        return _not_redis(target, text.encode(errors="replace").partition(b"Protocol Error: ")[2].lstrip(b"b'\""))
    if "certificate verify failed" in low:
        return Unreachable(
            f"the TLS certificate of {where} is not trusted ({_short(text.rpartition('] ')[2], 60)}): "
            "add ?ssl_ca_certs=/path/to/ca.pem to the URL, or ?ssl_cert_reqs=none to skip the check"
        )
    if target.tls and any(w in low for w in ("certificate required", "certificate_required")):
        return Unreachable(f"{where} requires a client certificate: add ?ssl_certfile=/path/client.crt"
                           "&ssl_keyfile=/path/client.key to the URL")
    if target.tls and any(w in low for w in ("alert bad certificate", "alert unknown ca", "certificate unknown",
                                              "alert_bad_certificate", "alert_unknown_ca")):
        return Unreachable(f"{where} rejected the client certificate (ssl_certfile): is it signed by a CA the "
                           "server trusts (tls-ca-cert-file)?")
    if target.tls and not handshake_done and not target.query.get("ssl_certfile") and any(
            w in low for w in ("eof occurred in violation of protocol", "unexpected eof", "closed by server",
                               "connection reset", "broken pipe")):
        # The TLS handshake completed (else TlsClosedInHandshake) and the first write found the socket closed:
        # with TLS 1.3 a server that wants a client certificate checks it only after the client's side of the
        # handshake is done, and then may just close (no alert reaches us), so the EOF is the only sign.
        return Unreachable(_CLOSED_AFTER_TLS.format(where=where))
    if isinstance(exc, ssl.SSLError) or "ssl" in low or "wrong version number" in low:
        return Unreachable(f"TLS handshake with {where} failed ({_short(text)}): is the server really TLS (rediss://)?")
    if isinstance(exc, (redis.exceptions.TimeoutError, socket.timeout, TimeoutError)) or "timed out" in low:
        if target.tls:
            return Unreachable(f"TLS handshake with {where} timed out: is the server really TLS? (plain servers want redis://)")
        return Unreachable(f"{where} did not answer in time: wrong host or port, a firewall, or not a Redis server")
    errno_ = _errno_of(exc)
    if errno_ == errno.ECONNREFUSED or "connection refused" in low:
        return Unreachable(f"{where} refused the connection: nothing listens there")
    if errno_ == errno.ENOENT or "no such file" in low:
        return Unreachable(f"{where}: no such unix socket")
    if "name or service not known" in low or "nodename nor servname" in low or "temporary failure in name" in low:
        return Unreachable(f"cannot resolve the host of {where}")
    if "closed by server" in low or "connection reset" in low or "broken pipe" in low:
        if handshake_done:
            return Unreachable(f"{where} closed the connection in the middle of a reply (the server went away, "
                               "restarted, or killed this connection)")
        if target.tls:  # the TLS handshake completed (else TlsClosedInHandshake): not a full server
            return Unreachable(_CLOSED_AFTER_TLS.format(where=where))
        return Unreachable(f"{where} closed the connection during the handshake (is it a TLS-only server? "
                           "then use rediss://)")
    if isinstance(exc, redis.exceptions.NoPermissionError) or "noperm" in low or "no permissions" in low:
        return Denied(f"{where}: this user may not run a command the connection needs ({_short(text)})")
    if isinstance(exc, redis.exceptions.ResponseError):
        return NotRedis(f"{where} rejected the handshake: {_short(text)}")
    return Unreachable(f"cannot connect to {where}: {_short(text)}")


def _explain_mismatch(exc: BaseException, target: Target) -> ConnguardError | None:
    """A handshake that ended in a closed socket or a TLS error may mean the port speaks something
    else (HTTP, plain RESP): ask it once, to say so plainly. None keeps the ordinary classification."""
    low = str(exc).lower()
    # Whichever side closes first decides which of these the handshake sees (a write into the closed socket is a
    # broken pipe, a read an EOF or reset), so every one of them asks the port what it speaks.
    if target.scheme == "unix" or not any(w in low for w in ("closed", "reset", "broken pipe", "eof", "ssl",
                                                              "wrong version")):
        return None
    reply = sniff(target.host, target.port)  # type: ignore[arg-type]
    if not reply or reply.startswith(b"\x15\x03"):  # silence or a TLS alert: the hint we already give fits
        return None
    if reply[:1] in (b"+", b"-"):
        return Unreachable(f"{target.redacted} speaks plain Redis, not TLS: use redis:// instead of rediss://") if target.tls else None
    return _not_redis(target, reply)


def _not_redis(target: Target, reply: bytes) -> NotRedis:
    """The port answered in something other than RESP: named from the bytes it sent (HTTP starts `HTTP/` or `<`),
    never from which side closed first, which is a race (the reply and the close arrive together)."""
    looks = " (it looks like HTTP)" if reply.lstrip().startswith((b"HTTP/", b"<")) else ""
    return NotRedis(f"{target.redacted} answered, but not in the Redis protocol{looks}: is this the right port?")


def _errno_of(exc: BaseException) -> int | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno:
            return cur.errno
        cur = cur.__cause__ or cur.__context__
    return None


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_refusal(exc: BaseException, target: Target) -> bool:
    if isinstance(exc, MaxClientsRefused) or MAXCLIENTS_MESSAGE in str(exc).lower():
        return True
    # Over TLS a full server closes without a word, before the TLS handshake completes (it checks maxclients
    # before accepting the connection): only that close counts as a possible refusal and is retried. A close
    # after a completed handshake (a missing client certificate whose alert lost the race) is not one.
    return target.tls and isinstance(exc, TlsClosedInHandshake)


class HeldConnection:
    """The single connection a connguard tool opens once and holds. Commands return raw replies."""

    def __init__(self, target: Target, conn: redis.connection.AbstractConnection, attempts: int,
                 limitations: tuple[str, ...] = ()) -> None:
        self.target = target
        self._conn = conn
        self.attempts = attempts
        self.limitations = limitations  # what the handshake could not do (e.g. name the connection)
        self.client_id: int | None = None
        try:
            self.client_id = int(self.execute("CLIENT", "ID"))
        except (ConnguardError, redis.exceptions.ResponseError):  # an ACL may deny CLIENT ID
            self.client_id = None

    def execute(self, *args: Any) -> Any:
        """Run one command. A ResponseError (denied, unknown command) is raised as is, for the caller
        to degrade; anything that loses the connection becomes a ConnguardError."""
        try:
            self._conn.send_command(*args)
            return self._conn.read_response()
        except redis.exceptions.ResponseError:
            raise
        except (redis.exceptions.RedisError, OSError) as exc:
            raise classify_error(exc, self.target, handshake_done=True) from None

    def close(self) -> None:
        try:
            self._conn.disconnect()
        except Exception:  # closing is best effort; the process is about to end anyway
            pass

    def __enter__(self) -> "HeldConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_connection(
    target: Target,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    socket_timeout_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    base_s: float = 0.05,
    cap_s: float = 1.0,
) -> HeldConnection:
    """Connect once. When the server is full, retry with full-jitter exponential backoff until
    `connect_timeout_s`; every other failure is final at once."""
    rng = rng or random.Random()
    deadline = clock() + connect_timeout_s
    attempt = 0
    named = True
    limitations: tuple[str, ...] = ()
    while True:
        attempt += 1
        conn = _connection_for(target, socket_timeout_s, named=named)
        try:
            conn.connect()
            return HeldConnection(target, conn, attempt, limitations)
        except (redis.exceptions.RedisError, OSError) as exc:
            conn.disconnect()
            refusal = getattr(conn, "_cg_refusal", None)
            if refusal is not None and not _is_refusal(exc, target):
                exc = MaxClientsRefused(refusal)  # the handshake tripped on the close that followed the refusal
            if named and isinstance(exc, redis.exceptions.NoPermissionError) and "setname" in str(exc).lower():
                named, attempt = False, attempt - 1
                limitations = (f"CLIENT SETNAME denied ({_short(str(exc), 100)}): connguard's connection is "
                               "unnamed, so other connguard tools cannot recognise it",)
                continue
            if not _is_refusal(exc, target):
                raise _explain_mismatch(exc, target) or classify_error(exc, target) from None
            remaining = deadline - clock()
            if remaining <= 0:
                how = "closed" if target.tls and not isinstance(exc, MaxClientsRefused) else "refused"
                raise ServerFull(
                    f"{target.redacted} is at maxclients and {how} all {attempt} connection attempts "
                    f"over {connect_timeout_s:g}s" + (" (over TLS a full server closes without a word)" if how == "closed" else "")
                ) from None
            delay = rng.uniform(0, min(cap_s, base_s * 2 ** min(attempt, 16)))
            sleep(max(0.01, min(delay, remaining)))
