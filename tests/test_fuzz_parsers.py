"""The parsers survive anything a server (or a bad paste) can hand them: INFO, CLIENT LIST, /proc/net/tcp, URLs.

Property-based (hypothesis). CI runs a modest number of examples per property; `bench/fuzz_long.py`
runs the same properties to 1,000,000 examples in total (CONNGUARD_FUZZ_EXAMPLES sets the count here).
"""

from __future__ import annotations

import ipaddress
import os
import string
from collections import Counter
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from connguard.errors import BadTarget, ConnguardError
from connguard.probe.census import census_from_tables, decode_address
from connguard.probe.client_list import _parse_slow, parse_client_list
from connguard.probe.info import parse_info, parse_info_sections
from connguard.target import parse_target

EXAMPLES = int(os.environ.get("CONNGUARD_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])

# How many examples each property really ran to the end, past every assume() (bench/fuzz_long.py sums them).
RAN: Counter[str] = Counter()


def ran(name: str) -> None:
    RAN[name] += 1


# ---------------------------------------------------------------------------------------------------
# CLIENT LIST
# ---------------------------------------------------------------------------------------------------
# Every field any supported server prints (docs/redis-facts.md), in reply order; Valkey's extras at the end.
LAYOUT = ("id addr laddr fd name age idle flags db sub psub ssub multi watch qbuf qbuf-free argv-mem multi-mem "
          "rbs rbp obl oll omem tot-mem events cmd user redir resp lib-name lib-ver io-thread "
          "capa tot-net-in tot-net-out tot-cmds").split()
INT_FIELDS = {"id", "fd", "age", "idle", "db", "sub", "psub", "ssub", "multi", "watch", "qbuf", "qbuf-free",
              "argv-mem", "multi-mem", "rbs", "rbp", "obl", "oll", "omem", "tot-mem", "redir", "resp",
              "io-thread", "tot-net-in", "tot-net-out", "tot-cmds"}

# Field names a future server might add: lower-case words with dashes, like the real ones.
LOWER, ALNUM = string.ascii_lowercase, string.ascii_lowercase + string.digits
# (st.from_regex would say this more briefly, but it generates ~10x slower, and bench/fuzz_long.py runs 10^6.)
unknown_field = st.builds(
    lambda a, b, c: a + b + (f"-{c}" if c else ""), st.sampled_from(LOWER), st.text(ALNUM, max_size=6),
    st.text(ALNUM, max_size=5),
).filter(lambda f: f not in LAYOUT)

# Values with the characters that trouble a `key=value` splitter: '=', ':', brackets, slashes, non-ASCII.
tricky_text = st.text(alphabet=string.ascii_letters + string.digits + "=:-_./[]@|#é", max_size=12)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
port = st.integers(0, 65535)
unix_path = st.builds(lambda a, b: f"/{a}{' ' + b if b else ''}.sock", st.text(LOWER + "/", min_size=1, max_size=12),
                      st.text(LOWER, max_size=5))  # a path may hold a space
address = st.one_of(
    st.builds("{}:{}".format, ipv4, port),
    st.builds("[{}]:{}".format, ipv6, port),   # how Redis prints an IPv6 peer
    st.builds("{}:{}".format, ipv6, port),     # and how an older formatter might
    st.builds("{}:0".format, unix_path),       # a unix socket client
)
flags = st.text(alphabet="NSMPOxbtUreTIiEcduAR", min_size=1, max_size=4)
int_text = st.one_of(st.integers(-2, 10**12).map(str), st.sampled_from(["", "-", "x1", "NaN"]))


def value_for(field: str, spaces: bool) -> st.SearchStrategy[str]:
    named = tricky_text | (st.builds("{} {}".format, tricky_text, tricky_text) if spaces else tricky_text)
    if field in INT_FIELDS:
        return int_text
    if field in ("addr", "laddr"):
        return address
    if field == "flags":
        return flags
    if field == "cmd":
        return st.sampled_from(["NULL", "ping", "client|list", "blpop", "subscribe", "monitor", "xread"])
    if field in ("name", "lib-name", "lib-ver", "user"):
        return named
    return tricky_text


@st.composite
def layouts(draw: st.DrawFn) -> list[str]:
    """A real server's field order: a subsequence of LAYOUT starting at id, with unknown fields mixed in."""
    fields = ["id"] + [f for f in LAYOUT[1:] if draw(st.booleans())]
    for extra in draw(st.lists(unknown_field, max_size=3, unique=True)):
        fields.insert(draw(st.integers(1, len(fields))), extra)
    return list(dict.fromkeys(fields))


@st.composite
def client_list_replies(draw: st.DrawFn) -> str | bytes:
    """A CLIENT LIST reply: mostly one layout, sometimes a line with a missing or an extra field, values with
    '=' or spaces, IPv6 and unix addresses, CRLF or LF, a trailing newline or not, a truncated end, bytes."""
    layout = draw(layouts())
    spaces = draw(st.booleans())
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        fields = list(layout)
        if draw(st.integers(0, 9)) == 0 and len(fields) > 1:  # a line missing a field
            del fields[draw(st.integers(0, len(fields) - 1))]
        if draw(st.integers(0, 9)) == 0:  # a line with a field the others lack
            fields.insert(draw(st.integers(0, len(fields))), draw(unknown_field))
        lines.append(" ".join(f"{f}={draw(value_for(f, spaces))}" for f in fields))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(lines) + draw(st.sampled_from(["", newline, newline * 2]))
    if text and draw(st.integers(0, 4)) == 0:  # the last line cut off mid-way
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode() if draw(st.booleans()) else text


def table_view(table) -> tuple[object, ...]:
    """Everything a caller can read from a parsed table: its fields, every column, every typed record."""
    records = [r._replace(extra=dict(r.extra)) for r in table.records()]
    columns = {f: list(table.column(f)) for f in table.fields}
    return tuple(table.fields), len(table), columns, records


@FUZZ
@given(client_list_replies())
def test_the_fast_client_list_path_equals_the_per_line_path(reply: str | bytes):
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    assert table_view(parse_client_list(reply)) == table_view(_parse_slow(text))
    ran("client_list_fast_equals_slow")


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300) | st.binary(max_size=300))
def test_client_list_never_raises_on_garbage_and_both_paths_agree(reply: str | bytes):
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    fast = parse_client_list(reply)
    assert table_view(fast) == table_view(_parse_slow(text))
    for rec in fast.records():  # the properties the analysis reads never raise either
        rec.host, rec.is_pubsub, rec.is_sentinel, rec.is_unix, rec.flag_names, rec.lib
    ran("client_list_garbage")


