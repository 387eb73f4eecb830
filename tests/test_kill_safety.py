"""Kill safety as a property: whatever the population and whatever the operator selects, `plan_kill` never
picks a replica, the primary link, a Sentinel link, a subscriber, MONITOR, a blocked client (without
--include-blocked), another connguard tool or its own connection; and on a real server, exactly the
clients it picked are gone afterwards.

Part 1 renders 1,000 seeded random populations in the real CLIENT LIST layouts of Redis 6.2, 7.0 and
Valkey 9.1 (field order read from tests/testdata), parses them with the real parser, and checks 5 random
selections on each against ground truth that the generator knows (what each client *is*), not against the
flags connguard reads. Part 2 runs 20 of those selections against real servers with real clients of
each kind.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from connguard.lab.crowd import Crowd
from connguard.lab.servers import resp_command
from connguard.probe.client_list import parse_client_list
from connguard.remedy.kill import KillFilter, execute_kills, plan_kill
from connguard.target import open_connection, parse_target
from connguard.wire import CLIENT_NAME

POPULATIONS = 1000
SELECTIONS_PER_POPULATION = 5
LIVE_ROUNDS = 20

TESTDATA = Path(__file__).parent / "testdata"
# Real field orders, one per server version, from the captured replies.
LAYOUTS = {
    label: [tok.partition("=")[0] for tok in (TESTDATA / label / "client_list.txt").read_text().split("\n", 1)[0].split(" ")]
    for label in ("redis-6.2.5", "redis-7.0.15", "valkey-9.1.2")
}

# What a client is (ground truth), and whether the contract protects it.
PROTECTED = {"own", "replica", "primary_link", "sentinel_cmd", "sentinel_pubsub", "subscriber", "psubscriber",
             "shard_subscriber", "monitor", "other_connguard"}
BLOCKED = {"blocked_list", "blocked_stream", "blocked_wait"}
# Killable, and the contract says a matching one must be selected (within --max).
PLAIN = {"idle", "active", "in_multi", "unix"}
# Killable by the contract, but a stricter (safer) protection would not be wrong: not asserted either way.
EITHER = {"redis_exporter", "was_blocked"}


@dataclass(frozen=True)
class Fake:
    id: int
    kind: str
    host: str
    name: str
    idle: int
    line: str


def render(layout: list[str], values: dict[str, object]) -> str:
    """One CLIENT LIST line in a real layout: fields the version lacks are left out, defaults as a server shows."""
    defaults = {"laddr": "127.0.0.1:6379", "fd": 9, "age": 60, "db": 0, "sub": 0, "psub": 0, "ssub": 0, "multi": -1,
                "watch": 0, "qbuf": 0, "qbuf-free": 20474, "argv-mem": 0, "multi-mem": 0, "rbs": 1024, "rbp": 0,
                "obl": 0, "oll": 0, "omem": 0, "tot-mem": 22272, "events": "r", "user": "default", "redir": -1,
                "resp": 2, "lib-name": "", "lib-ver": "", "capa": "", "tot-net-in": 10, "tot-net-out": 10,
                "tot-cmds": 1}
    merged = {**defaults, **values}
    return " ".join(f"{f}={merged.get(f, '')}" for f in layout)


def make_client(rng: random.Random, kind: str, cid: int, layout: list[str], hosts: list[str]) -> Fake:
    host = rng.choice(hosts)
    addr = f"[{host}]:{rng.randint(1024, 65535)}" if ":" in host else f"{host}:{rng.randint(1024, 65535)}"
    idle = rng.choice([0, 0, 1, 5, 30, 300, 4000])
    name = rng.choice(["", "", "orders-worker", "api", "cron"])
    v: dict[str, object] = {"flags": "N", "cmd": rng.choice(["ping", "get", "set", "client|setname", "NULL"])}
    if kind == "own":
        name, idle, v = CLIENT_NAME, 0, {"flags": "N", "cmd": "client|list", "lib-name": "connguard", "lib-ver": "0.1.0"}
    elif kind == "other_connguard":
        name, v = CLIENT_NAME, {"flags": "N", "cmd": rng.choice(["info", "client|list"]), "lib-name": "connguard"}
    elif kind == "replica":
        name, v = rng.choice(["", ""]), {"flags": "S", "cmd": rng.choice(["psync", "replconf", "sync"])}
    elif kind == "primary_link":
        name, v = "", {"flags": "M", "cmd": rng.choice(["ping", "NULL", "set", "publish"]), "user": "default"}
    elif kind in ("sentinel_cmd", "sentinel_pubsub"):
        name = f"sentinel-{rng.getrandbits(32):08x}-{'cmd' if kind == 'sentinel_cmd' else 'pubsub'}"
        v = {"flags": "N", "cmd": rng.choice(["ping", "info", "publish"])} if kind == "sentinel_cmd" else \
            {"flags": "P", "sub": 1, "cmd": "subscribe"}
    elif kind == "subscriber":
        v = {"flags": "P", "sub": rng.randint(1, 5), "cmd": rng.choice(["subscribe", "ping"])}
    elif kind == "psubscriber":
        v = {"flags": "P", "psub": rng.randint(1, 3), "cmd": "psubscribe"}
    elif kind == "shard_subscriber":
        v = {"flags": "P", "ssub": rng.randint(1, 3), "cmd": "ssubscribe"}
    elif kind == "monitor":
        v = {"flags": "O", "cmd": "monitor"}
    elif kind == "blocked_list":
        v = {"flags": "b", "cmd": rng.choice(["blpop", "brpop", "blmove", "bzpopmin"])}
    elif kind == "blocked_stream":
        v = {"flags": "b", "cmd": rng.choice(["xread", "xreadgroup"])}
    elif kind == "blocked_wait":
        v = {"flags": "b", "cmd": "wait"}
    elif kind == "was_blocked":  # served: no `b` any more, but its last command is still BLPOP
        v = {"flags": "N", "cmd": "blpop"}
    elif kind == "redis_exporter":
        name, v = "redis_exporter", {"flags": "N", "cmd": rng.choice(["info", "client|list", "config|get"])}
    elif kind == "in_multi":
        v = {"flags": "x", "multi": rng.randint(1, 4), "cmd": "set"}
    elif kind == "unix":
        host = "unix"
        addr = "/run/redis/redis.sock:0"
        v = {"flags": "U", "cmd": "get", "laddr": addr}
    elif kind == "active":
        idle = 0
    line = render(layout, {"id": cid, "addr": addr, "name": name, "idle": idle, "age": idle + rng.randint(0, 999),
                           "fd": cid + 8, **v})
    return Fake(cid, kind, host, name, idle, line)


KINDS = sorted(PROTECTED - {"own"} | BLOCKED | PLAIN | EITHER)  # exactly one "own": ours


def population(seed: int) -> tuple[list[Fake], int]:
    """A random population in one real layout; returns the clients and our own connection's ID."""
    rng = random.Random(seed)
    layout = LAYOUTS[rng.choice(sorted(LAYOUTS))]
    hosts = [f"127.0.{rng.randint(0, 3)}.{rng.randint(2, 250)}" for _ in range(rng.randint(1, 5))] + ["::1"]
    ids = rng.sample(range(3, 100_000), rng.randint(1, 60))
    kinds = ["own"] + [rng.choice(KINDS) for _ in ids[1:]]
    clients = [make_client(rng, kind, cid, layout, hosts) for kind, cid in zip(kinds, ids)]
    rng.shuffle(clients)
    return clients, ids[0]


