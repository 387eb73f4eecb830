"""Actions several rules share, each written once: raise maxclients within the fd limit, the idle-timeout
safety net, kills, the retry-storm fixes, and what helps the next time a server fills."""

from __future__ import annotations

import math

from connguard.analysis.capacity import RESERVED_FDS as FD_RESERVE
from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action
from connguard.analysis.shell import Commands
from connguard.analysis.sources import Source

TIMEOUT_SAFETY_NET_S = 300
WAIT_FOR_SLOT_S = 30  # connguard kill/config wait this long for a free slot, with jittered backoff


def refusing(f: Facts) -> bool:
    """The server is full or turned the doctor away: redis-cli (which does not retry) would be refused too,
    so the commands printed are connguard's, which wait for a slot."""
    return f.full or f.refused_us > 0


def waiting(f: Facts) -> tuple[object, ...]:
    return ("--connect-timeout", WAIT_FOR_SLOT_S) if refusing(f) else ()


WAIT_NOTE = f"; it waits up to {WAIT_FOR_SLOT_S}s for a free slot"


def round_up(n: float) -> int:
    step = 10 if n < 1000 else 100
    return int(math.ceil(n / step) * step)


def raise_maxclients_actions(cmd: Commands, *, fd: int | None, current: int, wanted: int, why: str,
                             pid: int | None, refusing: bool = False, wait: bool = False) -> list[Action]:
    """CONFIG SET maxclients to `wanted`, never past what the fd limit allows (fd - 32); first the fd limit
    itself when it is already the ceiling. `refusing`: the server lets nobody in, so CONFIG SET cannot run
    yet; the step is advice for once slots are free, not a command to paste now. `wait`: the server is full
    but frees a slot now and then (the doctor's own, when it leaves): `connguard config`, which waits."""
    if current and wanted <= current:
        return [Action(f"{why}: maxclients {current} is already at or above the {wanted} this needs; do not lower "
                       "it, free slots instead", None, False)]
    if refusing:
        why += " once slots are free (CONFIG SET needs a connection)"

    def config_set(value: object, title: str) -> Action:
        if refusing:
            return Action(f"{title}: `{cmd.connguard('config', '--maxclients', value, '--yes')}`", None, True)
        if wait:
            return Action(f"{title} (dry run until --yes{WAIT_NOTE})",
                          cmd.connguard("config", "--maxclients", value, "--connect-timeout", WAIT_FOR_SLOT_S), True)
        return Action(title, cmd.redis_cli("CONFIG SET maxclients", value), True)

    if fd is not None:
        ceiling = fd - FD_RESERVE
        if ceiling > current:
            value = min(wanted, ceiling)
            return [config_set(value, f"{why}: raise maxclients to {value} (fd limit {fd} allows at most {fd} - "
                                      f"{FD_RESERVE} = {ceiling}); persist it with CONFIG REWRITE or in redis.conf")]
        need = wanted + FD_RESERVE
        return [
            Action(
                f"{why}: the fd limit {fd} allows no more than maxclients {ceiling}; raise the server's "
                f"open-files limit to {need} first (LimitNOFILE={need} in its systemd unit to keep it)",
                f"prlimit --pid {pid or '<pid>'} --nofile={need}:{need}", True,
            ),
            config_set(wanted, f"then raise maxclients to {wanted}"),
        ]
    if refusing:
        return [config_set("<N>", f"{why}: raise maxclients (now about {current}) to what the server's "
                                  f"open-files limit allows (limit - {FD_RESERVE})")]
    return [config_set(wanted, f"{why}: raise maxclients to {wanted}, after checking on the server host that its "
                               f"open-files limit is at least {wanted + FD_RESERVE} (maxclients + {FD_RESERVE}); "
                               "otherwise the server refuses the value")]


def raise_maxclients(f: Facts, wanted: int, why: str) -> list[Action]:
    """raise_maxclients_actions for a server we are connected to."""
    pid = f.now.host.pid if f.now.host else None
    return raise_maxclients_actions(f.cmd, fd=f.fd_limit, current=f.maxclients or 0, wanted=wanted, why=why, pid=pid,
                                    wait=refusing(f))


def backoff_actions(cmd: Commands) -> list[Action]:
    """The fix for a retry storm, on the client side: jittered backoff and a circuit breaker."""
    return [
        Action(
            "Make clients back off with jitter and stop after repeated refusals (circuit breaker); "
            "connguard.guard does both for redis-py",
            f'from connguard.guard import guarded_client; r = guarded_client("{cmd.url}")', False,
        ),
        Action(
            "With plain redis-py: exponential backoff with jitter and few retries",
            f'redis.Redis.from_url("{cmd.url}", retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=10), 3))', False,
        ),
    ]