@FUZZ
@given(st.lists(st.tuples(ipv4 | ipv6, port), min_size=1, max_size=8), st.booleans())
def test_client_list_addresses_give_back_their_host(peers: list[tuple[str, int]], brackets: bool):
    lines = []
    for i, (ip, p) in enumerate(peers):
        addr = f"[{ip}]:{p}" if brackets and ":" in ip else f"{ip}:{p}"
        lines.append(f"id={i} addr={addr} fd={i + 8} name=w{i} age=1 idle=1 flags=N db=0 cmd=ping")
    records = parse_client_list("\n".join(lines) + "\n").records()
    assert [r.host for r in records] == [ip for ip, _ in peers]
    assert [r.id for r in records] == list(range(len(peers)))
    ran("client_list_hosts")


# ---------------------------------------------------------------------------------------------------
# INFO
# ---------------------------------------------------------------------------------------------------
section_name = st.builds(lambda a, b: a.upper() + b, st.sampled_from(LOWER), st.text(LOWER, min_size=1, max_size=10))
info_key = st.builds(str.__add__, st.sampled_from(LOWER), st.text(ALNUM + "_", max_size=12))
info_value = st.text(alphabet=string.ascii_letters + string.digits + ":=,._-/ ", max_size=16).map(str.strip)
INT_KEYS = ("connected_clients", "connected_slaves", "cluster_connections", "blocked_clients", "maxclients",
            "total_connections_received", "rejected_connections", "process_id", "tcp_port", "uptime_in_seconds")


