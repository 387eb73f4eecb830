"""Pure: one target's latest observation (and verdict) in, Prometheus metric families out.

The names and labels here are a contract (docs/exporter.md): add, never rename. No I/O, no clock:
the registry hands in what it saw and when.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from connguard.analysis.capacity import RESERVED_FDS, capacity
from connguard.analysis.classify import PUBSUB, client_records, kind_of
from connguard.analysis.diagnosis import Diagnosis
from connguard.analysis.findings import CAUSES, SEVERITIES
from connguard.analysis.rules.fd_limit import SIGNATURES
from connguard.analysis.sources import host_key
from connguard.analysis.window import group_by_host
from connguard.monitor.watch_budget import client_list_stat
from connguard.probe.model import Snapshot
from connguard.settings import IDLE_THRESHOLD_S

PREFIX = "connguard"
KINDS = ("clients", "replicas", "cluster_bus", "pubsub", "blocked", "observer")
# Probe-error reasons (docs/exporter.md). The first five are the issue's; the others name what they say.
# Seconds: a request (<1 s), a pool's keep-alive (minutes), the runbook's 5 min idle line, hours, a day.
DURATION_BUCKETS = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
OTHER = "other"


@dataclass(frozen=True)
class ProbeView:
    """What one scrape of one target knows. `snapshot` is this scrape's (INFO at least); `listed` the latest
    Snapshot that carried a CLIENT LIST (maybe an earlier scrape's: CLIENT LIST is budgeted)."""

    snapshot: Snapshot | None
    listed: Snapshot | None = None
    client_list_age_s: float | None = None
    refused: bool = False
    error_reason: str | None = None
    observer_connects: int = 0
    observer_refusals: int = 0
    diagnosis: Diagnosis | None = None
    seconds_to_exhaustion: float | None = None
    top_sources: int = 10
    idle_threshold_s: float = IDLE_THRESHOLD_S
    scrape_s: float | None = None
    # client_families(listed, ...) computed once per CLIENT LIST by the caller (INFO-only scrapes reuse it).
    client_metrics: tuple[Metric, ...] | None = None
    listed_pubsub: int | None = None  # pub/sub clients in `listed`, computed with client_metrics
    # No Snapshot (refused at maxclients) but the server is local: slots held, from the socket census, against
    # the last maxclients seen (watch does the same), so a full server is not a blind spot.
    census_used: int | None = None
    known_maxclients: int | None = None


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily | None:
    if value is None:
        return None
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=float(value))


def _labelled(name: str, doc: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))
    for values, value in rows:
        family.add_metric(list(values), float(value))
    return family


def is_refusing(snapshot: Snapshot) -> bool:
    """The server would refuse the next connection: its own count (ours included) is at maxclients.
    Admission compares clients + replicas + cluster slots with maxclients (docs/redis-facts.md)."""
    return snapshot.maxclients is not None and snapshot.info.used >= snapshot.maxclients


def maxclients_lowered(maxclients: int | None, fd_limit: int | None) -> int | None:
    """1 when the fd limit caps maxclients (limit <= maxclients + 32, or, remotely, the limit - 32 signature)."""
    if maxclients is None:
        return None
    if fd_limit is not None:
        return int(fd_limit - (maxclients + RESERVED_FDS) <= 0)
    return int(maxclients in SIGNATURES)


def _histogram(name: str, doc: str, values: Sequence[int]) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    ordered = sorted(values)
    i = 0
    for le in DURATION_BUCKETS:
        while i < len(ordered) and ordered[i] <= le:
            i += 1
        buckets.append((repr(le), float(i)))
    buckets.append(("+Inf", float(len(ordered))))
    return HistogramMetricFamily(f"{PREFIX}_{name}", doc, buckets=buckets, sum_value=float(sum(ordered)))


def status_families(up: bool, refusing: bool, reason: str | None) -> list[Metric]:
    """Emitted on every scrape, whatever happened."""
    out: list[Metric] = [
        GaugeMetricFamily(f"{PREFIX}_up", "1 when the exporter observes the target (INFO over its held connection) "
                          "this scrape, else 0.", value=float(up)),
        GaugeMetricFamily(f"{PREFIX}_server_refusing", "1 while the server is at maxclients and refuses new "
                          "connections (seen from its own counts over the held connection, or from being refused).",
                          value=float(refusing)),
    ]
    if reason is not None:
        out.append(_labelled("probe_error", "1 with the reason the target could not be observed this scrape "
                             "(auth, refused, not_redis, tls, bad_target, unreachable, max_targets, internal).",
                             ["reason"], [((reason,), 1.0)]))
    return out


