"""Read a fleet file (pure parse): one URL a line with `#` comments, or TOML with names and groups.

Plain text:

    # name the file anything; blank lines and `#` comments are ignored
    redis://10.0.0.5:6379
    redis://:secret@10.0.0.6:6379/2     # a trailing comment after whitespace
    redis+sentinel://s1:26379,s2:26379/orders

TOML (a `.toml` file): `[[target]]` tables with `url` and optional `name` and `group`:

    [[target]]
    url = "redis://10.0.0.5:6379"
    name = "sessions"
    group = "prod"

A line or entry that does not parse becomes a Problem naming its line (or entry) and the rest is still read.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from connguard.discovery.model import Problem
from connguard.discovery.sentinel_url import SentinelSpec, is_sentinel_url, parse_sentinel_url
from connguard.errors import BadArguments, ConnguardError
from connguard.target import Target, parse_target


@dataclass(frozen=True)
class FleetEntry:
    """One parsed line: a plain Target or a Sentinel spec (resolved into members later)."""

    where: str  # "line 3" or "target 2"
    target: Target | None = field(default=None)
    sentinel: SentinelSpec | None = field(default=None)
    name: str | None = None
    group: str | None = None
    line: int | None = None

    @property
    def redacted(self) -> str:
        return self.target.redacted if self.target else self.sentinel.redacted  # type: ignore[union-attr]


def parse_url(text: str, env: Mapping[str, str] | None = None) -> Target | SentinelSpec:
    """A redis://, rediss://, unix:// or Sentinel URL; raises BadTarget with a redacted line."""
    return parse_sentinel_url(text, env) if is_sentinel_url(text) else parse_target(text, env)


def _entry(where: str, url: object, name: object, group: object, line: int | None,
           env: Mapping[str, str] | None) -> FleetEntry | Problem:
    if not isinstance(url, str) or not url.strip():
        return Problem(where, "no url: every entry needs url = \"redis://host:port\"")
    try:
        parsed = parse_url(url.strip(), env)
    except ConnguardError as err:
        return Problem(where, err.message)
    for label, value in (("name", name), ("group", group)):
        if value is not None and not isinstance(value, str):
            return Problem(where, f"{label} must be a string")
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
        unknown = sorted(set(table) - {"url", "name", "group"})
        if unknown:
            problems.append(Problem(where, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (url, name, group)"))
            continue
        item = _entry(where, table.get("url"), table.get("name"), table.get("group"), None, env)
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