@st.composite
def info_replies(draw: st.DrawFn) -> tuple[str, dict[str, dict[str, str]]]:
    sections: dict[str, dict[str, str]] = {}
    for name in draw(st.lists(section_name, max_size=5, unique_by=str.lower)):
        fields = draw(st.dictionaries(info_key | st.sampled_from(INT_KEYS), info_value, max_size=6))
        sections[name] = fields
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    parts = []
    for name, fields in sections.items():
        parts.append(f"# {name}")
        parts += [f"{k}:{v}" for k, v in fields.items()]
        parts.append("")
    return newline.join(parts), sections


@FUZZ
@given(info_replies())
def test_info_round_trips_every_section_and_field(reply: tuple[str, dict[str, dict[str, str]]]):
    text, sections = reply
    expected = {name.lower(): fields for name, fields in sections.items()}
    assert parse_info_sections(text) == expected
    info = parse_info(text)
    for key, attr in (("connected_clients", "connected_clients"), ("rejected_connections", "rejected_connections")):
        raw = next((f[key] for f in sections.values() if key in f), None)
        if raw is not None and raw.lstrip("-").isdigit():
            assert getattr(info, attr) == int(raw)
    ran("info_round_trip")


@FUZZ
@given(st.text(max_size=400) | st.binary(max_size=400))
def test_info_never_raises_on_garbage(reply: str | bytes):
    info = parse_info(reply)
    assert isinstance(info.used, int)
    ran("info_garbage")


# ---------------------------------------------------------------------------------------------------
# /proc/net/tcp{,6}
# ---------------------------------------------------------------------------------------------------
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
STATES = ["01", "02", "06", "0A", "08"]


def proc_hex(ip: str, p: int) -> str:
    """An address as the kernel prints it: IPv4 as one host-order word, IPv6 as four host-order words."""
    raw = ipaddress.ip_address(ip).packed
    words = "".join(raw[i:i + 4][::-1].hex().upper() for i in range(0, len(raw), 4))
    return f"{words}:{p:04X}"


@st.composite
def tcp_tables(draw: st.DrawFn) -> tuple[list[str], int, Counter[str]]:
    """/proc/net/tcp and tcp6 with sockets on a server port and elsewhere; and the census they must give."""
    server_port = draw(st.integers(1, 65535))
    expected: Counter[str] = Counter()
    tables = []
    for v in (4, 6):
        rows = [HEADER]
        for i in range(draw(st.integers(0, 6))):
            local_ip = draw(st.ip_addresses(v=v).map(str))
            remote_ip = draw(st.ip_addresses(v=v).map(str))
            if v == 6 and draw(st.booleans()):  # an IPv4 client on a dual-stack socket
                local_ip, remote_ip = (f"::ffff:{draw(ipv4)}" for _ in range(2))
            local_port = server_port if draw(st.booleans()) else draw(port)
            state = draw(st.sampled_from(STATES))
            inode = draw(st.integers(0, 10**7))
            rows.append(f"{i:4d}: {proc_hex(local_ip, local_port)} {proc_hex(remote_ip, draw(port))} {state} "
                        f"00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 0000000000000000 20 4 30 10 -1")
            if state == "01" and local_port == server_port:
                mapped = ipaddress.ip_address(remote_ip)
                host = mapped.ipv4_mapped if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped else mapped
                expected[str(host)] += 1
        tables.append("\n".join(rows) + "\n")
    return tables, server_port, expected


