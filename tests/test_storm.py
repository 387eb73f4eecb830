"""The storm experiment, short form: against a full server the guard makes far fewer attempts, then recovers."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from connguard.cli import main
from connguard.lab.storm import run_storm


@pytest.fixture(autouse=True)
def quiet_breaker():
    logging.getLogger("connguard.guard").setLevel(logging.ERROR)
    yield
    logging.getLogger("connguard.guard").setLevel(logging.NOTSET)


@pytest.mark.slow
def test_the_guard_makes_far_fewer_attempts_than_redis_py_defaults_and_recovers(default_binary):
    # after_s covers the longest default open period (3 s x 1.25 jitter), so the guard's next probe falls inside it
    # held=0: the clients start at a full server, so the guard has only its breaker's timer to go by
    result = run_storm(("redis-py", "guard"), workers=8, full_s=3.0, after_s=4.5, held=0, binary=default_binary)
    plain, guard = result.arm("redis-py"), result.arm("guard")
    assert plain is not None and guard is not None
    assert plain.client_attempts_full >= 40  # a burst of refused sockets per command
    assert guard.client_attempts_full <= plain.client_attempts_full / 5
    assert guard.client_attempts_full <= 8  # the first burst (workers that connected before the breaker opened), then one probe per open period
    for arm in (plain, guard):
        # the clients' count and the server's own counters tell the same story (only the workers connect)
        assert abs(arm.server_attempts_full - arm.client_attempts_full) <= 2
        assert max(s.usage for s in arm.series[:2]) == 1.0  # the leak really filled the server
        assert arm.served_s is not None and arm.served_s <= 4.5  # every worker was served again after the clear
        assert arm.ok_after > 0 and arm.ok_full == 0
    assert result.fewer_attempts() >= 5


@pytest.mark.slow
def test_with_a_held_connection_the_guard_learns_room_over_it_instead_of_probing(default_binary):
    """The clients held one live connection from before the leak: the guard asks INFO over it, so while the server
    stays full it makes no probe after the refusal that opened its breaker, and after the clear every worker is
    served again within the run (counts only; bench-free)."""
    result = run_storm(("redis-py", "guard"), workers=8, full_s=3.0, after_s=2.0, held=1, binary=default_binary)
    plain, guard = result.arm("redis-py"), result.arm("guard")
    assert plain is not None and guard is not None and guard.held == 1
    assert plain.client_attempts_full >= 40
    # Refusals only in the first second (the burst of workers that connected while the breaker was still closed);
    # after that no probe, though the breaker's timer fell due twice: the readings said full.
    assert guard.rejected_full >= 1
    assert [s.rejected for s in guard.series[1:3]] == [0, 0]
    assert guard.client_attempts_full <= plain.client_attempts_full / 10
    for arm in (plain, guard):
        assert arm.ok_full > 0  # the held connection kept serving while the server was full
        assert arm.served_s is not None and arm.errors_stop_s is not None


@pytest.mark.slow
def test_the_command_writes_json_and_a_plot(tmp_path, default_binary):
    result = CliRunner().invoke(main, [
        "lab", "storm", "--arms", "guard", "--workers", "4", "--full-s", "1", "--after-s", "2.5",
        "--server-bin", default_binary.path, "--out", str(tmp_path), "--json",
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "storm.json").read_text())
    assert saved["schema"] == "connguard.storm/1" and saved["arms"][0]["arm"] == "guard"
    assert saved["machine"]["nproc"] >= 1
    assert (tmp_path / "storm.png").stat().st_size > 10_000


def test_bad_storm_settings_are_refused():
    with pytest.raises(ValueError, match="unknown storm arm"):
        run_storm(("retry-harder",))
    with pytest.raises(ValueError, match="maxclients=16 must leave room"):
        run_storm(("guard",), workers=16, maxclients=16)
