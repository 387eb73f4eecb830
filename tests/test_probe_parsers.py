"""The parsers read what every server version really says: golden captures under tests/testdata/<version>/."""

from __future__ import annotations

from pathlib import Path

import pytest

from connguard.probe import RawCapture, build_snapshot
from connguard.probe.census import census_from_tables
from connguard.probe.client_list import _parse_slow, parse_client_list
from connguard.probe.host import parse_limits
from connguard.probe.info import parse_info
from connguard.probe.model import ClientRecord, decode_flags
from connguard.probe.serialize import (
    SNAPSHOT_FILE, load_snapshot, read_raw_capture, snapshot_from_dict, snapshot_to_dict,
)

TESTDATA = Path(__file__).parent / "testdata"
VERSION_DIRS = sorted(p for p in TESTDATA.iterdir() if (p / "info_all.txt").exists())
LABELS = [p.name for p in VERSION_DIRS]


def table(label: str):
    return parse_client_list((TESTDATA / label / "client_list.txt").read_text())


def records(label: str) -> tuple[ClientRecord, ...]:
    return table(label).records()


def by_name(label: str, name: str) -> ClientRecord:
    return next(r for r in records(label) if r.name == name)


def test_every_server_version_on_this_machine_has_a_capture():
    assert {"redis-6.2.5", "redis-7.0.15", "valkey-9.1.2"} <= set(LABELS)


# -- golden pairs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder", VERSION_DIRS, ids=LABELS)
def test_raw_capture_reparses_to_the_saved_snapshot(folder: Path):
    expected = load_snapshot(folder / SNAPSHOT_FILE)
    raw = read_raw_capture(folder, taken_at=expected.taken_at, limitations=expected.limitations)
    got = build_snapshot(raw, host=expected.host, census=expected.census, own_client_id=expected.own_client_id)
    assert got == expected
    assert snapshot_from_dict(snapshot_to_dict(got)) == got  # JSON round trip loses nothing


@pytest.mark.parametrize("label", LABELS)
def test_fast_and_slow_parsers_agree_on_real_output(label: str):
    text = (TESTDATA / label / "client_list.txt").read_text()
    fast, slow = parse_client_list(text), _parse_slow(text.strip())
    assert fast.fields == slow.fields
    assert fast.records() == slow.records()
    assert fast.fast, "a plain capture must stay on the fast path"


# -- CLIENT LIST fields per version (docs/redis-facts.md) -------------------------------------------------
SINCE_6_2 = {"laddr", "argv-mem", "tot-mem", "redir"}
SINCE_7_0 = {"resp", "multi-mem", "rbs", "rbp", "ssub"}
SINCE_7_2 = {"lib-name", "lib-ver"}
VALKEY_ONLY = {"capa", "tot-net-in", "tot-net-out", "tot-cmds"}
ALWAYS = {"id", "addr", "fd", "name", "age", "idle", "flags", "db", "sub", "psub", "multi", "qbuf",
          "qbuf-free", "obl", "oll", "omem", "events", "cmd", "user"}


@pytest.mark.parametrize("label, present, absent", [
    ("redis-6.2.5", ALWAYS | SINCE_6_2, SINCE_7_0 | SINCE_7_2 | VALKEY_ONLY),
    ("redis-7.0.15", ALWAYS | SINCE_6_2 | SINCE_7_0, SINCE_7_2 | VALKEY_ONLY),
    ("valkey-9.1.2", ALWAYS | SINCE_6_2 | SINCE_7_0 | SINCE_7_2 | VALKEY_ONLY | {"watch"}, set()),
])
def test_each_version_reports_the_fields_it_should(label: str, present: set[str], absent: set[str]):
    fields = set(table(label).fields)
    assert present <= fields, present - fields
    assert not (absent & fields)


@pytest.mark.parametrize("label", LABELS)
def test_every_field_is_kept_by_name_known_or_not(label: str):
    t = table(label)
    recs = t.records()
    assert len(recs) == len(t) == 15
    for rec in recs:
        # What ClientRecord has no attribute for is in `extra`, exactly once, under its own name.
        assert set(rec.extra) == {f for f in t.fields if f.replace("-", "_") not in ClientRecord._fields
                                  and f not in {"age", "idle"}}
        assert rec.extra["tot-mem"].isdigit()
        with pytest.raises(KeyError):
            rec.extra["idle"]  # typed fields are attributes, not extras
    assert t.column("no-such-field") is None
    assert t.int_column("id") == [r.id for r in recs]


