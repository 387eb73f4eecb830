"""fd_limit: maxclients was lowered by the OS file-descriptor limit, or the limit sits barely above maxclients + 32."""

from __future__ import annotations

from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding
from connguard.analysis.rules._actions import FD_RESERVE, raise_maxclients_actions, refusing

DEFAULT_MAXCLIENTS = 10000
# Common open-files limits; maxclients == limit - 32 is what Redis leaves after lowering it at startup.
COMMON_LIMITS = tuple(2 ** k for k in range(7, 21)) + (65535, 100000)
SIGNATURES = {limit - FD_RESERVE: limit for limit in COMMON_LIMITS}
BARELY = 16  # spare descriptors beyond maxclients + 32 that still count as "barely above"


def check(f: Facts) -> Finding | None:
    m = f.maxclients
    if not m:
        return None
    fd = f.fd_limit
    wanted = max(DEFAULT_MAXCLIENTS, m)
    need = wanted + FD_RESERVE
    if fd is not None:
        spare = fd - (m + FD_RESERVE)
        if spare > BARELY:
            return None
        if spare == 0:
            summary = (f"fd limit: the server's open-files limit is {fd}, so Redis lowered maxclients to "
                       f"{m} = {fd} - {FD_RESERVE}; raise the limit, then maxclients.")
            confidence = 0.95
        elif spare < 0:
            summary = (f"fd limit: the open-files limit {fd} is below maxclients {m} + {FD_RESERVE}; "
                       "connections will fail with EMFILE before maxclients is reached.")
            confidence = 0.9
        else:
            summary = (f"fd limit: the open-files limit {fd} is barely above maxclients {m} + {FD_RESERVE} "
                       f"({spare} spare); the OS, not maxclients, is the real ceiling.")
            confidence = 0.7
        pid = f.now.host.pid if f.now.host else "<pid>"
        evidence = {"fd_limit": fd, "fd_limit_hard": f.now.host.fd_limit_hard if f.now.host else None,
                    "open_fds": f.now.host.open_fds if f.now.host else None, "maxclients": m,
                    "maxclients_plus_reserve": m + FD_RESERVE, "spare": spare, "pid": pid, "source": "/proc",
                    "hosts": []}
        actions = (
            Action(f"Raise the running server's open-files limit to {need} (maxclients {wanted} + {FD_RESERVE})",
                   f"prlimit --pid {pid} --nofile={need}:{need}", True),
            # Once the limit is `need`, the shared raise fits exactly: maxclients `wanted` = need - 32.
            *raise_maxclients_actions(f.cmd, fd=need, current=m, wanted=wanted, why="Then", pid=f.now.host.pid
                                      if f.now.host else None, wait=refusing(f)),
            Action(f"Keep it across restarts: LimitNOFILE={need} in the service unit (or `ulimit -n {need}` "
                   "before starting), and check the log for 'maxclients has been reduced'",
                   "systemctl edit redis-server", False),
        )
        return Finding("fd_limit", "warning", confidence, summary, evidence, actions)
    limit = SIGNATURES.get(m)
    if limit is None:
        return None
    summary = (f"fd limit suspected: maxclients {m} is exactly {limit} - {FD_RESERVE}, the value Redis sets when "
               f"the open-files limit is {limit}; check the limit on the server host.")
    evidence = {"maxclients": m, "suspected_fd_limit": limit, "source": "maxclients == limit - 32 signature",
                "hosts": []}
    actions = (
        Action("On the server host, read the real limit of the running server",
               "grep 'Max open files' /proc/$(pidof redis-server valkey-server | cut -d' ' -f1)/limits", False),
        Action("and look for the startup warning", "grep -i 'maxclients has been reduced' /var/log/redis/*.log", False),
        Action(f"If confirmed: LimitNOFILE={need} in the service unit, restart, then CONFIG SET maxclients {wanted}",
               f.cmd.redis_cli("CONFIG SET maxclients", wanted), True),
    )
    return Finding("fd_limit", "warning", 0.6, summary, evidence, actions)