def selection(rng: random.Random, clients: list[Fake]) -> KillFilter:
    """A random operator request, deliberately aimed at protected clients too (by host, name and ID)."""
    hosts = sorted({c.host for c in clients})
    sources = tuple(rng.sample(hosts, rng.randint(1, min(2, len(hosts))))) if rng.random() < 0.6 else ()
    idle = rng.choice([None, None, 0, 1, 30, 300]) if rng.random() < 0.7 else None
    names = tuple(rng.sample(sorted({c.name for c in clients}), 1)) if rng.random() < 0.25 else ()
    ids = tuple(c.id for c in rng.sample(clients, rng.randint(1, len(clients)))) if rng.random() < 0.3 else ()
    if not (sources or idle is not None or names or ids):
        idle = 0
    return KillFilter(sources, idle, names, ids, include_blocked=rng.random() < 0.4,
                      max_kills=rng.choice([1, 3, 10, 1000]), force=bool(ids) and rng.random() < 0.2)


def matches(c: Fake, wanted: KillFilter) -> bool:
    """The operator's selection, read from the documented options (not from KillFilter.matches)."""
    return ((not wanted.sources or c.host in wanted.sources)
            and (wanted.idle_min_s is None or c.idle >= wanted.idle_min_s)
            and (not wanted.names or c.name in wanted.names)
            and (not wanted.ids or c.id in wanted.ids))


forced_kinds: Counter[str] = Counter()  # protected kinds that --id --force did select (never "own")


