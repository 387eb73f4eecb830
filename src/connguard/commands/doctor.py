"""`connguard doctor`: name the cause of connection exhaustion, with evidence and the next command."""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, Any

import click

from connguard.analysis.diagnosis import Diagnosis, DoctorSettings
from connguard.commands._window_options import window_options
from connguard.commands._fleet_options import fleet_options, wants_fleet
from connguard.commands._common import (
    cli_target, insecure_option,
    EXIT_BY_STATUS, connect_timeout_option, emit_json, handle_errors, json_option, url_argument,
)
from connguard.errors import BadArguments, ConnguardError

if TYPE_CHECKING:
    from connguard.probe.recording import Recording
    from connguard.target import Target

# Options that shape a live look, meaningless for a replay (the recording already holds what was seen).
LIVE_ONLY = {"once": "--once", "samples": "--samples", "connect_timeout_s": "--connect-timeout", "record": "--record",
             "fleet_file": "--fleet", "cluster": "--cluster", "all_members": "--all-members",
             "concurrency": "--concurrency"}
RECORDED = ("interval_s", "idle_threshold_s", "top")  # taken from the recording unless given


@click.command("doctor")
@url_argument
@fleet_options
@window_options
@click.option("--record", "record", metavar="FILE.jsonl", default=None,
              help="Append every observation (INFO, CLIENT LIST, census, host facts, clocks; never a password) "
                   "to FILE as JSON lines, for --replay.")
@click.option("--replay", "replay", metavar="FILE.jsonl", default=None,
              help="Diagnose a recording offline (its last session), with no server: the live run's verdict.")
@json_option
@connect_timeout_option
@insecure_option
@click.pass_context
@handle_errors
def doctor_command(ctx: click.Context, url: str | None, fleet_file: str | None, cluster: bool, all_members: bool,
                   concurrency: int, interval_s: float, samples: int, once: bool, idle_threshold_s: float, top: int,
                   record: str | None, replay: str | None, as_json: bool, connect_timeout_s: float) -> None:
    """Diagnose connection exhaustion: verdict, numbered findings with evidence and commands, top sources.
    Read only. Exit 0 ok, 1 warning, 2 critical (including a full server), 3 unknown.

    Many servers at once: --fleet FILE, a redis+sentinel:// URL, or a Cluster (--cluster, or a node whose INFO
    says cluster_enabled:1): one risk-sorted table (--json: connguard.fleet/1) and the worst exit code."""
    given = {name for name in ctx.params if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    if replay is None and wants_fleet(url, fleet_file, cluster, all_members):
        _fleet(url, fleet_file, cluster, all_members, concurrency, given, ctx.params)
    target_text = "(invalid URL)" if url else "(default)"  # never echo a raw URL: it may hold a password
    try:
        if replay is not None:
            session, settings = _load_replay(replay, url, given, ctx.params)
            target_text = session.redacted
            diag = _replay(session, settings)
        else:

            if once and "samples" in given:
                raise BadArguments("--once takes one Snapshot; --samples asks for several: give one of them")

            settings = DoctorSettings(interval_s=interval_s, idle_threshold_s=idle_threshold_s, top=top)
            target = cli_target(url)
            target_text = target.redacted
            diag = _live(target, settings, once=once, samples=samples, record=record,
                         connect_timeout_s=connect_timeout_s)
            if record is None and diag.server is not None and diag.server.cluster_enabled:
                # A Cluster node (its own INFO says so): report every node instead. Detected from what the
                # single-target run saw, so a plain server's run opens no extra connection and is unchanged.
                _fleet(url, None, True, all_members, concurrency, given, ctx.params)
    except ConnguardError as err:
        if as_json:
            from connguard.render.json import error_json

            emit_json(error_json(target_text, err))
            sys.exit(int(err.exit_code))
        raise
    if as_json:
        from connguard.render.json import diagnosis_json

        emit_json(diagnosis_json(diag))
    else:
        from connguard.render.console import console_for
        from connguard.render.text import render_text

        render_text(diag, console_for())  # piped output (logs, CI, checks) is never wrapped mid-sentence
    sys.exit(int(EXIT_BY_STATUS[diag.status]))


FLEET_UNSUPPORTED = {"record": "--record", "replay": "--replay"}


def _fleet(url: str | None, fleet_file: str | None, cluster: bool, all_members: bool, concurrency: int,
           given: set[str], params: dict[str, Any]) -> None:
    from connguard.commands.fleet import FleetRequest, doctor_observer, run_fleet

    misplaced = [flag for name, flag in FLEET_UNSUPPORTED.items() if name in given]
    if misplaced:
        raise BadArguments(f"{', '.join(misplaced)} records one server: it does not go with a fleet, Sentinel or Cluster run")
    if params["once"] and "samples" in given:
        raise BadArguments("--once takes one Snapshot; --samples asks for several: give one of them")
    settings = DoctorSettings(interval_s=params["interval_s"], idle_threshold_s=params["idle_threshold_s"], top=params["top"])
    connect_timeout_s = params["connect_timeout_s"]
    request = FleetRequest(url, fleet_file, cluster, all_members, concurrency, connect_timeout_s)
    observer = doctor_observer(settings, once=params["once"], samples=params["samples"], connect_timeout_s=connect_timeout_s)
    sys.exit(run_fleet("doctor", request, observer, as_json=params["as_json"]))


def _live(target: Target, settings: DoctorSettings, *, once: bool, samples: int, record: str | None,
          connect_timeout_s: float) -> Diagnosis:
    from connguard.doctor import run_doctor

    if record is None:
        return run_doctor(target, settings, once=once, samples=samples, connect_timeout_s=connect_timeout_s)
    from connguard.probe.recording import Recorder

    meta = {**_settings_dict(settings), "samples": 1 if once else samples}
    with Recorder(record, target=target, tool="doctor", settings=meta) as recorder:
        return run_doctor(target, settings, once=once, samples=samples, connect_timeout_s=connect_timeout_s,
                          recorder=recorder)


def _load_replay(path: str, url: str | None, given: set[str], params: dict[str, Any]) -> tuple[Recording, DoctorSettings]:
    """The last session of the recording, and the settings to judge it by: the recorded ones, so the replay
    judges as the live run did, except where an option is given now."""
    from connguard.probe.recording import read_recordings

    misplaced = [flag for name, flag in LIVE_ONLY.items() if name in given] + (["URL"] if url else [])
    if misplaced:
        raise BadArguments(f"--replay reads a recording, so {', '.join(misplaced)} does not apply")
    session = read_recordings(path)[-1]
    if not session.observations:
        raise BadArguments(f"{path}: the last session in it recorded no observation")
    recorded = {k: v for k, v in session.settings.items() if k in RECORDED}
    chosen = {**recorded, **{k: params[k] for k in RECORDED if k in given}}
    try:
        return session, DoctorSettings(**chosen)
    except (TypeError, ValueError) as exc:
        raise BadArguments(f"{path}: recorded settings are not valid ({exc})") from None


def _replay(session: Recording, settings: DoctorSettings) -> Diagnosis:
    from connguard.analysis.diagnosis import diagnose_observations

    diag = diagnose_observations(session.observations, settings, session.target)
    return dataclasses.replace(diag, target=session.redacted)  # as the live run printed it (with ':***@')


def _settings_dict(settings: DoctorSettings) -> dict[str, Any]:
    return {"interval_s": settings.interval_s, "idle_threshold_s": settings.idle_threshold_s, "top": settings.top}
