"""Name a Redis target: parse its URL, hold its credentials, redact them, and say which endpoint it is.

Pure: no redis-py, no network. `connguard.target` does the connecting and re-exports these names, so the
analysis can name a target without importing a client library."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from connguard.errors import BadTarget

DEFAULT_URL = "redis://127.0.0.1:6379"
SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class Target:
    """Where to connect. The password never appears in `str()`, `repr()` or `redacted`."""

    scheme: str
    host: str | None
    port: int | None
    path: str | None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    query: Mapping[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    @property
    def redacted(self) -> str:
        user = self.username or ""
        auth = ""
        if user or self.password:
            auth = f"{user}{':***' if self.password else ''}@"
        if self.scheme == "unix":
            suffix = f"?db={self.db}" if self.db else ""
            return f"unix://{auth}{self.path}{suffix}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        db = f"/{self.db}" if self.db else ""
        return f"{self.scheme}://{auth}{host}:{self.port}{db}"

    def __str__(self) -> str:
        return self.redacted

    @property
    def endpoint_key(self) -> tuple[object, ...]:
        """What makes two connections 'the same endpoint' (host, port, db, user, TLS)."""
        return (self.path or self.host, self.port, self.db, self.username, self.tls)


# Query options a URL may carry (docs/contract.md). Anything else is refused: a misspelt TLS option
# silently ignored would connect without the certificate the operator meant to give.
CERT_REQS = ("none", "optional", "required")
TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
QUERY_OPTIONS = ("db", "password", "ssl_cert_reqs", "ssl_ca_path", *TLS_FILES)


def _split_userinfo(scheme: str, rest: str) -> tuple[str | None, str]:
    """(userinfo, the rest) of what follows `scheme://`. The host part never holds an `@`, so userinfo ends at
    an `@`: the last one whose remainder reads as host[:port][/db][?known options]. People paste passwords
    unencoded, with `@`, `/`, `#` and `?` in them; a query value (a file path) may hold an `@` too (when what
    follows it could be a host, it must be written %40). When no `@` leaves a well-formed remainder and the whole
    is not one either, the last `@` is taken: a misparse must hide too much, never print a secret."""
    if scheme == "unix":
        at = -1 if rest.startswith("/") else rest.find("@/")
        return (None, rest) if at < 0 else (rest[:at], rest[at + 1:])
    ats = [i for i, ch in enumerate(rest) if ch == "@"]
    if not ats:
        return None, rest
    at = next((i for i in reversed(ats) if _well_formed_remainder(rest[i + 1:])), None)
    if at is None:
        if _well_formed_remainder(rest):  # every '@' is inside a query value (ssl_ca_certs=/etc/a@b/ca.pem)
            return None, rest
        at = ats[-1]
    return rest[:at], rest[at + 1:]


def credentials(userinfo: str) -> tuple[str | None, str | None]:
    """(username, password) of a URL's userinfo. A lone userinfo (`redis://s3cret@host`) is the password, as
    redis-cli reads it: taking it as a username would log in as nobody and print the secret as a name."""
    user_text, colon, pass_text = userinfo.partition(":")
    if not colon:
        return None, unquote(user_text) if user_text else None
    return unquote(user_text) or None, unquote(pass_text)


def is_host_port(text: str) -> bool:
    """`host:port` or `[v6]:port` with nothing else (no scheme, no userinfo, no path): a bare address. The port
    is required, so a misspelt fleet file name (`fleet.txt`) is never dialled as a host."""
    if not text or any(ch in text for ch in "@/?#, \t"):
        return False
    host, colon, port = text.rpartition(":")
    return bool(colon and host and port.isdigit()) and _well_formed_remainder(text)


def _well_formed_remainder(text: str) -> bool:
    """Does `text` read as what follows the userinfo: host[:port][/db][?option=value&...], nothing else?"""
    try:
        parts = urlsplit(f"redis://{text}")
        parts.port  # noqa: B018 - raises ValueError on a bad port
        pairs = parse_qs(parts.query, keep_blank_values=True, strict_parsing=True) if parts.query else {}
    except ValueError:
        return False
    return bool(parts.hostname) and "@" not in parts.netloc and not parts.fragment and "#" not in text and (
        parts.path.lstrip("/").isdigit() or parts.path in ("", "/")) and set(pairs) <= set(QUERY_OPTIONS)


def parse_target(url: str | None = None, env: Mapping[str, str] | None = None) -> Target:
    """Parse `url`, else $REDIS_URL, else redis://127.0.0.1:6379. $REDISCLI_AUTH supplies a missing password.
    No error message ever repeats any part of the URL's userinfo."""
    env = os.environ if env is None else env
    raw = url or env.get("REDIS_URL") or DEFAULT_URL
    if "://" not in raw and is_host_port(raw):
        raw = f"redis://{raw}"  # bare host:port, as redis-cli -h/-p and /probe?target= take it
    scheme_text, sep, rest = raw.partition("://")
    scheme = scheme_text.lower()
    userinfo, rest = _split_userinfo(scheme, rest) if sep else (None, rest)
    shown = f"{scheme_text}://{'***@' if userinfo is not None else ''}{rest}" if sep else _redact_raw(raw)
    if not sep or scheme not in SCHEMES:
        raise BadTarget(
            f"unsupported URL {shown!r}: use host:port, redis://host:port, rediss://host:port, unix:///path.sock "
            "or redis+sentinel://sentinel:26379/mastername"
        )
    if scheme != "unix" and "," in rest.split("/", 1)[0].split("?", 1)[0]:
        raise BadTarget(f"URL {shown!r} names several hosts (a cluster's seeds): status, doctor and fleet take "
                        "it; this command watches or changes one server, so give one host:port")
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        port = parts.port
    except ValueError as exc:
        raise BadTarget(f"cannot parse URL {shown!r}: {exc}") from None
    username = password = None
    if userinfo is not None:
        username, password = credentials(userinfo)
    try:
        pairs = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise BadTarget(f"URL {shown!r}: cannot parse the query (use ?name=value&name=value)") from None
    query = {k: v[-1] for k, v in pairs.items()}
    unknown = sorted(set(query) - set(QUERY_OPTIONS))
    if unknown:
        raise BadTarget(f"URL {shown!r}: unknown option {', '.join(unknown)}; connguard understands "
                        f"{', '.join(QUERY_OPTIONS)} (see docs/contract.md)")
    if password is None and "password" in query:
        password = query["password"]  # redis-py's ?password= form
    query.pop("password", None)
    shown = f"{scheme}://{'***@' if userinfo is not None or password else ''}{parts.netloc}{parts.path}"
    if password is None and env.get("REDISCLI_AUTH"):
        password = env["REDISCLI_AUTH"]
    _check_tls_options(scheme, query, shown)
    db = 0
    if scheme == "unix":
        path = unquote(parts.path)
        if not path:
            raise BadTarget(f"unix URL {shown!r} has no socket path: use unix:///path/to/redis.sock")
        db_text = query.get("db", "0")
        host = None
    else:
        path = None
        host = parts.hostname
        if not host:
            raise BadTarget(f"URL {shown!r} has no host: use redis://host:port")
        if port == 0:
            raise BadTarget(f"URL {shown!r}: port 0 is not a port a server listens on (leave it out for 6379)")
        port = port or 6379
        db_text = parts.path.lstrip("/") or query.get("db", "0")
    db = database_number(db_text, f"URL {shown!r}")
    return Target(scheme, host, port if scheme != "unix" else None, path, db, username, password, query)


