"""Which client hosts carry the server's own topology (Sentinels, replicas, its primary, other cluster nodes),
and the guard that keeps every printed action off them: cutting those links breaks failover for a few slots."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Iterable, Mapping

from connguard.analysis.classify import PRIMARY_LINK, REPLICA, SENTINEL, client_records, kind_of
from connguard.analysis.findings import Action, Finding
from connguard.probe.model import HostFacts, Snapshot

KIND_WORDS = {REPLICA: "replica", SENTINEL: "Sentinel", PRIMARY_LINK: "primary"}
_SOURCE = re.compile(r"\s--source\s+(\S+)")


def _add(found: dict[str, set[str]], host: str | None, what: str) -> None:
    if host:
        found.setdefault(host.strip("[]"), set()).update(w.strip() for w in what.split(","))


def replica_hosts(snapshot: Snapshot) -> list[str]:
    """INFO replication's `slaveN:ip=...,port=...` lines, and `master_host` on a replica."""
    section = snapshot.info.sections.get("replication", {})
    hosts = [dict(kv.split("=", 1) for kv in v.split(",") if "=" in kv).get("ip")
             for k, v in section.items() if k.startswith("slave") and k[5:].isdigit()]
    return [h for h in hosts if h]


def host_facts_links(host: HostFacts | None) -> dict[str, str]:
    return dict(host.internal_peers) if host is not None else {}


def internal_hosts(snapshot: Snapshot | None = None, host: HostFacts | None = None) -> dict[str, str]:
    """{client host: what it is} from every view at hand: CLIENT LIST kinds (flag S, M, sentinel-* names),
    INFO replication, CLUSTER NODES, and the local Redis processes /proc shows (HostFacts)."""
    found: dict[str, set[str]] = {}
    if snapshot is not None:
        for rec in client_records(snapshot):
            kind = kind_of(rec)
            if kind in KIND_WORDS:
                _add(found, rec.host, KIND_WORDS[kind])
        for h in replica_hosts(snapshot):
            _add(found, h, "replica")
        _add(found, snapshot.info.sections.get("replication", {}).get("master_host"), "primary")
        if snapshot.server_config is not None:
            for h, role in snapshot.server_config.cluster_nodes.items():
                _add(found, h, f"cluster node ({role})")
        host = host or snapshot.host
    for h, what in host_facts_links(host).items():
        _add(found, h, what)
    return {h: ", ".join(sorted(kinds)) for h, kinds in sorted(found.items())}


def _guard_action(action: Action, internal: Mapping[str, str]) -> tuple[Action | None, list[str]]:
    """The action without `--source` for internal hosts; None when nothing else was left to target."""
    if not action.command:
        return action, []
    chosen = _SOURCE.findall(action.command)
    cut = [h for h in chosen if h.strip("[]") in internal]
    if not cut:
        return action, []
    if len(cut) == len(chosen):
        return None, cut
    command = action.command
    for h in cut:
        command = command.replace(f" --source {h}", "", 1)
    return replace(action, command=command), cut


def guard_findings(findings: Iterable[Finding], internal: Mapping[str, str]) -> list[Finding]:
    """Every action that would target an internal host loses that host; an action left with no target is
    replaced by a note naming what the host is. The last line of defence: rules choose app hosts already."""
    out = []
    for f in findings:
        if not internal:
            out.append(f)
            continue
        actions: list[Action] = []
        spared: list[str] = []
        for a in f.actions:
            kept, cut = _guard_action(a, internal)
            spared += cut
            if kept is not None:
                actions.append(kept)
        if spared:
            names = ", ".join(f"{h} ({internal[h.strip('[]')]})" for h in dict.fromkeys(spared))
            actions.append(Action(f"Not advised: cutting {names}; those connections carry replication, Sentinel or "
                                  "the cluster bus, and freeing their few slots would break failover", None, False))
            f = replace(f, actions=tuple(actions), evidence={**f.evidence, "internal_hosts_spared": dict(
                (h.strip("[]"), internal[h.strip("[]")]) for h in spared)})
        out.append(f)
    return out
