"""Recordings: every Observation as one JSON line, appended as it is taken, read back losslessly.

A recording is JSON Lines. A session starts with one header line (schema `connguard.recording/1`: the tool,
the target without its password, the settings) followed by one line per Observation (schema
`connguard.observation/1`): what the server said verbatim (INFO, CONFIG GET maxclients, CLIENT LIST),
the socket census, host facts, both clocks, and the observer's own connects and refusals. Parsing happens
again on replay, so a replay sees exactly what the live run saw and reaches the same verdict.

Never written: a password (the target is stored field by field without it; only known-safe URL query
options are kept). Client names and addresses are kept: they are the evidence.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Mapping

from connguard import __version__
from connguard.contract import EVENT_SCHEMA, OBSERVATION_SCHEMA, RECORDING_SCHEMA
from connguard.errors import BadArguments, ConnguardError
from connguard.probe.build import RawCapture, build_snapshot
from connguard.probe.model import HostFacts
from connguard.probe.server_config import server_config_from_dict, server_config_to_dict
from connguard.probe.sampler import Observation
from connguard.probe.serialize import census_from_dict, census_to_dict
from connguard.target import Target

__all__ = ["Recorder", "Recording", "read_recording", "read_recordings"]

HEADER_SCHEMA = RECORDING_SCHEMA  # replay skips EVENT_SCHEMA lines (watch's kills)
SAFE_QUERY = ("ssl_cert_reqs", "ssl_ca_certs")  # URL options worth keeping; anything else may be a secret


# -- targets, without their password ----------------------------------------------------------------------
def target_to_dict(target: Target) -> dict[str, Any]:
    return {"scheme": target.scheme, "host": target.host, "port": target.port, "path": target.path,
            "db": target.db, "username": target.username, "redacted": target.redacted,
            "query": {k: v for k, v in target.query.items() if k in SAFE_QUERY}}


def target_from_dict(data: Mapping[str, Any]) -> Target:
    return Target(data["scheme"], data.get("host"), data.get("port"), data.get("path"), int(data.get("db") or 0),
                  data.get("username"), None, dict(data.get("query") or {}))


# -- failures -----------------------------------------------------------------------------------------------
def _error_classes() -> dict[str, type[ConnguardError]]:
    found: dict[str, type[ConnguardError]] = {}
    pending: list[type[ConnguardError]] = [ConnguardError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.kind, cls)
        pending.extend(cls.__subclasses__())
    return found


def failure_to_dict(err: ConnguardError | None) -> dict[str, Any] | None:
    if err is None:
        return None
    return {"kind": err.kind, "message": err.message, "exit_code": int(err.exit_code)}


def failure_from_dict(data: Mapping[str, Any] | None) -> ConnguardError | None:
    if data is None:
        return None
    err = _error_classes().get(data["kind"], ConnguardError)(data["message"])
    if int(err.exit_code) != data["exit_code"] or err.kind != data["kind"]:  # a kind this version does not know
        err.exit_code = data["exit_code"]  # type: ignore[misc]
        err.kind = data["kind"]  # type: ignore[misc]
    return err


# -- observations -------------------------------------------------------------------------------------------
def observation_to_dict(obs: Observation) -> dict[str, Any]:
    """Everything a replay needs to rebuild the Observation, the Snapshot re-parsed from the raw replies."""
    raw = obs.raw
    return {
        "schema": OBSERVATION_SCHEMA,
        "wall": obs.wall,
        "monotonic": obs.monotonic,
        "refused": obs.refused,
        "failure": failure_to_dict(obs.failure),
        "observer_connects": obs.observer_connects,
        "refusals": obs.refusals,
        "client_list_included": obs.client_list_included,
        "own_client_id": obs.own_client_id,
        "observed": obs.snapshot is not None,
        "raw": None if raw is None else {"taken_at": raw.taken_at, "info_all": raw.info_all,
                                         "config_maxclients": raw.config_maxclients,
                                         "client_list": raw.client_list, "limitations": list(raw.limitations),
                                         "server_config": server_config_to_dict(raw.server_config)},
        "census": census_to_dict(obs.census),
        "host": None if obs.host is None else vars(obs.host).copy(),
    }


def observation_from_dict(data: Mapping[str, Any]) -> Observation:
    if data.get("schema") != OBSERVATION_SCHEMA:
        raise ValueError(f"not a {OBSERVATION_SCHEMA} line (schema={data.get('schema')!r})")
    raw_data = data.get("raw")
    raw = None if raw_data is None else RawCapture(
        taken_at=raw_data["taken_at"], info_all=raw_data["info_all"], config_maxclients=raw_data["config_maxclients"],
        client_list=raw_data["client_list"], limitations=tuple(raw_data["limitations"]),
        server_config=server_config_from_dict(raw_data.get("server_config")))
    census = census_from_dict(data.get("census"))
    host = None if data.get("host") is None else HostFacts(**data["host"])
    snapshot = None
    if raw is not None and data.get("observed", True):
        # The Sampler built its Snapshot with exactly these arguments: re-parsing gives the same Snapshot.
        snapshot = build_snapshot(raw, host=host, census=census, own_client_id=data.get("own_client_id"),
                                  observer_connections=1, monotonic=data["monotonic"],
                                  observer_connects=data["observer_connects"])
    return Observation(
        snapshot=snapshot, monotonic=data["monotonic"], wall=data["wall"], refused=bool(data["refused"]),
        failure=failure_from_dict(data.get("failure")), census=census, host=host,
        observer_connects=data["observer_connects"], client_list_included=bool(data["client_list_included"]),
        raw=raw, own_client_id=data.get("own_client_id"), refusals=data.get("refusals", 0),
    )


# -- validation on read: a damaged or hand-edited file is one line (BadArguments), never a crash further on --
_NUM, _INT, _STR, _BOOL, _DICT, _LIST, _NONE = "number", "integer", "text", "true/false", "object", "list", "null"


def _type_name(value: Any) -> str:
    if value is None:
        return _NONE
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int):
        return _INT
    if isinstance(value, float):
        return _NUM if math.isfinite(value) else "a non-finite number"
    return {str: _STR, dict: _DICT, list: _LIST}.get(type(value), type(value).__name__)


def _check(data: Mapping[str, Any], where: str, fields: Mapping[str, tuple[str, ...]], required: tuple[str, ...] = ()) -> None:
    """Each of `fields` present has one of the allowed JSON types (an integer is a number too); `required` are there."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'the line'} is {_type_name(data)}, not an object")
    for name in required:
        if name not in data:
            raise ValueError(f"{where}{name} is missing")
    for name, allowed in fields.items():
        if name in data:
            got = _type_name(data[name])
            if got not in allowed and not (got == _INT and _NUM in allowed):
                raise ValueError(f"{where}{name} is {got}, want {' or '.join(allowed)}")