def check_plan(clients: list[Fake], own_id: int, wanted: KillFilter) -> tuple[int, int]:
    records = parse_client_list("\n".join(c.line for c in clients) + "\n").records()
    plan = plan_kill(records, wanted, own_id)
    by_id = {c.id: c for c in clients}
    chosen = [by_id[i] for i in plan.ids]
    assert len(set(plan.ids)) == len(plan.ids), "a client selected twice"
    for c in chosen:
        assert c.kind != "own", f"selected our own connection: {c.line} / {wanted}"
        assert matches(c, wanted), f"selected a client the operator did not ask for: {c.line} / {wanted}"
        if wanted.force:  # --id with --force: the operator listed these very IDs; each is named as forced
            if c.kind in PROTECTED or (c.kind in BLOCKED and not wanted.include_blocked):
                assert c.id in {f.client.id for f in plan.forced}, f"a protected client killed without being named: {c.line}"
            continue
        assert c.kind not in PROTECTED, f"selected a protected client: {c.kind} {c.line}"
        assert wanted.include_blocked or c.kind not in BLOCKED, f"selected a blocked client without --include-blocked: {c.line}"
    assert len(chosen) <= wanted.max_kills
    # Nothing protected is dropped silently: every matching protected client is reported as skipped.
    skipped = {s.client.id for s in plan.skipped} | {f.client.id for f in plan.forced}
    for c in clients:
        if wanted.force and c.kind != "own" and (c.id in plan.ids or plan.over_limit):
            continue  # listed by --id with --force: killed and named, or beyond --max
        if matches(c, wanted) and (c.kind in PROTECTED or (c.kind in BLOCKED and not wanted.include_blocked)):
            assert c.id in skipped, f"a protected client that matched is not reported as skipped: {c.line}"
    # And nothing ordinary is held back: every matching plain client is selected, or over --max.
    plain = [c for c in clients if c.kind in PLAIN and matches(c, wanted)]
    picked_plain = [c for c in chosen if c.kind in PLAIN]
    assert len(picked_plain) + plan.over_limit >= len(plain)
    if len(chosen) < wanted.max_kills:
        assert {c.id for c in plain} <= set(plan.ids), "a plain matching client was neither killed nor over --max"
    forced_kinds.update(c.kind for c in chosen if wanted.force and c.kind in PROTECTED)
    return len(chosen), sum(1 for c in clients if c.kind in PROTECTED | BLOCKED and matches(c, wanted))


def test_a_protected_client_is_never_selected_over_1000_random_populations():
    selected = aimed_at_protected = 0
    kinds_seen: set[str] = set()
    for seed in range(POPULATIONS):
        clients, own_id = population(seed)
        kinds_seen |= {c.kind for c in clients}
        rng = random.Random(10_000 + seed)
        for _ in range(SELECTIONS_PER_POPULATION):
            n, protected_matching = check_plan(clients, own_id, selection(rng, clients))
            selected += n
            aimed_at_protected += protected_matching
    # The generator really exercised every kind, and the selections really reached protected clients.
    assert kinds_seen == set(KINDS) | {"own"}
    assert set(forced_kinds) >= PROTECTED - {"own"}, forced_kinds  # --force reached every protected kind but ours
    assert selected > 10_000 and aimed_at_protected > 10_000, (selected, aimed_at_protected)


def test_protection_holds_when_the_operator_names_the_protected_client_exactly():
    """--id of a replica, --name of a Sentinel link or of connguard: still skipped, each with its reason."""
    layout = LAYOUTS["redis-7.0.15"]
    rng = random.Random(7)
    clients = [make_client(rng, kind, 100 + i, layout, ["127.0.0.9"]) for i, kind in enumerate(sorted(PROTECTED | BLOCKED))]
    own_id = next(c.id for c in clients if c.kind == "own")
    records = parse_client_list("\n".join(c.line for c in clients)).records()
    for c in clients:
        for wanted in (KillFilter(ids=(c.id,)), KillFilter(names=(c.name,), idle_min_s=0)):
            plan = plan_kill(records, wanted, own_id)
            assert plan.ids == () or all(i != c.id for i in plan.ids), c.line
            assert c.id in {s.client.id for s in plan.skipped}
            assert all(s.reason for s in plan.skipped)


