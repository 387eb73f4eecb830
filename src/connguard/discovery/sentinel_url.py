"""Parse a Sentinel URL (pure): `redis+sentinel://[user:pw@]s1:26379,s2:26379/mastername[/db]`.

redis-py has no URL form for Sentinel (`redis.sentinel.Sentinel` takes a list of addresses). The form chosen
is the one the Python ecosystem converged on (Redis-Sentinel-Url, Prefect/docket, RedisVL for Python and
Java): comma-separated Sentinels, the master name as the first path segment, the db as the second. Also
accepted: `rediss+sentinel://` (TLS to the data nodes and the Sentinels), and Lettuce's
`redis-sentinel://s1,s2[/db]?sentinelMasterId=mymaster`. The user and password are those of the data nodes
(the primary and replicas); `?sentinel_username=`/`?sentinel_password=` authenticate to the Sentinels. The data
nodes' password is never sent to a Sentinel: a Sentinel that wants one is `auth failed` with the
`?sentinel_password=` hint (docs/fleet.md), so a secret goes only where the URL says it goes."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import parse_qs, quote, unquote

from connguard.errors import BadTarget
from connguard.target_url import Target, credentials, database_number, parse_target

DEFAULT_SENTINEL_PORT = 26379
# scheme -> (data scheme, where the master name lives)
SCHEMES: Mapping[str, tuple[str, str]] = {
    "redis+sentinel": ("redis", "path"),
    "rediss+sentinel": ("rediss", "path"),
    "redis-sentinel": ("redis", "query"),  # Lettuce: the path is the db, ?sentinelMasterId= the master
    "rediss-sentinel": ("rediss", "query"),
}
MASTER_QUERY_KEYS = ("sentinelMasterId", "master_name", "service_name")
EXAMPLE = "redis+sentinel://[user:password@]sentinel1:26379,sentinel2:26379/mymaster[/db]"


def is_sentinel_url(text: str | None) -> bool:
    return bool(text) and text.partition("://")[0].lower() in SCHEMES  # type: ignore[union-attr]


@dataclass(frozen=True)
class SentinelSpec:
    """The Sentinels to ask, the master name, and how to reach the data nodes. Passwords never in repr."""

    sentinels: tuple[Target, ...]
    master_name: str
    db: int = 0
    data_scheme: str = "redis"
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def redacted(self) -> str:
        auth = ""
        if self.username or self.password:
            auth = f"{self.username or ''}{':***' if self.password else ''}@"
        hosts = ",".join(_hostport(t) for t in self.sentinels)
        db = f"/{self.db}" if self.db else ""
        return f"{self.data_scheme}+sentinel://{auth}{hosts}/{self.master_name}{db}"

    def __str__(self) -> str:
        return self.redacted

    def node_target(self, host: str, port: int) -> Target:
        """A primary or replica the Sentinels named, as an ordinary Target with the data-node credentials."""
        target = parse_target(f"{self.data_scheme}://{_host_text(host)}:{port}/{self.db}", env={})
        return dataclasses.replace(target, username=self.username, password=self.password)

    def sentinel_target(self, host: str, port: int, like: Target | None = None) -> Target:
        """Another Sentinel the Sentinels named, with the credentials that worked (`like`) or the URL's."""
        like = like or self.sentinels[0]
        target = parse_target(f"{self.data_scheme}://{_host_text(host)}:{port}", env={})
        return dataclasses.replace(target, username=like.username, password=like.password)


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _hostport(t: Target) -> str:
    return f"{_host_text(t.host or '')}:{t.port}"


def _redact(raw: str) -> str:
    scheme, sep, rest = raw.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    creds, at, _ = netloc.rpartition("@")
    if not sep or not at:
        return raw.split("?", 1)[0]
    user = creds.split(":", 1)[0] if ":" in creds else ""  # a lone userinfo is a password: never shown
    return f"{scheme}://{user}:***@{rest[len(creds) + 1:].split('?', 1)[0]}"


def _split_hosts(hosts: str, raw: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [v6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.lstrip(":")
        else:
            host, _, port_text = item.partition(":")
        try:
            port = int(port_text) if port_text else DEFAULT_SENTINEL_PORT
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise BadTarget(f"Sentinel URL {_redact(raw)!r}: port {port_text!r} of {host!r} is not a port number") from None
        if not host:
            raise BadTarget(f"Sentinel URL {_redact(raw)!r} has an empty Sentinel host: use {EXAMPLE}")
        out.append((host, port))
    if not out:
        raise BadTarget(f"Sentinel URL {_redact(raw)!r} names no Sentinel: use {EXAMPLE}")
    return out


def parse_sentinel_url(raw: str, env: Mapping[str, str] | None = None) -> SentinelSpec:
    """Parse a Sentinel URL. Every mistake is a BadTarget (exit 3) whose line never shows the password.
    As for redis:// URLs, $REDISCLI_AUTH supplies a missing data-node password."""
    env = os.environ if env is None else env
    scheme, sep, rest = raw.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise BadTarget(f"not a Sentinel URL: {_redact(raw)!r}: use {EXAMPLE}")
    data_scheme, master_from = SCHEMES[scheme]
    rest, _, fragment = rest.partition("#")
    rest, _, query_text = rest.partition("?")
    netloc, _, path = rest.partition("/")
    creds, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        username, password = credentials(creds)  # a lone userinfo is the password, as in redis:// URLs
    query = {k: v[-1] for k, v in parse_qs(query_text).items()}
    segments = [unquote(s) for s in path.split("/") if s]
    if master_from == "path":
        master = segments[0] if segments else None
        db_text = segments[1] if len(segments) > 1 else query.get("db", "0")
        extra = segments[2:]
    else:
        master = None
        db_text = segments[0] if segments else query.get("database", query.get("db", "0"))
        extra = segments[1:]
    master = master or next((query[k] for k in MASTER_QUERY_KEYS if query.get(k)), None) or (unquote(fragment) or None)
    if not master:
        raise BadTarget(f"Sentinel URL {_redact(raw)!r} has no master name: use {EXAMPLE}")
    if extra:
        raise BadTarget(f"Sentinel URL {_redact(raw)!r}: unexpected path {'/'.join(extra)!r} after the db: use {EXAMPLE}")
    db = database_number(db_text, f"Sentinel URL {_redact(raw)!r}")
    if password is None and env.get("REDISCLI_AUTH"):
        password = env["REDISCLI_AUTH"]
    s_user, s_pw = query.get("sentinel_username"), query.get("sentinel_password")
    sentinels = []
    for host, port in _split_hosts(hosts, raw):
        auth = ""
        if s_user or s_pw:
            auth = f"{quote(s_user or '', safe='')}{':' + quote(s_pw, safe='') if s_pw else ''}@"
        target = parse_target(f"{data_scheme}://{auth}{_host_text(host)}:{port}", env={})
        sentinels.append(target)
    return SentinelSpec(tuple(sentinels), master, db, data_scheme, username, password)
