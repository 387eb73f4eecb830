"""output_buffer_bloat: clients (slow pub/sub subscribers, lagging replicas) whose output buffers hold memory
because they do not read their replies as fast as the server produces them."""

from __future__ import annotations

from collections import Counter
from typing import Mapping

from connguard.analysis.classify import PUBSUB, REPLICA, client_records, kind_of
from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding
from connguard.probe.model import ClientRecord, Snapshot

MIB = 1024 * 1024
NOTABLE_BYTES = 1 * MIB  # a client's output buffer at or above this is listed as evidence
# The server's own default soft limit for pub/sub clients (client-output-buffer-limit pubsub 32mb 8mb 60): a
# subscriber this far behind is what Redis itself calls too slow. Output buffers adding up to it warn.
WARNING_BYTES = 8 * MIB
SHARE_WARNING = 0.25  # or output buffers holding this share of used_memory (and at least NOTABLE_BYTES)
SUGGESTED_PUBSUB_LIMIT = "pubsub 32mb 8mb 60"  # the Redis/Valkey default, which the lab server lacks
TOP = 10


def info_int(snap: Snapshot, section: str, key: str) -> int | None:
    """One integer INFO field, None when this server version does not report it."""
    value = snap.info.sections.get(section, {}).get(key)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _disconnections(f: Facts) -> tuple[int | None, int | None]:
    """client_output_buffer_limit_disconnections now, and its growth over the window (Redis 7.4+, Valkey 8.0+)."""
    now = info_int(f.now, "stats", "client_output_buffer_limit_disconnections")
    first = info_int(f.first, "stats", "client_output_buffer_limit_disconnections")
    same_server = f.first.info.process_id == f.now.info.process_id
    return now, (now - first if now is not None and first is not None and same_server else None)


def _describe(r: ClientRecord, used_memory: int | None) -> dict[str, object]:
    return {
        "id": r.id, "host": r.host, "addr": r.addr, "name": r.name, "cmd": r.cmd, "kind": kind_of(r),
        "sub": r.sub, "psub": r.psub, "omem": r.output_buffer, "tot_mem": r.total_memory,
        "share_of_used_memory": round(r.output_buffer / used_memory, 3) if used_memory else None,
    }


def check(f: Facts) -> Finding | None:
    snap = f.now
    recent_max = info_int(snap, "clients", "client_recent_max_output_buffer")
    disconnections, disconnected = _disconnections(f)
    if snap.clients is None or (recent_max is not None and recent_max < NOTABLE_BYTES):
        # INFO already says no client holds a large output buffer: skip the per-client scan (50,000 clients).
        heavy: list[ClientRecord] = []
    else:
        heavy = sorted((r for r in client_records(snap) if r.output_buffer >= NOTABLE_BYTES),
                       key=lambda r: (-r.output_buffer, r.id))
    if not heavy and not disconnected:
        return None
    used_memory = info_int(snap, "memory", "used_memory")
    held = sum(r.output_buffer for r in heavy)
    share = held / used_memory if used_memory else None
    big = held >= WARNING_BYTES or (share is not None and share >= SHARE_WARNING)
    severity = "warning" if big else "info"
    by_host: Counter[str] = Counter()
    for r in heavy:
        by_host[r.host] += r.output_buffer
    hosts = [h for h, _ in by_host.most_common(TOP)]
    kinds = Counter(kind_of(r) for r in heavy)
    subscribers = [r for r in heavy if kind_of(r) == PUBSUB]
    replicas = [r for r in heavy if kind_of(r) == REPLICA]
    mem: Mapping[str, int | None] = {
        k: info_int(snap, "memory", k) for k in ("mem_clients_normal", "mem_clients_slaves", "used_memory",
                                                  "maxmemory")
    }
    if heavy:
        worst = heavy[0]
        who = (f"{len(heavy)} client{'s hold' if len(heavy) != 1 else ' holds'} {_mb(held)} in output buffers"
               f"{f' ({share:.0%} of used_memory)' if share is not None else ''}; the worst, id {worst.id} from "
               f"{worst.host}{f' ({worst.name})' if worst.name else ''}, is a {kind_of(worst)} client "
               f"(cmd {worst.cmd or '-'}) with {_mb(worst.output_buffer)} queued")
        summary = (f"Output buffer bloat: {who}. It does not read its replies as fast as the server sends them "
                   "(a slow consumer); the memory grows until client-output-buffer-limit drops it.")
    else:
        summary = (f"Output buffer limit disconnections: the server dropped {disconnected} client(s) at "
                   "client-output-buffer-limit while the doctor watched (slow consumers); they reconnect and "
                   "count as churn.")
    if disconnected:
        summary += f" {disconnected} client(s) were disconnected at the limit during the window."
    evidence = {
        "clients": len(heavy), "output_buffer_bytes": held, "share_of_used_memory": round(share, 3) if share else share,
        "top": [_describe(r, mem["used_memory"]) for r in heavy[:TOP]],
        "hosts": hosts, "per_host": dict(by_host.most_common(TOP)), "kinds": dict(kinds),
        "client_recent_max_output_buffer": recent_max,
        "client_output_buffer_limit_disconnections": disconnections, "disconnections_in_window": disconnected,
        **mem,
    }
    return Finding("output_buffer_bloat", severity, 0.9 if heavy else 0.6, summary, evidence,
                   tuple(_actions(f, heavy, subscribers, replicas)))