def _check_header(data: Mapping[str, Any]) -> None:
    _check(data, "", {"tool": (_STR,), "target": (_DICT,), "settings": (_DICT, _NONE)}, required=("target",))
    target = data["target"]
    _check(target, "target.", {"scheme": (_STR,), "host": (_STR, _NONE), "port": (_INT, _NONE), "path": (_STR, _NONE),
                               "db": (_INT, _NONE), "username": (_STR, _NONE), "redacted": (_STR,),
                               "query": (_DICT, _NONE)}, required=("scheme",))
    if target["scheme"] not in ("redis", "rediss", "unix"):
        raise ValueError(f"target.scheme {target['scheme']!r} is not redis, rediss or unix")
    if (target.get("db") or 0) < 0 or not 0 <= (target.get("port") or 0) <= 65535:
        raise ValueError("target.db or target.port is out of range")
    for value in (target.get("query") or {}).values():
        if not isinstance(value, str):
            raise ValueError(f"a target.query value is {_type_name(value)}, want text")
    settings = data.get("settings") or {}
    _check(settings, "settings.", {"interval_s": (_NUM,), "idle_threshold_s": (_NUM,), "top": (_INT,),
                                   "samples": (_INT, _NONE)})


def _check_observation(data: Mapping[str, Any]) -> None:
    _check(data, "", {"wall": (_NUM,), "monotonic": (_NUM,), "refused": (_BOOL,), "failure": (_DICT, _NONE),
                      "observer_connects": (_INT,), "refusals": (_INT,), "client_list_included": (_BOOL,),
                      "own_client_id": (_INT, _NONE), "observed": (_BOOL,), "raw": (_DICT, _NONE),
                      "census": (_DICT, _NONE), "host": (_DICT, _NONE)},
           required=("wall", "monotonic", "refused", "observer_connects", "client_list_included"))
    if data.get("failure") is not None:
        _check(data["failure"], "failure.", {"kind": (_STR,), "message": (_STR,), "exit_code": (_INT,)},
               required=("kind", "message", "exit_code"))
        if data["failure"]["exit_code"] not in (0, 1, 2, 3):
            raise ValueError("failure.exit_code is not 0-3")
    if data.get("raw") is not None:
        raw = data["raw"]
        _check(raw, "raw.", {"taken_at": (_NUM,), "info_all": (_STR,), "config_maxclients": (_INT, _NONE),
                             "client_list": (_STR, _NONE), "limitations": (_LIST,), "server_config": (_DICT, _NONE)},
               required=("taken_at", "info_all", "config_maxclients", "client_list", "limitations"))
        if not all(isinstance(x, str) for x in raw["limitations"]):
            raise ValueError("raw.limitations holds something other than text")
    if data.get("census") is not None:
        census = data["census"]
        _check(census, "census.", {"port": (_INT,), "by_host": (_DICT,), "peers": (_LIST,), "unaccepted": (_INT,),
                                   "time_wait_peers": (_LIST,), "taken_at": (_NUM, _NONE)}, required=("port", "by_host"))
        if not all(_type_name(n) == _INT for n in census["by_host"].values()):
            raise ValueError("census.by_host holds something other than integers")
        for key in ("peers", "time_wait_peers"):
            for peer in census.get(key, ()):
                if not (isinstance(peer, list) and len(peer) == 2 and isinstance(peer[0], str)
                        and _type_name(peer[1]) == _INT):
                    raise ValueError(f"census.{key} holds something other than [ip, port] pairs")
    if data.get("host") is not None:
        _check(data["host"], "host.", {"pid": (_INT,), "fd_limit_soft": (_INT, _NONE), "fd_limit_hard": (_INT, _NONE),
                                       "open_fds": (_INT, _NONE), "passive_opens": (_INT, _NONE),
                                       "passive_opens_at": (_NUM, _NONE), "internal_peers": (_DICT,),
                                       "cluster_bus_links_in": (_INT, _NONE)},
               required=("pid", "fd_limit_soft", "fd_limit_hard", "open_fds"))
        if set(data["host"]) - {"pid", "fd_limit_soft", "fd_limit_hard", "open_fds", "passive_opens",
                                "passive_opens_at", "internal_peers", "cluster_bus_links_in"}:
            raise ValueError("host has fields this version does not know")
        peers = data["host"].get("internal_peers") or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in peers.items()):
            raise ValueError("host.internal_peers holds something other than host: role text")


