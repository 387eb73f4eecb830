"""`connguard fleet status|doctor`: one command over a fleet file, a Sentinel URL or a whole Cluster.

The fan-out is reusable by `status` and `doctor` themselves: decorate with `fleet_options`, and when
`wants_fleet(...)` is true hand a `FleetRequest` and a per-target observer (`status_observer`,
`doctor_observer`) to `run_fleet`, which prints the table or the `connguard.fleet/1` object and returns the
exit code."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import click
import redis
from rich.console import Console

from connguard.analysis.capacity import CRITICAL_RATIO, WARNING_RATIO, Thresholds, capacity
from connguard.analysis.diagnosis import DoctorSettings
from connguard.analysis.window import DEFAULT_SAMPLES
from connguard.commands._fleet_options import FleetRequest, fleet_options, wants_fleet  # noqa: F401 - re-exported
from connguard.commands._window_options import window_options
from connguard.commands._common import (
    EXIT_BY_STATUS, FiniteNumber, OneLineCommand, connect_timeout_option, denied, emit_json, handle_errors,
    json_option,
)
from connguard.discovery.cluster import discover_cluster, is_cluster
from connguard.discovery.fanout import Pause, fan_out, fan_out_pausing
from connguard.discovery.fleet_file import FleetEntry, read_fleet_file
from connguard.discovery.model import Member, Problem, Topology
from connguard.discovery.sentinel import discover_sentinel
from connguard.discovery.seeds import is_multi_seed, parse_seeds
from connguard.discovery.sentinel_url import SentinelSpec, is_sentinel_url, parse_sentinel_url
from connguard.discovery.summary import Row, row_from_doctor, row_from_status, summarize
from connguard.doctor import run_doctor
from connguard.errors import BadArguments, ConnguardError
from connguard.probe import take_snapshot
from connguard.render.console import console_for
from connguard.render.fleet import SCHEMA, fleet_json, render_fleet
from connguard.render.json import error_json, error_object
from connguard.render.status_line import SCHEMA as STATUS_SCHEMA, status_payload
from connguard.target import Target, open_connection, parse_target

F = TypeVar("F", bound=Callable[..., Any])
Observer = Callable[..., Row]  # observe(member) or observe(member, pause): pause waits without holding a worker


# -- resolving a source into members --------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    kind: str  # single | cluster | sentinel | fleet
    source: str  # redacted
    members: tuple[Member, ...]
    problems: tuple[Problem, ...]


AUTO_DETECT_TIMEOUT_S = 1.0  # a full server is not waited out twice: the observer rides it out on its own


def detect_cluster(target: Target, connect_timeout_s: float = AUTO_DETECT_TIMEOUT_S) -> bool:
    """INFO cluster says cluster_enabled:1, asked over a short-lived connection with a short socket timeout.
    Unreachable, full or INFO denied here means no: the single-target run that follows reports why."""
    try:
        with open_connection(target, connect_timeout_s=min(connect_timeout_s, AUTO_DETECT_TIMEOUT_S),
                             socket_timeout_s=AUTO_DETECT_TIMEOUT_S) as conn:
            return is_cluster(conn)
    except (ConnguardError, redis.exceptions.RedisError):
        return False


def _sentinel_members(spec: SentinelSpec, request: FleetRequest) -> Topology:
    topology = discover_sentinel(spec, connect_timeout_s=request.connect_timeout_s)
    return Topology(topology.kind, topology.source, topology.selected(request.all_members), topology.problems)


def _resolve_entry(entry: FleetEntry, request: FleetRequest) -> tuple[tuple[Member, ...], tuple[Problem, ...]]:
    """One fleet line into members; a discovery that fails is a Problem naming the line."""
    try:
        if entry.sentinel is not None:
            topo = _sentinel_members(entry.sentinel, request)
        elif entry.seeds or request.cluster:
            seeds = entry.seeds or (entry.target,)
            topo = discover_cluster(seeds, connect_timeout_s=request.connect_timeout_s)  # type: ignore[arg-type]
        else:
            return (Member(entry.target, name=entry.name, group=entry.group, line=entry.line),), ()  # type: ignore[arg-type]
    except ConnguardError as err:
        return (), (Problem(entry.where, err.message),)
    prefix = entry.name or None
    # Each cluster or Sentinel set is its own group: the file's group, else its name, else its seed/master name.
    members = tuple(Member(m.target, m.role, name=f"{prefix}/{m.name or m.endpoint}" if prefix else m.name,
                           group=entry.group or entry.name or m.group, slots=m.slots, node_id=m.node_id,
                           health=m.health, line=entry.line) for m in topo.members)
    return members, tuple(Problem(f"{entry.where}: {p.where}", p.message, p.status) for p in topo.problems)


def _dedupe(members: list[Member]) -> tuple[Member, ...]:
    seen: set[tuple[object, ...]] = set()
    out = []
    for m in members:
        if m.target.endpoint_key not in seen:
            seen.add(m.target.endpoint_key)
            out.append(m)
    return tuple(out)


def resolve(request: FleetRequest) -> Resolved:
    """Turn the request's source into members. A bad URL or a discovery nobody can answer raises (exit 3);
    bad fleet lines and unreachable Sentinels become Problems."""
    path = request.file
    if path is not None:
        entries, problems = read_fleet_file(path)
        if not entries and not problems:  # a check that checked nothing is UNKNOWN, not OK
            raise BadArguments(f"fleet file {path} names no targets (only blank lines and # comments)")
        resolved = fan_out(entries, lambda e: _resolve_entry(e, request), concurrency=request.concurrency)
        members = [m for ms, _ in resolved for m in ms]
        problems += [p for _, ps in resolved for p in ps]
        return Resolved("fleet", path, _dedupe(members), tuple(problems))
    if is_sentinel_url(request.source):
        spec = parse_sentinel_url(request.source)  # type: ignore[arg-type]
        topo = _sentinel_members(spec, request)
        return Resolved("sentinel", spec.redacted, topo.members, topo.problems)
    if is_multi_seed(request.source):
        seeds = parse_seeds(request.source)
        topo = discover_cluster(seeds, connect_timeout_s=request.connect_timeout_s)
        return Resolved("cluster", ",".join(t.redacted for t in seeds), topo.members, topo.problems)
    target = parse_target(request.source)
    if request.cluster or detect_cluster(target, request.connect_timeout_s):
        topo = discover_cluster(target, connect_timeout_s=request.connect_timeout_s)
        return Resolved("cluster", target.redacted, topo.members, topo.problems)
    return Resolved("single", target.redacted, (Member(target),), ())


# -- per-target observers ---------------------------------------------------------------------------------------
def status_observer(thresholds: Thresholds, connect_timeout_s: float) -> Observer:
    """`status` for one member, as `connguard status` does it: INFO over one held connection (an ACL that denies
    INFO is one `denied` line), capacity against the thresholds, the same status/1 object or error object."""
    def observe(member: Member) -> Row:
        try:
            with open_connection(member.target, connect_timeout_s=connect_timeout_s) as conn:
                try:
                    snap = take_snapshot(conn, client_list=False)
                except redis.exceptions.ResponseError as exc:
                    raise denied(exc, f"{member.redacted}: status needs INFO") from None
                limitations = tuple(getattr(conn, "limitations", ()))
        except ConnguardError as err:
            doc = error_object(STATUS_SCHEMA, member.redacted, err, reachable=err.kind == "denied")
            return row_from_status(member, doc)
        cap = capacity(snap)
        return row_from_status(member, status_payload(member.target, snap, cap, cap.status(thresholds), limitations))

    return observe


def doctor_observer(settings: DoctorSettings, *, once: bool, connect_timeout_s: float,
                    samples: int = DEFAULT_SAMPLES) -> Observer:
    """`doctor` for one member, through the public `run_doctor` (a full server is diagnosed, not raised)."""

    def observe(member: Member, pause: Pause = time.sleep) -> Row:
        try:
            doc = run_doctor(member.target, settings, once=once, samples=samples, sleep=pause,
                             connect_timeout_s=connect_timeout_s).to_dict()
        except ConnguardError as err:
            doc = error_json(member.redacted, err)
        return row_from_doctor(member, doc)

    return observe


def _never_raises(observe: Observer, command: str) -> Observer:
    """A bug in one target's analysis must not take the other targets' results down with it."""

    def safe(member: Member, pause: Pause) -> Row:
        try:
            return observe(member, pause) if command == "doctor" else observe(member)
        except Exception as exc:  # noqa: BLE001 - reported as that target's row, never a traceback
            err = ConnguardError(f"internal error while observing {member.redacted}: {type(exc).__name__}")
            doc = error_json(member.redacted, err)
            return row_from_doctor(member, doc) if command == "doctor" else row_from_status(member, doc)

    return safe


# -- the runner -------------------------------------------------------------------------------------------------
def _error_object(command: str, source: str, err: ConnguardError) -> dict[str, Any]:
    return {"schema": SCHEMA, "command": command, "kind": None, "source": source, "status": "unknown",
            "exit_code": int(err.exit_code), "error": err.message, "summary": None, "problems": [], "targets": []}


def run_fleet(command: str, request: FleetRequest, observe: Observer, *, as_json: bool,
              console: Console | None = None) -> int:
    """Resolve, observe every member with bounded concurrency, print, and return the worst exit code."""
    try:
        resolved = resolve(request)
    except ConnguardError as err:
        if as_json:
            emit_json(_error_object(command, "(see error)", err))
        raise
    for problem in resolved.problems:
        click.echo(problem.line(), err=True)
    # A doctor's window waits between samples: that wait gives its worker back (fan_out_pausing), so windows overlap.
    rows = fan_out_pausing(resolved.members, _never_raises(observe, command), concurrency=request.concurrency)
    if resolved.kind != "single":
        for row in rows:
            if row.error and row.status == "unknown":  # not observed at all (a full server is diagnosed)
                where = "node" if resolved.kind == "cluster" else row.member.role if resolved.kind == "sentinel" else "target"
                click.echo(f"connguard: {where} {row.member.label}: {row.error}", err=True)
    summary = summarize(resolved.kind, rows, resolved.problems)
    exit_code = int(EXIT_BY_STATUS[summary.status])
    if as_json:
        emit_json(fleet_json(command=command, kind=resolved.kind, source=resolved.source, rows=rows, summary=summary,
                             problems=resolved.problems, exit_code=exit_code))
    else:
        console = console or console_for(sys.stdout)  # piped: never wrapped (docs/contract.md)
        render_fleet(console, rows=rows, summary=summary, source=resolved.source, kind=resolved.kind)
    return exit_code


# -- the standalone commands -----------------------------------------------------------------------------------
def _source_argument(func: F) -> F:
    return click.argument("source", required=False, metavar="[URL|FILE]")(func)


@click.group("fleet")
def fleet_group() -> None:
    """status or doctor over many servers at once: a fleet file, a redis+sentinel:// URL, or a Cluster.
    One risk-sorted table (or --json: connguard.fleet/1) and the worst exit code."""


@fleet_group.command("status", cls=OneLineCommand)
@_source_argument
@fleet_options
@json_option
@connect_timeout_option
@click.option("--warning", "warning_ratio", type=FiniteNumber(0, 1, low_open=True), default=WARNING_RATIO,
              show_default=True, metavar="RATIO", help="Ratio for WARNING, reached at or above it.")
@click.option("--critical", "critical_ratio", type=FiniteNumber(0, 1, low_open=True), default=CRITICAL_RATIO,
              show_default=True, metavar="RATIO", help="Ratio for CRITICAL, reached at or above it.")
@handle_errors
def fleet_status_command(source: str | None, fleet_file: str | None, cluster: bool, all_members: bool,
                         concurrency: int, as_json: bool, connect_timeout_s: float, warning_ratio: float,
                         critical_ratio: float) -> None:
    """How close every member is to maxclients. Exit: the worst of 0 ok, 1 warning, 2 critical, 3 unknown
    (ordered critical > unknown > warning > ok)."""
    thresholds = Thresholds(warning_ratio, critical_ratio)
    request = FleetRequest(source, fleet_file, cluster, all_members, concurrency, connect_timeout_s)
    sys.exit(run_fleet("status", request, status_observer(thresholds, connect_timeout_s), as_json=as_json))


@fleet_group.command("doctor", cls=OneLineCommand)
@_source_argument
@fleet_options
@window_options
@json_option
@connect_timeout_option
@handle_errors
def fleet_doctor_command(source: str | None, fleet_file: str | None, cluster: bool, all_members: bool,
                         concurrency: int, interval_s: float, samples: int, once: bool, idle_threshold_s: float,
                         top: int, as_json: bool, connect_timeout_s: float) -> None:
    """Diagnose every member; one table ranked by risk, the member nearest its limit and the shared cause.
    Read only."""
    settings = DoctorSettings(interval_s=interval_s, idle_threshold_s=idle_threshold_s, top=top)
    request = FleetRequest(source, fleet_file, cluster, all_members, concurrency, connect_timeout_s)
    observer = doctor_observer(settings, once=once, samples=samples, connect_timeout_s=connect_timeout_s)
    sys.exit(run_fleet("doctor", request, observer, as_json=as_json))
