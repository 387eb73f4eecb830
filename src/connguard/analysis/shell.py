"""Exact, password-free commands for a target: `connguard ...` and `redis-cli ...` lines."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from connguard.errors import ConnguardError
from connguard.target_url import Target, parse_target

MAX_IDS_IN_COMMAND = 50


@dataclass(frozen=True)
class Commands:
    """Builds commands for one target. The password is never written: redis-cli and connguard both
    read it from $REDISCLI_AUTH."""

    url: str  # the target URL without any password
    cli: str  # redis-cli connection options

    @classmethod
    def for_target(cls, target: Target | str) -> "Commands":
        if isinstance(target, Target):
            t = target
        else:
            try:
                t = parse_target(target, env={})
            except ConnguardError:
                return cls(url=target, cli="redis-cli")
        user = f"{t.username}@" if t.username else ""
        if t.scheme == "unix":
            url = f"unix://{user}{t.path}"
            cli = f"redis-cli -s {shlex.quote(t.path or '')}"
        else:
            host = f"[{t.host}]" if t.host and ":" in t.host else t.host
            url = f"{t.scheme}://{user}{host}:{t.port}"
            cli = f"redis-cli -h {t.host} -p {t.port}" + (" --tls" if t.tls else "")
        if t.db:  # the database the user named: a kill or a check elsewhere would miss its clients' view
            url += f"?db={t.db}" if t.scheme == "unix" else f"/{t.db}"
            cli += f" -n {t.db}"
        if t.username:
            cli += f" --user {shlex.quote(t.username)}"
        return cls(url=url, cli=cli)

    def redis_cli(self, *args: object) -> str:
        return " ".join([self.cli, *(str(a) for a in args)])

    def connguard(self, sub: str, *args: object) -> str:
        return " ".join(["connguard", sub, self.url, *(str(a) for a in args)])

    def kill_ids(self, ids: tuple[int, ...] | list[int]) -> str:
        """One CLIENT KILL ID per client (by ID, never ip:port: an address can be reused by a newer client)."""
        shown = list(ids)[:MAX_IDS_IN_COMMAND]
        return f"for id in {' '.join(map(str, shown))}; do {self.cli} CLIENT KILL ID $id; done"