# -- files ----------------------------------------------------------------------------------------------------
class Recorder:
    """Appends one session to a JSON Lines file: a header now, then one line per `write(observation)`,
    flushed at once so a recording cut short by Ctrl-C or a crash keeps every tick written so far."""

    def __init__(self, path: str | Path, *, target: Target, tool: str, settings: Mapping[str, Any] | None = None,
                 clock: Any = time.time) -> None:
        self.path = Path(path)
        try:
            self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise BadArguments(f"cannot write the recording {str(self.path)!r}: {exc.strerror or exc}") from None
        self.written = 0
        self._line({"schema": HEADER_SCHEMA, "tool": tool, "connguard": __version__, "started": clock(),
                    "target": target_to_dict(target), "settings": dict(settings or {})})

    def _line(self, payload: Mapping[str, Any]) -> None:
        if self._file is None:
            raise ValueError("the recording is closed")
        self._file.write(json.dumps(payload, separators=(",", ":")) + "\n")
        self._file.flush()

    def write(self, observation: Observation) -> None:
        self._line(observation_to_dict(observation))
        self.written += 1

    def event(self, payload: Mapping[str, Any]) -> None:
        """An action taken between observations (watch's kills), kept beside them; replays skip it."""
        self._line({"schema": EVENT_SCHEMA, **payload})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Recording:
    """One session of a recording file: who wrote it, about which target, with what settings, and what it saw."""

    tool: str
    target: Target
    redacted: str  # the target as the live run printed it
    settings: Mapping[str, Any]
    observations: tuple[Observation, ...] = field(default=())


def read_recordings(path: str | Path) -> list[Recording]:
    """Every session in a recording file, oldest first. Bad input raises BadArguments with the line number."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadArguments(f"cannot read the recording {str(path)!r}: {exc.strerror or exc}") from None
    sessions: list[tuple[dict[str, Any], list[Observation]]] = []
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {_type_name(data)}, not an object")
            if data.get("schema") == HEADER_SCHEMA:
                _check_header(data)
                sessions.append((data, []))
                continue
            if data.get("schema") == EVENT_SCHEMA:
                continue
            if not sessions:
                raise ValueError(f"an observation before any {HEADER_SCHEMA} header")
            if data.get("schema") == OBSERVATION_SCHEMA:
                _check_observation(data)
            sessions[-1][1].append(observation_from_dict(data))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadArguments(f"{path}:{number}: not a connguard recording line ({exc})") from None
    if not sessions:
        raise BadArguments(f"{path}: no connguard recording in it (want {HEADER_SCHEMA} JSON lines)")
    return [Recording(tool=h.get("tool", "?"), target=target_from_dict(h["target"]),
                      redacted=h["target"].get("redacted", target_from_dict(h["target"]).redacted),
                      settings=h.get("settings") or {}, observations=tuple(obs)) for h, obs in sessions]


def read_recording(path: str | Path) -> list[Observation]:
    """The Observations of the last session in the file (each run appends a session)."""
    return list(read_recordings(path)[-1].observations)