def test_version_specific_values_land_in_typed_fields():
    old, mid, valkey = records("redis-6.2.5"), records("redis-7.0.15"), records("valkey-9.1.2")
    assert all(r.resp is None and r.ssub is None and r.lib_name is None for r in old)
    assert all(r.resp == 2 and r.ssub == 0 and r.lib_name is None for r in mid)
    assert all(r.resp == 2 and r.lib_name is not None for r in valkey)
    assert all(r.laddr and r.user == "default" for r in old + mid + valkey)
    assert {r.extra["capa"] for r in valkey} == {""}
    assert all(int(r.extra["tot-net-in"]) > 0 for r in valkey)
    assert all(int(r.extra["rbs"]) > 0 for r in mid)


@pytest.mark.parametrize("label", LABELS)
def test_each_kind_of_client_is_recognised(label: str):
    recs = records(label)
    kinds = {
        "replica": [r for r in recs if r.is_replica],
        "blocked": [r for r in recs if r.is_blocked],
        "pubsub": [r for r in recs if r.is_pubsub],
        "monitor": [r for r in recs if r.is_monitor],
        "unix": [r for r in recs if r.is_unix],
    }
    assert {k: len(v) for k, v in kinds.items()} == {"replica": 1, "blocked": 1, "pubsub": 1, "monitor": 1, "unix": 1}
    assert kinds["blocked"][0].name == "queue-consumer" and kinds["blocked"][0].cmd == "blpop"
    assert kinds["pubsub"][0].sub == 1 and kinds["pubsub"][0].host == "127.0.0.6"
    assert kinds["unix"][0].host == "unix" and kinds["unix"][0].name == "unix-client"
    assert kinds["replica"][0].host == "127.0.0.1" and not kinds["replica"][0].is_primary_link
    in_multi = next(r for r in recs if "x" in r.flags)
    assert in_multi.multi == 1 and "multi" in in_multi.flag_names
    assert not any(r.is_sentinel for r in recs)


@pytest.mark.parametrize("label", LABELS)
def test_names_with_equals_signs_and_empty_names_survive(label: str):
    recs = records(label)
    assert [r.host for r in recs if r.name == "api=v2"] == ["127.0.0.4", "127.0.0.4"]
    assert [r.host for r in recs if r.name == "orders-worker"] == ["127.0.0.2"] * 3
    assert sum(1 for r in recs if r.name == "") == 6  # 2 idle, pubsub, monitor, multi, the replica
    assert by_name(label, "connguard").id == load_snapshot(TESTDATA / label / SNAPSHOT_FILE).own_client_id


def test_lib_name_is_reported_where_the_server_keeps_it():
    assert by_name("valkey-9.1.2", "with-lib").lib == "orders-lib"
    assert by_name("valkey-9.1.2", "connguard").lib.startswith("connguard ")
    assert by_name("redis-7.0.15", "with-lib").lib is None  # 7.0 has no CLIENT SETINFO


def test_flags_are_decoded_and_unknown_letters_kept():
    assert decode_flags("SbxP") == ("replica", "blocked", "multi", "pubsub")
    assert decode_flags("Z") == ("flag:Z",)
    assert decode_flags("iE") == ("slot_migration_source", "slot_migration_target")


# -- synthetic edge cases, built from a real line ------------------------------------------------------
def real_line(label: str = "redis-7.0.15") -> str:
    return (TESTDATA / label / "client_list.txt").read_text().splitlines()[0]


def test_unknown_fields_from_a_future_version_are_kept_not_fatal():
    line = real_line() + " io-thread=0 shiny-new=yes"
    rec = parse_client_list("\n".join([line, line]) + "\n").records()[0]
    assert rec.extra["io-thread"] == "0" and rec.extra["shiny-new"] == "yes"
    assert rec.name == "orders-worker"


def test_fields_are_read_by_name_not_by_position():
    tokens = real_line().split(" ")
    shuffled = " ".join(reversed(tokens))
    a = parse_client_list(real_line()).records()[0]
    b = parse_client_list(shuffled + "\n" + shuffled).records()[0]
    assert a._replace(extra={}) == b._replace(extra={}) and dict(a.extra) == dict(b.extra)