def families(view: ProbeView) -> list[Metric]:
    """Every metric of one target's scrape, in a stable order. Series count is bounded by `top_sources`."""
    snap = view.snapshot
    refusing = view.refused or (snap is not None and is_refusing(snap))
    out = status_families(snap is not None, refusing, view.error_reason)
    out.append(CounterMetricFamily(f"{PREFIX}_observer_connects", "Connections the exporter itself opened to "
                                   "this target (subtract from connections_received when judging churn).",
                                   value=float(view.observer_connects)))
    out.append(CounterMetricFamily(f"{PREFIX}_observer_refusals", "Connection attempts of the exporter itself that "
                                   "the server refused at maxclients (subtract from rejected_connections).",
                                   value=float(view.observer_refusals)))
    if view.scrape_s is not None:
        out.append(GaugeMetricFamily(f"{PREFIX}_scrape_duration_seconds", "Wall time of this target's observation.",
                                     value=view.scrape_s))
    out.append(_gauge("seconds_to_exhaustion", "Seconds until used reaches maxclients at the current trend "
                      "(watch's forecast); +Inf when not growing, NaN when unknown.",
                      math.nan if view.seconds_to_exhaustion is None else view.seconds_to_exhaustion))
    if snap is None and view.census_used is not None:
        out += _census_families(view.census_used, view.known_maxclients)
    if snap is not None:
        listed_pubsub = view.listed_pubsub
        if listed_pubsub is None and view.listed is not None and view.listed.clients is not None:
            listed_pubsub = host_rows(view.listed, view.idle_threshold_s)[1]
        out += _server_families(snap, listed_pubsub)
    listed = view.listed
    if view.client_metrics is not None:
        out += view.client_metrics
    elif listed is not None and listed.clients is not None:
        out += client_families(listed, view.top_sources, view.idle_threshold_s)
    if view.client_list_age_s is not None:
        out.append(_gauge("client_list_age_seconds", "Seconds since the CLIENT LIST behind the per-source and "
                          "per-client metrics was taken (it is budgeted, INFO is not).", view.client_list_age_s))
    if view.diagnosis is not None:
        out.append(_cause_family(view.diagnosis))
    return [m for m in out if m is not None]


USED_DOC = ("Slots in use against maxclients: connected_clients + connected_slaves + cluster_connections, without "
            "the exporter's own connection.")
MAXCLIENTS_DOC = "The server's effective maxclients (CONFIG GET, else INFO)."
RATIO_DOC = "connections_used / maxclients (the runbook's 0.8 / 0.9 lines)."
HEADROOM_DOC = "maxclients - connections_used: connections that can still be admitted."
FROM_CENSUS_DOC = ("1 when connections_used (and capacity_ratio, headroom) come from the socket census of a local "
                   "server that refuses the exporter at maxclients, 0 when from INFO over the held connection.")


def _census_families(used: int, maxclients: int | None) -> list[Metric | None]:
    """Usage of a full local server that refused us, from /proc: established connections it accepted."""
    return [
        _gauge("connections_used", USED_DOC, used),
        _gauge("connections_used_from_census", FROM_CENSUS_DOC, 1),
        _gauge("maxclients", MAXCLIENTS_DOC, maxclients),
        _gauge("capacity_ratio", RATIO_DOC,
               used / maxclients if maxclients else None),
        _gauge("headroom", HEADROOM_DOC,
               max(0, maxclients - used) if maxclients else None),
    ]


def _server_families(snap: Snapshot, listed_pubsub: int | None) -> list[Metric | None]:
    info = snap.info
    cap = capacity(snap)
    # INFO has pubsub_clients from 7.4 / Valkey 8; before that, the latest CLIENT LIST's count.
    pubsub = info.pubsub_clients if info.pubsub_clients is not None else listed_pubsub
    kinds: list[tuple[tuple[str], float]] = [
        (("clients",), cap.connected_clients), (("replicas",), cap.connected_slaves),
        (("cluster_bus",), cap.cluster_connections), (("blocked",), info.blocked_clients),
        (("observer",), cap.observer_connections),
    ]
    if pubsub is not None:
        kinds.insert(3, (("pubsub",), pubsub))
    stat = client_list_stat(info.sections)  # (calls, usec, usec_per_call) of CLIENT LIST, lifetime
    out: list[Metric | None] = [
        _labelled("info", "1, labelled with the server's flavor, version and role.", ["flavor", "version", "role"],
                  [((info.flavor, info.version, info.role), 1.0)]),
        _gauge("connections_used", USED_DOC, cap.used),
        _gauge("connections_used_from_census", FROM_CENSUS_DOC, 0),
        _labelled("connections", "Slots by kind. clients, replicas, cluster_bus and observer add up to the "
                  "server's count; pubsub and blocked are part of clients.", ["kind"], kinds),
        _gauge("maxclients", MAXCLIENTS_DOC, cap.maxclients),
        _gauge("capacity_ratio", RATIO_DOC, cap.ratio),
        _gauge("headroom", HEADROOM_DOC, cap.headroom),
        CounterMetricFamily(f"{PREFIX}_rejected_connections", "Connections the server refused at maxclients "
                            "(INFO rejected_connections).", value=float(info.rejected_connections)),
        CounterMetricFamily(f"{PREFIX}_connections_received", "Connections the server accepted "
                            "(INFO total_connections_received).", value=float(info.total_connections_received)),
        _gauge("fd_limit", "The server process's open-files soft limit (only when it runs on the exporter's host).",
               cap.fd_limit),
        _gauge("maxclients_lowered_by_fd_limit", "1 when the open-files limit caps maxclients (limit <= "
               "maxclients + 32; remotely, maxclients equals a common limit - 32).",
               maxclients_lowered(cap.maxclients, cap.fd_limit)),
    ]
    if stat is not None and stat[0]:
        out.append(_gauge("client_list_seconds", "Server time per CLIENT LIST call, from INFO commandstats "
                          "(usec / calls): what the per-source metrics cost the server.", stat[1] / stat[0] / 1e6))
    return out