RAISING_DOES_NOT_END_STORM = Action(
    "Raising maxclients alone does not end a storm: reconnecting clients fill any new slots", None, False)

# A full server lets nobody in, so fixing it from inside needs a connection taken before it filled.
NEXT_TIME = Action(
    "Next time: keep one long-running connguard process connected (it holds a slot of its own), so fixes can "
    "run from inside when the server is full; nothing to run for that now", None, False)


def timeout_safety_net(f: Facts) -> Action:
    """CONFIG SET timeout as a safety net, never weaker than the timeout in place: a server already closing
    idle clients sooner is told so, and left as it is."""
    seconds = max(TIMEOUT_SAFETY_NET_S, f.idle_threshold)
    config = f.now.server_config
    current = config.timeout_s if config is not None else None
    if current:  # 0 means off
        if current <= seconds:
            return Action(f"timeout {current} is already in place and stricter than the {seconds}s safety net: "
                          f"keep it; it closes plain clients idle over {current}s, so what piles up here is younger "
                          "than that, or pub/sub or blocked (which timeout never closes), or kept alive by the "
                          "client's own pings", None, False)
    title = (f"Safety net until the code is fixed: close clients idle over {seconds}s "
             "(it does not close pub/sub or blocked clients, replicas or MONITOR)"
             + (f"; timeout is {current}s now, so this tightens it" if current else
                "" if config is not None and config.timeout_s == 0 else
                "; check CONFIG GET timeout first and never raise a lower one"))
    if refusing(f):
        return Action(f"{title} (dry run until --yes{WAIT_NOTE})",
                      f.cmd.connguard("config", "--timeout", seconds, *waiting(f)), True)
    return Action(title, f.cmd.redis_cli("CONFIG SET timeout", seconds), True)


def kill_idle(f: Facts, sources: list[Source], limit: int = 3) -> list[Action]:
    """Per host `connguard kill --source --idle`, then the raw CLIENT KILL ID list for the same clients."""
    actions = [
        Action(
            f"Disconnect the {s.idle_over_threshold} connections from {s.host} idle over {f.idle_threshold}s "
            f"(dry run until --yes; replicas, Sentinel, pub/sub and blocked clients are skipped"
            f"{WAIT_NOTE if refusing(f) else ''})",
            f.cmd.connguard("kill", "--source", s.host, "--idle", f.idle_threshold, *waiting(f)), True,
        )
        for s in sources[:limit]
    ]
    ids = [i for s in sources for i in s.idle_ids]
    if ids and not refusing(f):  # redis-cli does not wait for a slot
        more = f" (the first 50 of {len(ids)})" if len(ids) > 50 else ""
        actions.append(Action(
            f"Or with redis-cli, by client ID{more}, never by ip:port (an address can be reused by a newer client)",
            f.cmd.kill_ids(ids), True,
        ))
    return actions


def kill_stale(f: Facts, sources: list[Source], limit: int = 3) -> list[Action]:
    """For a leak younger than the idle threshold: reach the used-once connections by their own idle time."""
    actions = [
        Action(
            f"Disconnect the {s.stale} connections from {s.host} left idle since they were opened "
            f"(idle >= {max(1, s.stale_min_idle_s)}s; dry run until --yes{WAIT_NOTE if refusing(f) else ''})",
            f.cmd.connguard("kill", "--source", s.host, "--idle", max(1, s.stale_min_idle_s), *waiting(f)), True,
        )
        for s in sources[:limit]
    ]
    ids = [i for s in sources for i in s.stale_ids]
    if ids and not refusing(f):
        actions.append(Action("Or with redis-cli, by client ID, never by ip:port", f.cmd.kill_ids(ids), True))
    return actions


KEEPALIVE_S = 300  # the Redis default: probes a silent peer so a crashed client's connection is closed


def keepalive_advice(f: Facts) -> list[Action]:
    """tcp-keepalive, read from the server: off (0) lets connections of crashed or vanished clients hold their
    slots until a write fails; on, it is already right and the advice says so."""
    config = f.now.server_config
    if config is None or config.tcp_keepalive_s is None:
        return []
    if config.tcp_keepalive_s > 0:
        return [Action(f"tcp-keepalive {config.tcp_keepalive_s} is already on: connections of crashed clients are "
                       "closed by the kernel; nothing to change there", None, False)]
    title = (f"tcp-keepalive is off (0): connections of vanished clients hold their slots for good; turn it on "
             f"({KEEPALIVE_S}s, the default; it applies to connections made after it is set)")
    if refusing(f):
        return [Action(f"{title} once slots are free: `{f.cmd.redis_cli('CONFIG SET tcp-keepalive', KEEPALIVE_S)}`",
                       None, True)]
    return [Action(title, f.cmd.redis_cli("CONFIG SET tcp-keepalive", KEEPALIVE_S), True)]
