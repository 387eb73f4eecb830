"""Read a fleet file (pure parse): one URL a line with `#` comments, or TOML with names and groups.

Plain text:

    # name the file anything; blank lines and `#` comments are ignored
    redis://10.0.0.5:6379
    redis://:secret@10.0.0.6:6379/2     # a trailing comment after whitespace
    redis+sentinel://s1:26379,s2:26379/orders

TOML (a `.toml` file): `[[target]]` tables with `url` and optional `name`, `group`, `cluster`, `sentinel`
and `master`:

    [[target]]
    url = "redis://10.0.0.5:6379"
    name = "sessions"
    group = "prod"

    [[target]]                      # every node of a cluster, in a group named "orders" (else by its seed)
    url = "redis://10.0.1.5:7001,10.0.1.6:7001"
    cluster = true
    name = "orders"

    [[target]]                      # a Sentinel set: the Sentinels' addresses and the master name
    url = "redis://10.0.2.5:26379,10.0.2.6:26379"
    sentinel = true
    master = "billing"

A multi-seed URL (`redis://a:7001,b:7002`) is a cluster on a plain line too.

A line or entry that does not parse becomes a Problem naming its line (or entry) and the rest is still read.
"""

from __future__ import annotations

import tomllib
from urllib.parse import quote
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from connguard.discovery.model import Problem
from connguard.discovery.sentinel_url import SentinelSpec, is_sentinel_url, parse_sentinel_url
from connguard.discovery.seeds import is_multi_seed, parse_seeds
from connguard.errors import BadArguments, BadTarget, ConnguardError
from connguard.target_url import Target, parse_target

TOML_KEYS = ("url", "name", "group", "cluster", "sentinel", "master")


@dataclass(frozen=True)
class FleetEntry:
    """One parsed line: a plain Target or a Sentinel spec (resolved into members later)."""

    where: str  # "line 3" or "target 2"
    target: Target | None = field(default=None)
    sentinel: SentinelSpec | None = field(default=None)
    seeds: tuple[Target, ...] = ()  # a cluster: every node is found from the first seed that answers
    name: str | None = None
    group: str | None = None
    line: int | None = None

    @property
    def redacted(self) -> str:
        if self.seeds:
            return ",".join(t.redacted for t in self.seeds)
        return self.target.redacted if self.target else self.sentinel.redacted  # type: ignore[union-attr]


def parse_url(text: str, env: Mapping[str, str] | None = None) -> Target | SentinelSpec:
    """A redis://, rediss://, unix://, bare host:port or Sentinel URL; raises BadTarget with a redacted line."""
    return parse_sentinel_url(text, env) if is_sentinel_url(text) else parse_target(text, env)


def sentinel_url_of(url: str, master: str) -> str:
    """`redis://s1:26379,s2:26379` and a master name as the Sentinel URL connguard reads
    (`redis+sentinel://s1:26379,s2:26379/master`), options kept."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "redis", url
    base, q, query = rest.partition("?")
    if "/" in base.rpartition("@")[2]:
        raise BadTarget("sentinel = true: the url names the Sentinels only (host:port,host:port); the master "
                        "goes in master = \"name\" and the db in a redis+sentinel:// URL")
    return f"{scheme}+sentinel://{base}/{quote(master, safe='')}{q}{query}"


def _entry(where: str, url: object, name: object, group: object, line: int | None,
           env: Mapping[str, str] | None, *, cluster: object = False, sentinel: object = False,
           master: object = None) -> FleetEntry | Problem:
    if not isinstance(url, str) or not url.strip():
        return Problem(where, "no url: every entry needs url = \"redis://host:port\"")
    for label, value in (("name", name), ("group", group), ("master", master)):
        if value is not None and not isinstance(value, str):
            return Problem(where, f"{label} must be a string")
    for label, value in (("cluster", cluster), ("sentinel", sentinel)):
        if not isinstance(value, bool):
            return Problem(where, f"{label} must be true or false")
    if cluster and sentinel:
        return Problem(where, "cluster = true and sentinel = true do not go together: Sentinel manages a primary, "
                              "not a cluster")
    url = url.strip()
    try:
        if sentinel and not is_sentinel_url(url):
            if not master:
                return Problem(where, "sentinel = true needs master = \"name\" (the master the Sentinels monitor)")
            url = sentinel_url_of(url, master)  # type: ignore[arg-type]
        elif master is not None and not sentinel:
            return Problem(where, "master = ... is for a Sentinel set: add sentinel = true")
        if cluster or is_multi_seed(url):
            if is_sentinel_url(url):
                return Problem(where, "cluster = true and a Sentinel URL do not go together")
            return FleetEntry(where, seeds=parse_seeds(url, env), name=name, group=group, line=line)  # type: ignore[arg-type]
        parsed = parse_url(url, env)
    except ConnguardError as err:
        return Problem(where, err.message)
    if isinstance(parsed, SentinelSpec):
        return FleetEntry(where, sentinel=parsed, name=name, group=group, line=line)  # type: ignore[arg-type]
    return FleetEntry(where, target=parsed, name=name, group=group, line=line)  # type: ignore[arg-type]


def parse_plain(text: str, env: Mapping[str, str] | None = None) -> tuple[list[FleetEntry], list[Problem]]:
    entries: list[FleetEntry] = []
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        url = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if len(url.split()) > 1:
            problems.append(Problem(f"line {number}", "one URL a line (use a .toml fleet file for names and groups)"))
            continue
        item = _entry(f"line {number}", url, None, None, number, env)
        (problems if isinstance(item, Problem) else entries).append(item)  # type: ignore[arg-type]
    return entries, problems


def parse_toml(text: str, env: Mapping[str, str] | None = None) -> tuple[list[FleetEntry], list[Problem]]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadArguments(f"fleet file is not valid TOML: {exc}") from None
    tables = doc.get("target", [])
    if not isinstance(tables, list):
        raise BadArguments("fleet file: use [[target]] tables (an array), each with url = \"...\"")
    entries: list[FleetEntry] = []
    problems: list[Problem] = []
    for number, table in enumerate(tables, start=1):
        where = f"target {number}" + (f" ({table['name']})" if isinstance(table, dict) and isinstance(table.get("name"), str) else "")
        if not isinstance(table, dict):
            problems.append(Problem(where, "not a table"))
            continue
        unknown = sorted(set(table) - set(TOML_KEYS))
        if unknown:
            problems.append(Problem(where, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                                           f"({', '.join(TOML_KEYS)})"))
            continue
        item = _entry(where, table.get("url"), table.get("name"), table.get("group"), None, env,
                      cluster=table.get("cluster", False), sentinel=table.get("sentinel", False),
                      master=table.get("master"))
        (problems if isinstance(item, Problem) else entries).append(item)  # type: ignore[arg-type]
    return entries, problems


def read_fleet_file(path: str, env: Mapping[str, str] | None = None) -> tuple[list[FleetEntry], list[Problem]]:
    """Entries and per-line Problems. An unreadable file is a BadArguments (exit 3)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadArguments(f"cannot read fleet file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if path.endswith(".toml"):
        return parse_toml(text, env)
    return parse_plain(text, env)
