"""Discovery without a server: Sentinel URLs, fleet files, CLUSTER SHARDS/NODES replies, the fleet roll-up."""

from __future__ import annotations

import pytest

from connguard.discovery.cluster import members_of, parse_nodes, parse_shards
from connguard.discovery.fanout import fan_out
from connguard.discovery.fleet_file import parse_plain, parse_toml
from connguard.discovery.model import Member, Problem
from connguard.discovery.sentinel_url import is_sentinel_url, parse_sentinel_url
from connguard.discovery.summary import Row, find_fanout, risk_sorted, summarize, worst_status
from connguard.errors import BadTarget, ExitCode
from connguard.target import parse_target

NO_ENV: dict[str, str] = {}


# -- Sentinel URLs --------------------------------------------------------------------------------------------
def test_the_documented_form_gives_every_sentinel_the_master_and_the_db() -> None:
    spec = parse_sentinel_url("redis+sentinel://app:pw@s1:26380,s2,[::1]:26381/orders/2", NO_ENV)
    assert [(t.host, t.port) for t in spec.sentinels] == [("s1", 26380), ("s2", 26379), ("::1", 26381)]
    assert (spec.master_name, spec.db, spec.username, spec.password) == ("orders", 2, "app", "pw")
    node = spec.node_target("10.0.0.5", 6380)
    assert (node.host, node.port, node.db, node.username, node.password) == ("10.0.0.5", 6380, 2, "app", "pw")
    assert "pw" not in spec.redacted and "pw" not in repr(spec) and "pw" not in node.redacted
    assert spec.redacted == "redis+sentinel://app:***@s1:26380,s2:26379,[::1]:26381/orders/2"


def test_data_password_is_not_sent_to_sentinels_unless_asked() -> None:
    spec = parse_sentinel_url("redis+sentinel://:pw@s1/m", NO_ENV)
    assert spec.sentinels[0].password is None
    spec = parse_sentinel_url("rediss+sentinel://:pw@s1/m?sentinel_password=spw", NO_ENV)
    assert spec.sentinels[0].password == "spw" and spec.sentinels[0].tls and spec.data_scheme == "rediss"


def test_lettuce_form_takes_the_master_from_the_query_and_the_db_from_the_path() -> None:
    spec = parse_sentinel_url("redis-sentinel://s1:26379,s2:26379/3?sentinelMasterId=mymaster", NO_ENV)
    assert (spec.master_name, spec.db, len(spec.sentinels)) == ("mymaster", 3, 2)


def test_rediscli_auth_supplies_a_missing_data_password() -> None:
    assert parse_sentinel_url("redis+sentinel://s1/m", {"REDISCLI_AUTH": "envpw"}).password == "envpw"


@pytest.mark.parametrize("url, words", [
    ("redis+sentinel://:hunter2@s1:26379,s2:26379", "no master name"),
    ("redis+sentinel://:hunter2@s1:26379/", "no master name"),
    ("redis+sentinel://:hunter2@s1:99999/m", "not a port number"),
    ("redis+sentinel://:hunter2@/m", "names no Sentinel"),
    ("redis+sentinel://:hunter2@s1/m/x", "not a number"),
    ("redis+sentinel://:hunter2@s1/m/1/extra", "unexpected path"),
])
def test_a_bad_sentinel_url_is_one_line_exit_3_without_the_password(url: str, words: str) -> None:
    with pytest.raises(BadTarget) as info:
        parse_sentinel_url(url, NO_ENV)
    assert words in info.value.message
    assert "hunter2" not in info.value.line() and "\n" not in info.value.line()
    assert info.value.exit_code == ExitCode.UNKNOWN


def test_only_sentinel_schemes_are_sentinel_urls() -> None:
    assert is_sentinel_url("REDIS+SENTINEL://s/m") and is_sentinel_url("redis-sentinel://s?sentinelMasterId=m")
    assert not is_sentinel_url("redis://s:6379") and not is_sentinel_url(None) and not is_sentinel_url("fleet.txt")