@FUZZ
@given(tcp_tables())
def test_census_counts_established_connections_by_remote_host(case: tuple[list[str], int, Counter[str]]):
    tables, server_port, expected = case
    census = census_from_tables(tables, server_port)
    assert census.by_host == dict(expected)
    assert census.total == sum(expected.values())
    ran("census_model")


@FUZZ
@given(ipv4 | ipv6, port)
def test_proc_addresses_decode_back(ip: str, p: int):
    got_ip, got_port = decode_address(proc_hex(ip, p))
    want = ipaddress.ip_address(ip)
    if isinstance(want, ipaddress.IPv6Address) and want.ipv4_mapped:
        want = want.ipv4_mapped
    assert (got_ip, got_port) == (str(want), p)
    ran("census_decode")


proc_junk_line = st.lists(
    st.text(alphabet=string.hexdigits + ":", max_size=40) | st.sampled_from(STATES + ["0100007F:18EB"]),
    max_size=12,
).map(" ".join)


@FUZZ
@example(["0 0100007F:18EB 0 01"], 6379)  # found by bench/fuzz_long.py: a remote address without ':' raised ValueError
@example(["0 0 0100007F:18EB 06"], 6379)  # and a local one, on the TIME_WAIT path
@given(st.lists(st.lists(proc_junk_line, max_size=6).map("\n".join), max_size=2), st.integers(1, 65535))
def test_census_never_raises_on_a_damaged_table(tables: list[str], server_port: int):
    census = census_from_tables([HEADER + "\n" + t for t in tables], server_port)
    assert census.total >= 0
    ran("census_garbage")


# ---------------------------------------------------------------------------------------------------
# Target URLs
# ---------------------------------------------------------------------------------------------------
# A password with every character that means something in a URL, plus a distinctive random core.
SPECIALS = "@:/%#?&=+ [];$!'*,"
password_core = st.text(alphabet=string.ascii_letters + string.digits, min_size=8, max_size=12)
password = st.builds(lambda a, s, b: a + s + b, password_core, st.text(alphabet=SPECIALS + "é", max_size=6),
                     st.text(alphabet=string.ascii_letters + SPECIALS, max_size=6))
user = st.one_of(st.just(""), st.builds(str.__add__, st.sampled_from(LOWER), st.text(ALNUM + "_-", max_size=8)))
host = st.one_of(st.just("127.0.0.1"), st.just("cache.internal"), st.builds("[{}]".format, ipv6))
url_tail = st.one_of(st.just(""), st.builds(":{}".format, port), st.builds(":{}/{}".format, port, st.integers(0, 15)),
                     st.builds(":{}?{}".format, port, st.sampled_from(["db=2", "ssl_cert_reqs=none", "x=%zz", "db=-1"])))


def shown(err_or_target: object) -> str:
    if isinstance(err_or_target, ConnguardError):
        return err_or_target.line()
    return f"{err_or_target.redacted} {err_or_target} {err_or_target!r}"  # type: ignore[attr-defined]


def secret_pieces(pw: str) -> list[str]:
    """The password, and each run of 6+ letters/digits in it: a leaked fragment is a leak too."""
    pieces, run = [pw], ""
    for ch in pw + " ":
        if ch.isalnum() and ch.isascii():
            run += ch
            continue
        if len(run) >= 6:
            pieces.append(run)
        run = ""
    return pieces


def shown_text_is_ours(piece: str, make_url, pw: str, env_key: str | None = None) -> bool:
    """True when `piece` shows up even with a different password of the same shape: then it is connguard's own
    text (say the password is 'connguard', the program's name), not a leak."""
    other = "".join("Q" if ch.isalnum() else ch for ch in pw)
    url = make_url(other)
    env = {env_key: other} if env_key else {}
    return piece in shown(parse_or_error(url, env))


def parse_or_error(url: str, env: dict[str, str]) -> object:
    try:
        return parse_target(url, env=env)
    except ConnguardError as err:  # the only documented failure
        assert isinstance(err, BadTarget)
        return err