# ---------------------------------------------------------------------------------------------------
# Part 2: real servers, real clients of each kind
# ---------------------------------------------------------------------------------------------------
def server_clients(port: int) -> list[dict[str, str]]:
    """The server's own CLIENT LIST, read with redis-py's parser (not connguard's), without this connection."""
    # Named as a connguard tool, so that if the server has not yet processed our close when the kill lists its
    # clients, this connection is protected rather than a candidate.
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, client_name=CLIENT_NAME)
    try:
        own = r.client_id()
        return [c for c in r.client_list() if int(c["id"]) != own]
    finally:
        r.close()


def wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the lab to settle")


def raw_client(port: int, source: str, *commands: tuple[str, ...]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    for cmd in commands:
        sock.sendall(resp_command(*cmd))
    sock.recv(4096)
    return sock


def addr_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


@pytest.mark.slow
def test_twenty_random_kills_on_real_servers_remove_exactly_the_selected_clients(default_binary, start_server):
    primary = start_server(default_binary, maxclients=300)
    replica = start_server(default_binary, maxclients=300, replicaof=("127.0.0.1", primary.port))
    wait_for(lambda: any("S" in c["flags"] for c in server_clients(primary.port)))
    wait_for(lambda: any("M" in c["flags"] for c in server_clients(replica.port)))

    held: list[socket.socket | redis.client.PubSub] = []
    crowds = {p: Crowd("127.0.0.1", p) for p in (primary.port, replica.port)}
    protected_addrs: dict[int, set[str]] = {primary.port: set(), replica.port: set()}  # never to be killed
    blocked: dict[int, socket.socket | None] = {primary.port: None, replica.port: None}  # unless --include-blocked
    try:
        for server in (primary, replica):
            p, crowd = server.port, crowds[server.port]
            sub = redis.Redis(host="127.0.0.1", port=p).pubsub()  # a real redis-py subscriber
            sub.subscribe("orders")
            sub.get_message(timeout=1)
            held.append(sub)
            monitor = raw_client(p, "127.0.0.20", ("MONITOR",))
            held.append(monitor)
            protected_addrs[p] |= {addr_of(sub.connection._sock), addr_of(monitor)}  # type: ignore[union-attr]
            for group in (crowd.open(1, source="127.0.0.22", name="sentinel-0a1b2c3d-cmd"),
                          crowd.open(1, source="127.0.0.22", kind="pubsub", name="sentinel-0a1b2c3d-pubsub"),
                          crowd.open(1, source="127.0.0.23", name=CLIENT_NAME, lib_name="connguard")):
                protected_addrs[p] |= {addr_of(s) for s in group.sockets}
            crowd.open(1, source="127.0.0.24", kind="active", name="api")

        rng = random.Random(20261201)
        rounds = killed_total = killed_blocked = aimed = 0
        for round_no in range(LIVE_ROUNDS):
            server = replica if round_no % 4 == 3 else primary  # the replica's list holds the primary link (M)
            p, crowd = server.port, crowds[server.port]
            if blocked[p] is None:
                blocked[p] = open_blocked(p, on_replica=server is replica)
                held.append(blocked[p])  # type: ignore[arg-type]
            for source, name in (("127.0.0.30", "orders-worker"), ("127.0.0.31", None), ("127.0.0.32", "redis_exporter")):
                crowd.open(rng.randint(0, 3), source=source, name=name)
            if rng.random() < 0.3:
                time.sleep(1.1)  # so an --idle 1 selection has something to tell apart
            crowd.open(rng.randint(0, 2), source="127.0.0.33", name="fresh")
            before = server_clients(p)
            blocked_addr = addr_of(blocked[p])  # type: ignore[arg-type]
            assert "b" in next(c["flags"] for c in before if c["addr"] == blocked_addr)
            wanted = live_selection(rng, before)
            if round_no in (2, 6, 15):  # aimed at the blocked client: kept without --include-blocked, gone with it
                wanted = KillFilter(sources=("127.0.0.21",), include_blocked=round_no != 2)
            use_cli = round_no % 5 == 0
            ids = kill_via_cli(server.url, wanted) if use_cli else kill_in_process(server.url, wanted)
            after = server_clients(p)
            # Our own observer connections (named connguard, see server_clients) may still be closing: leave them out.
            before_ids = {int(c["id"]) for c in before if c["name"] != CLIENT_NAME or c["addr"] in protected_addrs[p]}
            gone = before_ids - {int(c["id"]) for c in after}
            assert gone == set(ids), f"round {round_no} ({'cli' if use_cli else 'library'}): killed {ids}, gone {gone}"
            for c in before:
                if int(c["id"]) in set(ids):
                    assert c["addr"] not in protected_addrs[p], f"killed a protected client: {c}"
                    assert "S" not in c["flags"] and "M" not in c["flags"], f"killed a replication link: {c}"
                    if c["addr"] == blocked_addr:
                        assert wanted.include_blocked, f"killed a blocked client without --include-blocked: {c}"
                        blocked[p] = None
                        killed_blocked += 1
            if round_no in (2, 6, 15):  # the aimed rounds: gone exactly when --include-blocked was given
                assert (blocked_addr not in {c["addr"] for c in after}) == wanted.include_blocked, round_no
            # The protected clients of every kind are all still there, by address, and so are both links.
            assert protected_addrs[p] <= {c["addr"] for c in after}
            assert any("S" in c["flags"] for c in server_clients(primary.port))
            assert any("M" in c["flags"] for c in server_clients(replica.port))
            rounds += 1
            killed_total += len(ids)
            aimed += sum(1 for c in before if live_matches(c, wanted)
                         and (c["addr"] in protected_addrs[p] or c["addr"] == blocked_addr or c["flags"] in ("S", "M")))
        print(f"live: {rounds} rounds, {killed_total} killed ({killed_blocked} blocked, with --include-blocked), "
              f"{aimed} protected clients matched a selection and were kept")
        assert rounds == LIVE_ROUNDS and killed_total > 0 and aimed > 0 and killed_blocked >= 2
    finally:
        for crowd in crowds.values():
            crowd.close()
        for h in held:
            if h is not None:
                h.close()


def open_blocked(port: int, on_replica: bool) -> socket.socket:
    """A client parked in a blocking command: BLPOP on a primary; a replica refuses BLPOP (a write, so the
    client would not block at all), so there XREAD BLOCK, which is read-only."""
    sock = raw_client(port, "127.0.0.21", ("CLIENT", "SETNAME", "queue-consumer"))
    cmd = ("XREAD", "BLOCK", "0", "STREAMS", "connguard:lab:stream", "$") if on_replica else ("BLPOP", "connguard:lab:empty", "0")
    sock.sendall(resp_command(*cmd))
    wait_for(lambda: any(c["addr"] == addr_of(sock) and "b" in c["flags"] for c in server_clients(port)))
    return sock


def live_selection(rng: random.Random, before: list[dict[str, str]]) -> KillFilter:
    hosts = sorted({c["addr"].rpartition(":")[0] for c in before})
    names = sorted({c["name"] for c in before})
    sources = tuple(rng.sample(hosts, rng.randint(1, min(3, len(hosts))))) if rng.random() < 0.6 else ()
    idle = rng.choice([None, 0, 1]) if rng.random() < 0.6 else None
    pick_names = (rng.choice(names),) if rng.random() < 0.3 else ()
    ids = tuple(int(c["id"]) for c in rng.sample(before, rng.randint(1, len(before)))) if rng.random() < 0.3 else ()
    if not (sources or idle is not None or pick_names or ids):
        idle = 0
    return KillFilter(sources, idle, pick_names, ids, include_blocked=rng.random() < 0.3,
                      max_kills=rng.choice([2, 5, 1000]))


def live_matches(c: dict[str, str], wanted: KillFilter) -> bool:
    return ((not wanted.sources or c["addr"].rpartition(":")[0] in wanted.sources)
            and (wanted.idle_min_s is None or int(c["idle"]) >= wanted.idle_min_s)
            and (not wanted.names or c["name"] in wanted.names)
            and (not wanted.ids or int(c["id"]) in wanted.ids))


def kill_in_process(url: str, wanted: KillFilter) -> tuple[int, ...]:
    with open_connection(parse_target(url, env={}), connect_timeout_s=5) as conn:
        plan = plan_kill(parse_client_list(conn.execute("CLIENT", "LIST")).records(), wanted, conn.client_id)
        result = execute_kills(conn, plan)
    assert result.killed == len(plan.ids) and result.already_gone == ()
    return plan.ids


def kill_via_cli(url: str, wanted: KillFilter) -> tuple[int, ...]:
    args = [sys.executable, "-m", "connguard", "kill", url, "--yes", "--json", "--max", str(wanted.max_kills)]
    args += [a for s in wanted.sources for a in ("--source", s)]
    args += [a for n in wanted.names for a in ("--name", n)]
    args += [a for i in wanted.ids for a in ("--id", str(i))]
    args += ["--idle", str(wanted.idle_min_s)] if wanted.idle_min_s is not None else []
    args += ["--include-blocked"] if wanted.include_blocked else []
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDISCLI_AUTH")}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["killed"] == len(out["ids"]) and not out["dry_run"]
    return tuple(out["ids"])