@dataclass(frozen=True)
class HostRow:
    """One client host as the exporter exports it: a lean cut of analysis.sources.Source."""

    host: str
    connections: int
    idle_over_threshold: int  # plain connections only: blocked, pub/sub and internal links are idle by nature
    name: str
    lib: str


def host_rows(snap: Snapshot, idle_threshold_s: float) -> tuple[tuple[HostRow, ...], int]:
    """(hosts busiest first, pub/sub clients) from one CLIENT LIST. The per-host counts are the window's
    (`analysis.window.group_by_host`, as watch shows them), equal to `source_table`'s counts, order and first
    name/lib; it classifies only the connections whose kind matters, so it stays cheap at 10k clients."""
    records = tuple(client_records(snap))
    groups = group_by_host(records, idle_threshold_s)
    pubsub = sum(1 for rec in records if rec.is_pubsub and kind_of(rec) == PUBSUB)
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1].connections, -kv[1].idle, host_key(kv[0])))
    return tuple(HostRow(h, g.connections, g.idle, g.names[0] if g.names else "", g.libs[0] if g.libs else "")
                 for h, g in ordered), pubsub


def client_families(snap: Snapshot, top: int, idle_threshold_s: float,
                    rows: tuple[HostRow, ...] | None = None, chosen: Sequence[HostRow] | None = None) -> list[Metric]:
    """Per-source gauges and the idle/age histograms from one CLIENT LIST: bounded by `top` + 1 sources.
    `rows`: host_rows(snap, idle_threshold_s)[0] when the caller has it already. `chosen`: the hosts that get
    their own label (the exporter's sticky top K, exporter_topk), default the `top` busiest now."""
    if rows is None:
        rows = host_rows(snap, idle_threshold_s)[0]
    if chosen is None:
        shown, rest = rows[:top], rows[top:]
    else:
        labelled = {r.host for r in chosen}
        shown, rest = tuple(chosen), tuple(r for r in rows if r.host not in labelled)
    labels = ["source", "name", "lib"]
    other = (OTHER, "", "")
    records = list(client_records(snap))
    return [
        _labelled("source_connections", f"Connections per client host, the top {top} by count, the rest folded "
                  "into source=\"other\" (name and lib: the host's first client name and library).", labels,
                  [((r.host, r.name, r.lib), r.connections) for r in shown]
                  + [(other, sum(r.connections for r in rest))]),
        _labelled("source_idle_connections", "Plain connections per client host idle over the idle threshold "
                  "(leak candidates), same sources as source_connections.", labels,
                  [((r.host, r.name, r.lib), r.idle_over_threshold) for r in shown]
                  + [(other, sum(r.idle_over_threshold for r in rest))]),
        _gauge("sources", "Distinct client hosts in the latest CLIENT LIST.", len(rows)),
        _histogram("client_idle_seconds", "Seconds since each client's last command, over all clients in the "
                   "latest CLIENT LIST.", [r.idle_s for r in records]),
        _histogram("client_age_seconds", "Seconds since each client connected, over all clients in the latest "
                   "CLIENT LIST.", [r.age_s for r in records]),
    ]


def _cause_family(diag: Diagnosis) -> GaugeMetricFamily:
    """Every cause x severity, 1 on the doctor's current verdict: a fixed set of series that alerts can match."""
    found = {f.cause: f.severity for f in diag.findings}
    return _labelled(
        "cause", "The doctor's verdict: 1 when the cause is found at that severity, else 0 (every cause and "
        "severity is always present).", ["cause", "severity"],
        [((cause, sev), float(found.get(cause) == sev)) for cause in CAUSES for sev in SEVERITIES],
    )