@FUZZ
@example("redis", "", "connguard", "127.0.0.1", ":0")  # the program's own name is not a leaked password
@given(st.sampled_from(["redis", "rediss", "unix", "REDIS"]), user, password, host, url_tail)
def test_a_percent_encoded_password_parses_back_and_never_shows(scheme: str, username: str, pw: str, hostpart: str, tail: str):
    netloc_host = "" if scheme == "unix" else hostpart
    path = "/tmp/redis.sock" if scheme == "unix" else ""
    rest = path if scheme == "unix" else tail

    def make_url(p: str) -> str:
        return f"{scheme}://{quote(username, safe='')}:{quote(p, safe='')}@{netloc_host}{rest}"

    url = make_url(pw)
    got = parse_or_error(url, env={})
    for piece in secret_pieces(pw):
        assume(piece not in f"{scheme}://{username}:@{netloc_host}{rest}")  # the piece is not also the user name
        assume(not shown_text_is_ours(piece, make_url, pw))
        assert piece not in shown(got)
    if not isinstance(got, ConnguardError):
        assert got.password == pw  # type: ignore[attr-defined]
    ran("url_encoded")


URL_QUERY_ECHO = ("target.py (owner: defects): a pasted, unencoded password holding '?' (redis://:pa?ss@host) is "
                  "not split off as userinfo (_split_userinfo looks for the '@' only before the first '?'), so the "
                  "BadTarget line repeats the whole URL, password included: \"cannot parse URL "
                  "'redis://:s3cr3tpw?x@cache': Port could not be cast to integer value as 's3cr3tpw'\"")


@FUZZ
@example("redis", "app", "Tr0ub4dor?x", "cache.internal", "")
@given(st.sampled_from(["redis", "rediss"]), user, password, host, url_tail)
def test_a_pasted_raw_password_never_shows_in_a_target_or_an_error(scheme: str, username: str, pw: str, hostpart: str, tail: str):
    """People paste passwords unencoded. Whatever the parser makes of `redis://user:p@ss/w#rd@host`, nothing it
    shows may contain the password or a fragment of it."""
    def make_url(p: str) -> str:
        return f"{scheme}://{username}:{p}@{hostpart}{tail}"

    url = make_url(pw)
    got = parse_or_error(url, env={})
    for piece in secret_pieces(pw):
        assume(piece not in f"{scheme}://{username}:@{hostpart}{tail}")
        assume(not shown_text_is_ours(piece, make_url, pw))
        assert piece not in shown(got), (url, shown(got))
    ran("url_raw")


@FUZZ
@given(st.text(max_size=80), st.one_of(st.none(), password))
def test_any_url_text_parses_or_fails_with_bad_target_only(url: str, env_pw: str | None):
    env = {"REDISCLI_AUTH": env_pw} if env_pw else {}
    got = parse_or_error(url, env)
    if env_pw and not isinstance(got, ConnguardError):
        for piece in secret_pieces(env_pw):
            assume(piece not in url)
            assume(not shown_text_is_ours(piece, lambda _p: url, env_pw, "REDISCLI_AUTH"))
            assert piece not in shown(got)
    ran("url_garbage")


@pytest.mark.parametrize("url", [
    "redis://user:abcdefgh#x@127.0.0.1", "redis://user:Tr0ub4dor/x@cache:6379", "redis://user:Tr0ub4dor@x@cache:6379",
    "redis://:s3cr3tpw?x@cache",
])
def test_a_pasted_password_with_url_delimiters_is_not_echoed(url: str):
    """Regression seeds: urllib alone reads everything between ':' and the first '/', '?' or '#' as the port,
    and its ValueError text ('Port could not be cast to integer value as ...') carried that into the error line."""
    pw = url.split("://", 1)[1].rpartition("@")[0].partition(":")[2]
    got = parse_or_error(url, env={})
    assert all(piece not in shown(got) for piece in secret_pieces(pw)), shown(got)