# -- fleet files ------------------------------------------------------------------------------------------------
def test_plain_fleet_file_reads_urls_and_names_each_bad_line() -> None:
    text = ("# prod\n\nredis://10.0.0.5:6379\n  redis://:hunter2@10.0.0.6:6380/2   # sessions\n"
            "http://10.0.0.7\nredis+sentinel://s1:26379,s2/orders\nredis://a redis://b\n"
            "redis+sentinel://:hunter2@s1:26379\n")
    entries, problems = parse_plain(text, NO_ENV)
    assert [e.line for e in entries] == [3, 4, 6]
    assert entries[1].target.password == "hunter2" and entries[1].target.db == 2  # type: ignore[union-attr]
    assert entries[2].sentinel is not None and entries[2].sentinel.master_name == "orders"
    assert [p.where for p in problems] == ["line 5", "line 7", "line 8"]
    assert all("hunter2" not in p.line() for p in problems)


def test_toml_fleet_file_carries_names_and_groups_and_names_bad_entries() -> None:
    text = """
[[target]]
url = "redis://10.0.0.5:6379"
name = "sessions"
group = "prod"

[[target]]
name = "broken"
url = "redis://:hunter2@host:notaport"

[[target]]
url = "redis://10.0.0.6"
colour = "blue"
"""
    entries, problems = parse_toml(text, NO_ENV)
    assert [(e.name, e.group, e.target.port) for e in entries] == [("sessions", "prod", 6379)]  # type: ignore[union-attr]
    assert [p.where for p in problems] == ["target 2 (broken)", "target 3"]
    assert "hunter2" not in problems[0].message and "colour" in problems[1].message


# -- Cluster replies (captured from Redis 7.0.15, decoded the way HeldConnection returns them: RESP2 lists) ------
SHARDS = [
    [b"slots", [5461, 10921], b"nodes", [[b"id", b"aee6007650b9212b02292c41ae2c4e32496f1c41", b"port", 48194, b"ip",
     b"127.0.0.1", b"endpoint", b"127.0.0.1", b"role", b"master", b"replication-offset", 0, b"health", b"online"],
     [b"id", b"bbbb007650b9212b02292c41ae2c4e32496f1c41", b"port", 48195, b"ip", b"127.0.0.1", b"endpoint", b"?",
      b"role", b"replica", b"replication-offset", 0, b"health", b"loading"]]],
    [b"slots", [0, 5460, 10922, 16383], b"nodes", [[b"id", b"8433e815fcb112b52a6d86da0289da52cbcc8175", b"port",
     44541, b"ip", b"127.0.0.1", b"endpoint", b"127.0.0.1", b"role", b"master", b"replication-offset", 0,
     b"health", b"online"]]],
]
NODES = (
    "aee6007650b9212b02292c41ae2c4e32496f1c41 127.0.0.1:48194@58194 master - 0 1796161171109 2 connected 5461-10921\n"
    "bbbb007650b9212b02292c41ae2c4e32496f1c41 127.0.0.1:48195@58195 slave,fail aee6007650b9212b02292c41ae2c4e32496f1c41 "
    "0 1796161171109 2 connected\n"
    "8433e815fcb112b52a6d86da0289da52cbcc8175 127.0.0.1:44541@54541 myself,master - 0 1796161171000 1 connected "
    "0-5460 10922-16383 [5000->-aee6007650b9212b02292c41ae2c4e32496f1c41]\n"
)


def test_shards_and_nodes_agree_on_roles_slots_and_addresses() -> None:
    shards = {(n.node_id[:4], n.port, n.role, n.slots, n.primary_id and n.primary_id[:4]) for n in parse_shards(SHARDS)}
    nodes = {(n.node_id[:4], n.port, n.role, n.slots, n.primary_id and n.primary_id[:4]) for n in parse_nodes(NODES)}
    assert shards == nodes == {("aee6", 48194, "primary", 5461, None), ("bbbb", 48195, "replica", 0, "aee6"),
                               ("8433", 44541, "primary", 10923, None)}
    assert {n.health for n in parse_nodes(NODES)} == {"online", "failed"}
    assert next(n for n in parse_shards(SHARDS) if n.port == 48195).host == "127.0.0.1"  # endpoint "?" -> ip