def database_number(text: str, where: str) -> int:
    """A URL's database: a whole number >= 0, or a bad target naming `where` (the URL, redacted)."""
    try:
        db = int(text)
        if db < 0:
            raise ValueError
    except ValueError:
        raise BadTarget(f"{where}: database {text!r} is not a number >= 0") from None
    return db


def verification_off(target: Target) -> bool:
    """True when the TLS certificate of the server is not checked (?ssl_cert_reqs=none, or --insecure)."""
    return target.tls and target.query.get("ssl_cert_reqs", "required").lower() == "none"


def insecure(target: Target) -> Target:
    """`target` with certificate verification switched off (--insecure). Only a TLS URL has any to switch off."""
    if not target.tls:
        raise BadTarget(f"--insecure switches off TLS certificate checks, but {target.redacted} is not a TLS URL "
                        "(rediss://)")
    return dataclasses.replace(target, query={**target.query, "ssl_cert_reqs": "none"})


def _check_tls_options(scheme: str, query: Mapping[str, str], shown: str) -> None:
    tls = {k: v for k, v in query.items() if k.startswith("ssl_")}
    if tls and scheme != "rediss":
        raise BadTarget(f"URL {shown!r}: {', '.join(sorted(tls))} need a TLS URL (rediss://)")
    reqs = query.get("ssl_cert_reqs")
    if reqs is not None and reqs.lower() not in CERT_REQS:
        raise BadTarget(f"URL {shown!r}: ssl_cert_reqs={reqs!r} must be one of {', '.join(CERT_REQS)}")
    for name in TLS_FILES:
        value = query.get(name)
        if value is not None and not os.path.isfile(value):
            what = "no such file" if not os.path.exists(value) else "not a file"
            raise BadTarget(f"URL {shown!r}: {name}={value}: {what}")
    if "ssl_keyfile" in query and "ssl_certfile" not in query:
        raise BadTarget(f"URL {shown!r}: ssl_keyfile needs ssl_certfile (the client certificate it belongs to)")
    ca_path = query.get("ssl_ca_path")
    if ca_path is not None and not os.path.isdir(ca_path):
        raise BadTarget(f"URL {shown!r}: ssl_ca_path={ca_path}: no such directory")


def _redact_raw(raw: str) -> str:
    """Hide every part of the userinfo in a URL we could not parse, without trusting the parser."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        return "(not a URL)" if "@" in raw else raw
    creds, at, hostpart = rest.rpartition("@")
    if not at:
        return raw
    return f"{scheme}://***@{hostpart}"
