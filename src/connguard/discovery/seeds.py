"""Cluster seeds (pure): `redis://[user:pw@]a:7001,b:7002[/0][?options]` names one cluster by several of its
nodes, so discovery can ask the next when the first is full or down."""

from __future__ import annotations

from typing import Mapping

from connguard.errors import BadTarget
from connguard.target_url import Target, parse_target


def parse_seeds(url: str | None, env: Mapping[str, str] | None = None) -> tuple[Target, ...]:
    """A cluster URL with one seed or several (`redis://[user:pw@]a:7001,b:7002[/0][?options]`): each seed an
    ordinary Target with the URL's credentials and options. One seed is just `parse_target`."""
    if not is_multi_seed(url):
        return (parse_target(url, env),)
    scheme, _, rest = url.partition("://")  # type: ignore[union-attr]
    netloc, slash, tail = rest.partition("/")
    if "?" in netloc:  # redis://a:1,b:2?ssl_...=... (no path)
        netloc, _, query = netloc.partition("?")
        slash, tail = "/", f"?{query}"
    creds, at, hosts = netloc.rpartition("@")
    seeds = [h.strip() for h in hosts.split(",")]
    if any(not h for h in seeds):
        raise BadTarget(f"cluster URL {scheme}://{'***@' if at else ''}{hosts}: an empty seed between commas")
    return tuple(parse_target(f"{scheme}://{creds}{at}{h}{slash}{tail}", env) for h in seeds)


def is_multi_seed(url: str | None) -> bool:
    """`redis://a:7001,b:7002`: several comma-separated hosts in a redis://, rediss:// or bare URL."""
    if not url or url.partition("://")[0].lower() not in ("redis", "rediss") or "," not in url:
        return False
    netloc = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0]
    return "," in netloc.rpartition("@")[2]
