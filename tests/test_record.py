"""Record and replay: `doctor --record` then `doctor --replay` gives the live run's findings, a recording
round-trips losslessly, and no password is ever written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from connguard.errors import ServerFull
from connguard.lab.scenarios import run_scenario
from connguard.probe.recording import (
    Recorder, observation_from_dict, observation_to_dict, read_recording, read_recordings,
)
from connguard.probe.sampler import Observation, Sampler
from connguard.target import parse_target


def doctor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "connguard", "doctor", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def same(a: Observation, b: Observation) -> None:
    """Field by field: a ConnguardError compares by identity, so the failure is compared by kind and text."""
    for name in Observation.__dataclass_fields__:
        if name == "failure":
            assert (a.failure is None) == (b.failure is None)
            if a.failure is not None:
                assert (type(a.failure), a.failure.message, a.failure.exit_code) == (
                    type(b.failure), b.failure.message, b.failure.exit_code)
        else:
            assert getattr(a, name) == getattr(b, name), name


def test_live_observations_round_trip_losslessly_refused_ones_included(full_server, tmp_path):
    server, monitor, crowd, leak = full_server
    target = parse_target(server.url)
    path = tmp_path / "rec.jsonl"
    with Sampler(target, connect_timeout_s=0.3, reconnect_timeout_s=0.3, census=True) as sampler, \
            Recorder(path, target=target, tool="test") as recorder:
        taken = [sampler.sample()]  # full: refused, census only
        crowd.close_group(leak)
        for kwargs in ({}, {"client_list": False}, {}):
            taken.append(sampler.sample(**kwargs))
        for obs in taken:
            recorder.write(obs)
    assert taken[0].refused and isinstance(taken[0].failure, ServerFull) and taken[0].census is not None
    assert all(o.snapshot is not None for o in taken[1:]) and taken[1].census is not None
    back = read_recording(path)
    assert len(back) == len(taken)
    for a, b in zip(taken, back):
        same(a, b)
    # In memory too, and every line is one JSON object.
    for obs in taken:
        same(obs, observation_from_dict(json.loads(json.dumps(observation_to_dict(obs)))))
    assert all(json.loads(line) for line in path.read_text().splitlines())


@pytest.mark.slow
def test_a_live_leak_recorded_then_replayed_gives_identical_findings(default_binary, tmp_path):
    path = tmp_path / "leak.jsonl"
    with run_scenario("connection_leak", binary=default_binary, scale=0.6, log=lambda line: None) as run:
        live = doctor(run.url, *run.doctor_flags, "--samples", "3", "--json", "--record", str(path))
    replay = doctor("--replay", str(path), "--json")
    assert live.returncode == replay.returncode == 1, live.stderr + replay.stderr
    a, b = json.loads(live.stdout), json.loads(replay.stdout)
    assert "connection_leak" in [f["cause"] for f in a["findings"]]
    assert a["findings"] == b["findings"] and a == b, "the replay is the live run, offline"
    assert a["rates"]["snapshots"] == 3
    human = doctor("--replay", str(path))
    assert human.returncode == 1 and "connection_leak" in human.stdout.replace(" ", "_").lower() + human.stdout


def test_a_live_storm_recorded_then_replayed_gives_identical_findings(default_binary, tmp_path):
    path = tmp_path / "storm.jsonl"
    with run_scenario("retry_storm", binary=default_binary, scale=0.6, log=lambda line: None) as run:
        live = doctor(run.url, *run.doctor_flags, "--json", "--record", str(path), "--connect-timeout", "20")
    replay = doctor("--replay", str(path), "--json")
    assert live.returncode == replay.returncode == 2, live.stderr + replay.stderr
    a, b = json.loads(live.stdout), json.loads(replay.stdout)
    assert "retry_storm" in [f["cause"] for f in a["findings"]], a["findings"]
    assert a["findings"] == b["findings"] and a == b


def test_no_password_is_ever_written_and_a_failure_replays_as_the_same_error(default_binary, start_server, tmp_path):
    server = start_server(default_binary, password="hunter2-secret")
    path = tmp_path / "auth.jsonl"
    ok = doctor(f"redis://:hunter2-secret@127.0.0.1:{server.port}", "--once", "--json", "--record", str(path))
    assert ok.returncode == 0, ok.stderr
    wrong = doctor(f"redis://:nope-nope@127.0.0.1:{server.port}", "--once", "--json", "--record", str(path))
    assert wrong.returncode == 3 and json.loads(wrong.stdout)["error"]
    text = path.read_text()
    assert "hunter2" not in text and "nope-nope" not in text
    sessions = read_recordings(path)
    assert len(sessions) == 2 and sessions[0].redacted == f"redis://:***@127.0.0.1:{server.port}"
    assert sessions[0].target.password is None and sessions[0].settings["samples"] == 1
    # The last session is the failed one: its replay fails the same way, with the same JSON.
    replay = doctor("--replay", str(path), "--json")
    assert replay.returncode == wrong.returncode and json.loads(replay.stdout) == json.loads(wrong.stdout)


@pytest.mark.parametrize("args, message", [
    (("--replay", "/nonexistent/rec.jsonl"), "cannot read the recording"),
    (("redis://127.0.0.1:1", "--replay", "x.jsonl"), "does not apply"),
    (("--replay", "x.jsonl", "--once"), "--once does not apply"),
    (("--record", "/nonexistent-dir/rec.jsonl", "--connect-timeout", "0.2"), "cannot write the recording"),
    (("--interval", "0"), "out of range"),
    (("--interval", "nan"), "not a finite number"),
    (("--idle-threshold", "-1"), "out of range"),
    (("--top", "2.5"), "not a whole number"),
    (("--samples", "0"), "out of range"),
    (("--once", "--samples", "3"), "give one of them"),
])
def test_bad_input_is_one_line_and_exit_3(args, message):
    out = doctor(*args)
    assert out.returncode == 3, out.stdout + out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_a_file_that_is_not_a_recording_is_refused_with_its_line_number(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema": "connguard.recording/1", "tool": "doctor", "target": {"scheme": "redis", '
                   '"host": "127.0.0.1", "port": 6379}, "settings": {}}\n{"hello": 1}\n')
    out = doctor("--replay", str(bad))
    assert out.returncode == 3 and f"{bad}:2:" in out.stderr
    bad.write_text("not json\n")
    assert "bad.jsonl:1:" in doctor("--replay", str(bad)).stderr
    Path(tmp_path / "empty.jsonl").write_text("")
    assert "no connguard recording" in doctor("--replay", str(tmp_path / "empty.jsonl")).stderr


def test_a_saved_snapshot_keeps_the_census_and_the_observer_fields():
    """serialize.py used to drop observer_connections and every census field but the counts."""
    from connguard.probe.build import RawCapture, build_snapshot
    from connguard.probe.model import SocketCensus
    from connguard.probe.serialize import snapshot_from_dict, snapshot_to_dict

    census = SocketCensus(6379, {"10.0.0.5": 2}, frozenset({("10.0.0.5", 4000), ("10.0.0.5", 4001)}), 1,
                          frozenset({("10.0.0.6", 5000)}), taken_at=12.5)
    info = ("# Server\r\nredis_version:7.0.15\r\nprocess_id:7\r\ntcp_port:6379\r\n# Clients\r\nconnected_clients:3\r\n"
            "# Stats\r\ntotal_connections_received:9\r\nrejected_connections:0\r\n")
    snap = build_snapshot(RawCapture(1000.0, info, 100, None), census=census, observer_connections=1,
                          monotonic=12.5, observer_connects=3)
    back = snapshot_from_dict(json.loads(json.dumps(snapshot_to_dict(snap))))
    assert back == snap
    assert (back.census.peers, back.census.unaccepted, back.census.time_wait_peers) == (
        census.peers, 1, census.time_wait_peers)
    assert (back.observer_connections, back.observer_connects, back.monotonic) == (1, 3, 12.5)


def test_only_known_safe_url_options_are_written():
    from connguard.probe.recording import target_from_dict, target_to_dict
    from connguard.target import Target

    target = Target("rediss", "cache", 6380, None, 2, "ops", "s3cret",
                    {"password": "s3cret", "ssl_ca_certs": "/etc/ca.pem", "token": "t0k"})
    saved = target_to_dict(target)
    assert "s3cret" not in json.dumps(saved) and "t0k" not in json.dumps(saved)
    back = target_from_dict(saved)
    assert back.password is None and back.query == {"ssl_ca_certs": "/etc/ca.pem"}
    assert (back.scheme, back.host, back.port, back.db, back.username) == ("rediss", "cache", 6380, 2, "ops")
    assert saved["redacted"] == "rediss://ops:***@cache:6380/2"
