"""What `status` and `doctor` need to *recognise* a fleet run without loading the fleet machinery: the options,
`wants_fleet` and the `FleetRequest`. Kept apart from `commands.fleet` (discovery, doctor, rich) so that a
single-target `status` — a Nagios-style check run every minute — imports none of that."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import click

from connguard.commands._common import FiniteNumber
from connguard.discovery.seeds import is_multi_seed
from connguard.discovery.sentinel_url import is_sentinel_url
from connguard.errors import BadArguments
from connguard.settings import CONNECT_TIMEOUT_S, DEFAULT_CONCURRENCY, MAX_CONCURRENCY
from connguard.target_url import is_host_port

F = TypeVar("F", bound=Callable[..., Any])


def fleet_options(func: F) -> F:
    """--fleet FILE, --cluster, --all-members, --concurrency (keyword names fleet_file, cluster, all_members,
    concurrency)."""
    for option in reversed((
        click.option("--fleet", "fleet_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="A file of targets: one URL a line with # comments, or TOML [[target]] url/name/group "
                          "(cluster = true, sentinel = true + master = \"name\")."),
        click.option("--cluster", is_flag=True,
                     help="Treat the URL (or each fleet line) as a Cluster seed and observe every node. "
                          "A single URL whose INFO says cluster_enabled:1 is a cluster without this flag."),
        click.option("--all-members", is_flag=True,
                     help="Sentinel: observe the replicas and the Sentinels too, not only the primary."),
        click.option("--concurrency", type=FiniteNumber(1, MAX_CONCURRENCY, integer=True),
                     default=DEFAULT_CONCURRENCY, show_default=True, help="Targets observed at once."),
    )):
        func = option(func)
    return func


def wants_fleet(url: str | None, fleet_file: str | None, cluster: bool, all_members: bool) -> bool:
    """Whether a `status`/`doctor` call with these options is a fleet run rather than a single target."""
    return bool(fleet_file or cluster or all_members or is_sentinel_url(url) or is_multi_seed(url))


@dataclass(frozen=True)
class FleetRequest:
    source: str | None  # a URL (redis://, redis+sentinel://, ...) or a fleet file path
    fleet_file: str | None = None
    cluster: bool = False
    all_members: bool = False
    concurrency: int = DEFAULT_CONCURRENCY
    connect_timeout_s: float = CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.source and self.fleet_file:
            raise BadArguments("give a URL or --fleet FILE, not both")
        if self.cluster and is_sentinel_url(self.source):
            raise BadArguments("--cluster and a Sentinel URL do not go together: Sentinel manages a primary, not a cluster")

    @property
    def file(self) -> str | None:
        """The fleet file: --fleet, or a positional argument that is not a URL."""
        if self.fleet_file:
            return self.fleet_file
        if self.source and "://" not in self.source:
            if os.path.isfile(self.source):
                return self.source
            if not is_host_port(self.source):  # a bare host:port is a target like any URL
                raise BadArguments(f"{self.source!r} is neither a URL (redis://host:port or host:port) nor a fleet file")
        return None