def _mb(n: int) -> str:
    return f"{n / MIB:.1f} MB"


def kill_threshold(heavy: list[ClientRecord]) -> int:
    """The --output-buffer-over value that reaches the worst offenders (at most TOP of them)."""
    if len(heavy) <= TOP:
        return NOTABLE_BYTES
    return max(NOTABLE_BYTES, heavy[TOP - 1].output_buffer)


def _actions(f: Facts, heavy: list[ClientRecord], subscribers: list[ClientRecord],
             replicas: list[ClientRecord]) -> list[Action]:
    cmd = f.cmd
    actions = [Action("See the output-buffer limits in force (read-only)",
                      cmd.redis_cli("CONFIG GET client-output-buffer-limit"), False)]
    if subscribers or not heavy:
        actions.append(Action(
            f"Cap what a slow subscriber may hold: the server drops a pub/sub client over 32 MB, or over 8 MB for "
            f"60 s, instead of growing without bound (persist with CONFIG REWRITE or in redis.conf)",
            cmd.redis_cli("CONFIG SET client-output-buffer-limit", f'"{SUGGESTED_PUBSUB_LIMIT}"'), True))
    killable = [r for r in heavy if kind_of(r) != REPLICA]
    if killable:
        over = kill_threshold(killable)
        chosen = [r for r in killable if r.output_buffer >= over]
        actions.append(Action(
            f"Disconnect the {'worst ' + str(len(chosen)) + ' offenders' if len(chosen) > 1 else 'offender'} "
            f"holding over {_mb(over)} of output buffer{' each' if len(chosen) > 1 else ''}, by ID "
            "(pub/sub subscribers included: this one selector may kill them; replicas never; dry run until --yes, "
            "which lists every one)",
            cmd.connguard("kill", "--output-buffer-over", over), True))
        actions.append(Action("Or with redis-cli, by client ID, never by ip:port", cmd.kill_ids([r.id for r in chosen]),
                              True))
    actions.append(Action(
        "Fix the consumer: read subscriptions in their own thread or task and hand messages to a queue, so "
        "the socket is always drained; publish smaller messages or fewer of them", None, False))
    if replicas:
        actions.append(Action(
            f"{len(replicas)} replica(s) lag behind: check their network and load; a replica dropped at the "
            "limit resynchronises in full, so size `client-output-buffer-limit replica` to the write rate", None,
            False))
    return actions