def test_a_unix_path_with_a_space_takes_the_slow_path_and_keeps_the_path():
    line = "id=9 addr=/run/my redis/redis.sock:0 laddr=/run/my redis/redis.sock:0 fd=8 name=x age=3 idle=2 flags=U db=0 sub=0 psub=0 multi=-1 cmd=ping user=default"
    other = real_line()
    t = parse_client_list("\n".join([other, line, other]))
    rec = t.records()[1]
    assert not t.fast  # the row-count check caught it
    assert rec.addr == "/run/my redis/redis.sock:0" and rec.laddr == "/run/my redis/redis.sock:0"
    assert rec.host == "unix" and rec.idle_s == 2 and rec.name == "x"
    assert t.records()[0].name == "orders-worker"


def test_ipv6_clients_are_grouped_by_bare_address():
    line = real_line().replace("addr=127.0.0.2:", "addr=[::1]:", 1)
    v4mapped = real_line().replace("addr=127.0.0.2:", "addr=[2001:db8::7]:", 1)
    recs = parse_client_list(line + "\n" + v4mapped).records()
    assert [r.host for r in recs] == ["::1", "2001:db8::7"]


def test_lines_with_different_fields_still_parse():
    short = "id=1 addr=10.0.0.1:5000 fd=5 name=a age=10 idle=9 flags=N db=0 sub=0 psub=0 multi=-1 cmd=get"
    recs = parse_client_list(real_line() + "\n" + short).records()
    assert recs[1].host == "10.0.0.1" and recs[1].laddr in (None, "") and recs[1].idle_s == 9


@pytest.mark.parametrize("reply", ["", "\n", b"", b"\r\n"])
def test_an_empty_reply_is_no_clients(reply):
    assert parse_client_list(reply).records() == ()


def test_bytes_and_crlf_are_accepted():
    raw = (real_line() + "\r\n" + real_line() + "\r\n").encode()
    assert [r.name for r in parse_client_list(raw).records()] == ["orders-worker"] * 2


def test_records_can_be_built_and_replaced_by_keyword():
    rec = ClientRecord(id=1, addr="10.0.0.1:1", fd=3, name="", age_s=5, idle_s=4, flags="N", db=0, cmd="get")
    assert rec.extra == {} and rec.multi == -1 and rec.host == "10.0.0.1"
    assert rec._replace(idle_s=400).idle_s == 400


# -- INFO -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("label, flavor, version", [
    ("redis-6.2.5", "redis", "6.2.5"), ("redis-7.0.15", "redis", "7.0.15"), ("valkey-9.1.2", "valkey", "9.1.2"),
])
def test_info_names_the_flavor_and_version(label: str, flavor: str, version: str):
    info = parse_info((TESTDATA / label / "info_all.txt").read_bytes())
    assert (info.flavor, info.version) == (flavor, version)
    if flavor == "valkey":
        assert info.sections["server"]["server_name"] == "valkey"
        assert info.sections["server"]["redis_version"] != version  # Valkey reports a compat version too
    assert info.role == "master" and info.connected_slaves == 1 and info.maxclients == 100
    assert info.blocked_clients == 1 and info.process_id and info.tcp_port
    assert info.used == info.connected_clients + 1 == 15
    assert (info.pubsub_clients is None) == (flavor == "redis")  # 7.4 / Valkey 8+ only


def test_info_keeps_unknown_sections_and_fields():
    text = (TESTDATA / "redis-7.0.15" / "info_all.txt").read_bytes().decode() + "\r\n# Futurestuff\r\nshiny:1\r\n"
    text = text.replace("# Clients\r\n", "# Clients\r\nbrand_new_counter:7\r\n")
    info = parse_info(text)
    assert info.sections["futurestuff"] == {"shiny": "1"}
    assert info.sections["clients"]["brand_new_counter"] == "7"
    assert info.connected_clients == 14


def test_maxclients_falls_back_to_info_when_config_is_denied():
    info_all = (TESTDATA / "redis-6.2.5" / "info_all.txt").read_text()
    denied = RawCapture(0.0, info_all, None, None, ("CONFIG GET maxclients denied",))
    snap = build_snapshot(denied)
    assert (snap.maxclients, snap.maxclients_source, snap.clients) == (100, "info", None)
    no_info = info_all.replace("maxclients:100", "")
    assert build_snapshot(RawCapture(0.0, no_info, None, None)).maxclients_source == "unknown"
    assert build_snapshot(RawCapture(0.0, no_info, 42, None)).maxclients == 42