def test_cluster_members_carry_the_seed_credentials_and_list_replicas_after_their_primary() -> None:
    seed = parse_target("redis://:hunter2@127.0.0.1:44541", env={})
    members = members_of(seed, parse_shards(SHARDS))
    assert [(m.target.port, m.role) for m in members] == [(44541, "primary"), (48194, "primary"), (48195, "replica")]
    assert all(m.target.password == "hunter2" and "hunter2" not in m.label for m in members)
    assert sum(m.slots or 0 for m in members) == 16384


# -- the roll-up -----------------------------------------------------------------------------------------------
def _row(port: int, status: str, ratio: float | None, sources: tuple[tuple[str, int], ...] = (),
         cause: str | None = None) -> Row:
    member = Member(parse_target(f"redis://127.0.0.1:{port}", env={}), "primary", name=f"n{port}")
    payload = {"status": status, "sources": [] if ratio is not None else None}
    return Row(member, status, payload, used=None if ratio is None else int(ratio * 100), maxclients=100,
               ratio=ratio, top_cause=cause, sources=sources)


def test_worst_status_puts_a_full_server_above_an_unreachable_one_above_a_warning() -> None:
    assert worst_status(["ok", "warning", "unknown"]) == "unknown"
    assert worst_status(["unknown", "critical", "ok"]) == "critical"
    assert worst_status([]) == "ok"


def test_rows_rank_by_risk_then_ratio() -> None:
    rows = [_row(1, "ok", 0.3), _row(2, "warning", 0.85), _row(3, "unknown", None), _row(4, "ok", 0.5),
            _row(5, "critical", None)]
    assert [r.member.name for r in risk_sorted(rows)] == ["n5", "n3", "n2", "n4", "n1"]


def test_a_client_on_every_node_is_named_as_fan_out_with_n_times_m() -> None:
    rows = [_row(p, "ok", 0.4, (("10.0.0.9", 40), ("10.0.0.%d" % p, 3))) for p in (1, 2, 3)]
    fan = find_fanout(rows)
    assert fan is not None and (fan.host, fan.nodes, fan.per_node, fan.total) == ("10.0.0.9", 3, 40, 120)
    summary = summarize("cluster", rows)
    assert summary.cause == "client_fanout" and "3 of 3 nodes (120 in all)" in summary.cause_summary


def test_one_hot_node_among_quiet_ones_is_an_imbalance_and_the_nearest() -> None:
    rows = [_row(1, "critical", 0.92, cause="pool_oversize"), _row(2, "ok", 0.3), _row(3, "ok", 0.31)]
    summary = summarize("cluster", rows, [Problem("node x", "down")])
    assert summary.nearest is rows[0] and summary.cause == "imbalance" and "92%" in summary.cause_summary
    assert summary.causes == ("imbalance", "pool_oversize")
    assert summary.status == "critical" and summary.problems == 1


def test_no_fan_out_from_a_host_seen_on_one_node_only() -> None:
    rows = [_row(1, "ok", 0.4, (("10.0.0.9", 40),)), _row(2, "ok", 0.1), _row(3, "ok", 0.1)]
    assert find_fanout(rows) is None and summarize("cluster", rows).cause is None


def test_fan_out_keeps_order_and_bounds_concurrency() -> None:
    import threading
    import time

    running, peak, lock = [0], [0], threading.Lock()

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return i * i

    assert fan_out(list(range(40)), work, concurrency=4) == [i * i for i in range(40)]
    assert 1 < peak[0] <= 4
    with pytest.raises(ValueError):
        fan_out([1], work, concurrency=0)


# -- what a Sentinel's error reply means ----------------------------------------------------------------------------
def test_sentinel_error_replies_are_judged_idontknow_unknown_or_not_a_sentinel() -> None:
    from connguard.discovery.sentinel import refusal

    text = "IDONTKNOW I have not enough information to reply. Please ask another Sentinel."  # Redis 2.8-6.x
    assert refusal(text, "sentinel s1:26379", "m")[0] == "idontknow"
    assert refusal("ERR No such master with that name", "sentinel s1:26379", "m")[0] == "unknown"
    verdict, problem = refusal("ERR unknown command 'SENTINEL', with args beginning with: ", "sentinel s1:6379", "m")
    assert verdict == "not_sentinel" and problem.line().startswith("connguard: sentinel s1:6379: is not a Sentinel")
