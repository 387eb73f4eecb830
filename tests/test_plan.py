"""`connguard plan`: the runbook's arithmetic (four instances with pool 50 take 200 connections) and its verdicts."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from connguard.cli import main
from connguard.remedy.plan import PlanInput, plan


def test_four_instances_with_pool_50_take_200_connections_before_anything_else():
    result = plan(PlanInput(instances=4, pool_size=50, reserve=0, maxclients=10000))
    assert [(p.name, p.connections) for p in result.parts] == [("application pools", 200)]
    assert result.total == 200 and result.ratio == 0.02 and result.status == "ok" and result.fits


def test_every_part_is_counted_replicas_sentinels_and_the_cluster_bus():
    result = plan(PlanInput(instances=3, processes_per_instance=4, pool_size=10, replicas=2, sentinels=3,
                            cluster_nodes=6, reserve=10, maxclients=1000))
    parts = {p.name: p.connections for p in result.parts}
    assert parts == {"application pools": 120, "replicas": 2, "sentinels": 6, "cluster bus": 10, "reserve": 10}
    assert result.total == 148
    # 80% of 1000 = 800, minus 28 internal/reserve, over 12 processes -> 64 per pool
    assert result.largest_safe_pool_size == 64


def test_over_the_warning_line_is_a_warning_with_the_numbers_to_fix_it():
    result = plan(PlanInput(instances=4, pool_size=50, maxclients=256))  # 210 of 256
    assert result.status == "warning" and not result.fits
    assert result.largest_safe_pool_size == 48  # floor((204.8 - 10) / 4)
    assert result.recommended_maxclients == 263  # ceil(210 / 0.8)
    assert result.recommended_fd_limit == 263 + 32 + 64


def test_a_low_fd_limit_lowers_maxclients_and_can_make_it_critical():
    result = plan(PlanInput(instances=10, pool_size=100, maxclients=10000, fd_limit=1024))
    assert result.maxclients == 992 and result.maxclients_requested == 10000
    assert result.status == "critical"
    assert any("lowers maxclients from 10000 to 992" in n for n in result.notes)
    assert any("raise the fd limit from 1024" in n for n in result.notes)


def test_serverless_counts_concurrency_times_connections_per_invocation():
    result = plan(PlanInput(serverless=True, concurrency=300, per_invocation=2, reserve=0, maxclients=1000))
    assert result.parts[0].connections == 600 and result.status == "ok"
    assert result.largest_safe_pool_size == 2  # floor(800 / 300)
    assert any("proxy" in n for n in result.notes)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"instances": 0}, "instances=0 must be at least 1"),
        ({"pool_size": 0}, "pool-size=0"),
        ({"replicas": -1}, "replicas=-1 cannot be negative"),
        ({"fd_limit": 20}, "fd-limit=20 must be above 32"),
        ({"serverless": True}, "--serverless needs --concurrency"),
        ({"cluster_nodes": 1}, "cluster-nodes=1 is not a cluster"),
    ],
)
def test_nonsense_input_is_refused(spec, says):
    with pytest.raises(ValueError, match=says):
        PlanInput(**spec)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--instances", "4", "--pool-size", "50"], 0),
        (["--instances", "4", "--pool-size", "50", "--maxclients", "256"], 1),
        (["--instances", "4", "--pool-size", "50", "--maxclients", "200"], 2),
        (["--instances", "lots"], 3),
        (["--instances", "0"], 3),
        (["--serverless"], 3),
        (["--concurrency", "5"], 3),
    ],
)
def test_exit_codes_follow_the_monitoring_plugins_convention(args, code):
    result = CliRunner().invoke(main, ["plan", *args])
    assert result.exit_code == code, result.output


def test_json_is_one_object_with_the_plan():
    result = CliRunner().invoke(main, ["plan", "--instances", "4", "--pool-size", "50", "--replicas", "1", "--json"])
    payload = json.loads(result.output)
    assert payload["schema"] == "connguard.plan/1"
    assert payload["total"] == 211 and payload["status"] == "ok" and payload["fits"] is True
    assert payload["recommended_fd_limit"] == payload["recommended_maxclients"] + 32 + 64


def test_exactly_at_the_warning_line_is_a_warning_as_in_status():
    """status and doctor reach WARNING at >= 0.8; the plan used > and called exactly 80% OK."""
    at = plan(PlanInput(instances=4, pool_size=50, reserve=0, maxclients=250))  # 200 / 250 = 0.8
    assert at.ratio == 0.8 and at.status == "warning"
    assert at.largest_safe_pool_size == 49  # 4 x 50 would sit on the line, not under it
    assert at.recommended_maxclients == 251
    assert plan(PlanInput(instances=4, pool_size=49, reserve=0, maxclients=250)).status == "ok"
    danger = plan(PlanInput(instances=9, pool_size=10, reserve=0, maxclients=100))  # 0.9: the danger line
    assert danger.status == "critical"


@pytest.mark.parametrize("args", [
    ["--instances", "999999999999"], ["--pool-size", "1e40"], ["--maxclients", "99999999999"],
    ["--concurrency", "inf"], ["--fd-limit", "nan"], ["--reserve", "-1"],
])
def test_huge_or_non_finite_inputs_are_refused_in_one_line(args):
    result = CliRunner().invoke(main, ["plan", *args])
    assert result.exit_code == 3
    assert len(result.output.strip().splitlines()) == 1 and "connguard: bad arguments" in result.output


def test_the_largest_inputs_allowed_print_readable_numbers():
    result = CliRunner().invoke(main, ["plan", "--instances", "1000000", "--processes", "1000000", "--pool-size",
                                       "1000000", "--maxclients", "10000000", "--json"])
    payload = json.loads(result.output)
    assert result.exit_code == 2 and payload["total"] == 10 ** 18 + 10 and payload["largest_safe_pool_size"] == 0
