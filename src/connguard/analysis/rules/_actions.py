"""Actions several rules share: raise maxclients within the fd limit, the idle-timeout safety net, kills."""

from __future__ import annotations

import math

from connguard.analysis.capacity import RESERVED_FDS as FD_RESERVE
from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action
from connguard.analysis.sources import Source

TIMEOUT_SAFETY_NET_S = 300


def round_up(n: float) -> int:
    step = 10 if n < 1000 else 100
    return int(math.ceil(n / step) * step)


def raise_maxclients(f: Facts, wanted: int, why: str) -> list[Action]:
    """CONFIG SET maxclients to `wanted`, but never past what the fd limit allows (fd - 32)."""
    fd = f.fd_limit
    current = f.maxclients or 0
    if fd is not None:
        ceiling = fd - FD_RESERVE
        if ceiling > current:
            value = min(wanted, ceiling)
            return [Action(
                f"{why}: raise maxclients to {value} (fd limit {fd} allows at most {fd} - {FD_RESERVE} = {ceiling}); "
                "persist it with CONFIG REWRITE or in redis.conf",
                f.cmd.redis_cli("CONFIG SET maxclients", value), True,
            )]
        pid = f.now.host.pid if f.now.host else "<pid>"
        need = wanted + FD_RESERVE
        return [
            Action(
                f"{why}: the fd limit {fd} allows no more than maxclients {ceiling}; raise the server's "
                f"open-files limit to {need} first (LimitNOFILE={need} in its systemd unit to keep it)",
                f"prlimit --pid {pid} --nofile={need}:{need}", True,
            ),
            Action(f"then raise maxclients to {wanted}", f.cmd.redis_cli("CONFIG SET maxclients", wanted), True),
        ]
    return [Action(
        f"{why}: raise maxclients to {wanted}, after checking on the server host that its open-files limit "
        f"is at least {wanted + FD_RESERVE} (maxclients + {FD_RESERVE}); otherwise the server refuses the value",
        f.cmd.redis_cli("CONFIG SET maxclients", wanted), True,
    )]


def timeout_safety_net(f: Facts) -> Action:
    seconds = max(TIMEOUT_SAFETY_NET_S, f.idle_threshold)
    return Action(
        f"Safety net until the code is fixed: close clients idle over {seconds}s "
        "(it does not close pub/sub or blocked clients, replicas or MONITOR)",
        f.cmd.redis_cli("CONFIG SET timeout", seconds), True,
    )


def kill_idle(f: Facts, sources: list[Source], limit: int = 3) -> list[Action]:
    """Per host `connguard kill --source --idle`, then the raw CLIENT KILL ID list for the same clients."""
    actions = [
        Action(
            f"Disconnect the {s.idle_over_threshold} connections from {s.host} idle over {f.idle_threshold}s "
            "(dry run until --yes; replicas, Sentinel, pub/sub and blocked clients are skipped)",
            f.cmd.connguard("kill", "--source", s.host, "--idle", f.idle_threshold), True,
        )
        for s in sources[:limit]
    ]
    ids = [i for s in sources for i in s.idle_ids]
    if ids:
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
            f"(idle >= {max(1, s.stale_min_idle_s)}s; dry run until --yes)",
            f.cmd.connguard("kill", "--source", s.host, "--idle", max(1, s.stale_min_idle_s)), True,
        )
        for s in sources[:limit]
    ]
    ids = [i for s in sources for i in s.stale_ids]
    if ids:
        actions.append(Action("Or with redis-cli, by client ID, never by ip:port", f.cmd.kill_ids(ids), True))
    return actions