# -- /proc -----------------------------------------------------------------------------------------------
def test_fd_limits_are_read_from_proc_limits_text():
    text = ("Limit                     Soft Limit           Hard Limit           Units     \n"
            "Max processes             63704                63704                processes \n"
            "Max open files            128                  4096                 files     \n")
    assert parse_limits(text) == (128, 4096)
    assert parse_limits(text.replace("128 ", "unlimited")) == (None, 4096)


def test_socket_census_groups_established_connections_by_remote_host():
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    # 127.0.0.1:6379 <- 127.0.0.2 (x2, established), one in TIME_WAIT, one to another port.
    v4 = header + "".join([
        "   0: 0100007F:18EB 0200007F:9C40 01 00000000:00000000 00:00000000 00000000 0 0 1 1\n",
        "   1: 0100007F:18EB 0200007F:9C41 01 00000000:00000000 00:00000000 00000000 0 0 2 1\n",
        "   2: 0100007F:18EB 0500007F:9C42 06 00000000:00000000 00:00000000 00000000 0 0 3 1\n",
        "   3: 0100007F:1F90 0500007F:9C43 01 00000000:00000000 00:00000000 00000000 0 0 4 1\n",
        "   4: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 5 1\n",
    ])
    # [::1]:6379 <- [::1] and <- ::ffff:127.0.0.9 (reported as the IPv4 address).
    v6 = header + "".join([
        "   0: 00000000000000000000000001000000:18EB 00000000000000000000000001000000:A000 01 0 0 0 0 0 6 1\n",
        "   1: 0000000000000000FFFF00000100007F:18EB 0000000000000000FFFF00000900007F:A001 01 0 0 0 0 0 7 1\n",
    ])
    census = census_from_tables([v4, v6], 6379)
    assert dict(census.by_host) == {"127.0.0.2": 2, "::1": 1, "127.0.0.9": 1}
    assert census.total == 4


# -- the column engine: a line off the first line's layout never yields a wrong value ------------------
def test_a_middle_line_with_another_layout_falls_back_to_the_per_line_parser():
    lines = (TESTDATA / "redis-7.0.15" / "client_list.txt").read_text().splitlines()
    odd = lines[3].replace(" qbuf=0", "")  # one line without a field, first and last lines intact
    t = parse_client_list("\n".join(lines[:3] + [odd] + lines[4:]))
    assert t.fast
    assert [r.id for r in t.records()] == [int(x.split()[0][3:]) for x in lines]
    assert not t.fast and "qbuf" not in t.records()[3].extra and t.records()[2].extra["qbuf"] == "0"


def test_a_unix_path_with_a_space_on_the_last_line_is_caught_too():
    line = real_line().replace("addr=127.0.0.2:", "addr=/run/a b/redis.sock:", 1).replace("flags=N", "flags=U")
    recs = parse_client_list(real_line() + "\n" + line + "\n").records()
    assert recs[1].addr.startswith("/run/a b/redis.sock:") and recs[1].host == "unix"


def test_columns_are_read_by_name_on_the_fast_path_and_agree_with_records():
    t = parse_client_list((TESTDATA / "valkey-9.1.2" / "client_list.txt").read_bytes())
    cols = t.columns(("idle", "tot-net-in", "lib-name", "nope"))
    assert cols["nope"] is None and t.fast
    recs = t.records()
    assert list(cols["tot-net-in"]) == [r.extra["tot-net-in"] for r in recs]
    assert t.int_column("idle") == [r.idle_s for r in recs]
    assert list(cols["lib-name"]) == [r.lib_name for r in recs]


def test_a_stray_field_name_inside_a_value_does_not_shift_columns():
    line = real_line().replace("name=orders-worker", "name=idle=99", 1)
    recs = parse_client_list(line + "\n" + real_line()).records()
    assert (recs[0].name, recs[0].idle_s) == ("idle=99", 1)


def test_records_extras_behave_as_plain_mappings():
    import copy
    import pickle
    rec = records("valkey-9.1.2")[0]
    assert dict(rec.extra) == pickle.loads(pickle.dumps(rec)).extra == copy.deepcopy(rec).extra
    assert "capa" in rec.extra and "idle" not in rec.extra and rec.extra.get("nope") is None
    assert len(rec.extra) == len(dict(rec.extra)) and rec.extra != {"capa": ""}
