"""The exporter's targets: one Sampler (one held connection) per target, shared observations, budgets, eviction.

Each scrape of a target goes through `TargetRegistry.scrape`, which returns a ProbeView for the metric
mapping. Concurrent scrapes of one target wait for the observation in flight and share it; CLIENT LIST runs
only when its budget allows (INFO runs every time); the doctor's rules run at most every `diagnose_every_s`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Protocol

from connguard.analysis.diagnosis import Diagnosis, DoctorSettings, diagnose, diagnose_unreachable
from connguard.analysis.forecast import Forecast
from connguard.analysis.window import LiveWindow
from connguard.errors import AuthFailed, BadArguments, BadTarget, ConnguardError, NotRedis, ServerFull
from connguard.monitor.exporter_faults import BACKOFF_BASE_S, BACKOFF_CAP_S, ReconnectBackoff, StateLog
from connguard.monitor.exporter_metrics import ProbeView, client_families, host_rows
from connguard.monitor.exporter_topk import StickyTopK
from connguard.monitor.watch_budget import ClientListBudget
from connguard.probe.model import Snapshot
from connguard.settings import DIAGNOSE_EVERY_S, EXPORTER_CONNECT_TIMEOUT_S, FORECAST_WINDOW_S, TOP_SOURCES
from connguard.target import Target

log = logging.getLogger("connguard.exporter")

WINDOW_SNAPSHOTS = 5  # listed Snapshots kept for the rules: a few anchors over window_s (10k clients is megabytes)


class SamplerLike(Protocol):
    connects: int
    connected: bool

    def sample(self, *, client_list: bool = True, connect: bool = True) -> object: ...

    def close(self) -> None: ...


def probe_reason(err: ConnguardError | None) -> str | None:
    """The `reason` label of connguard_probe_error for an error (docs/exporter.md)."""
    if err is None:
        return None
    if isinstance(err, (BadTarget, BadArguments)):
        return "bad_target"
    if isinstance(err, AuthFailed):
        return "auth"
    if isinstance(err, NotRedis):
        return "not_redis"
    if isinstance(err, ServerFull):
        return "refused"
    text = err.message.lower()
    if "tls" in text or "certificate" in text:
        return "tls"
    if "refused the connection" in text or "no such unix socket" in text:
        return "refused"
    return "unreachable"


def exhaustion_seconds(fc: Forecast) -> float | None:
    """The forecast as `connguard_seconds_to_exhaustion`: seconds to full; +Inf when observed and not heading
    there (no trend, growth stopped, released); None (no value, never 0) when not observed or too little data."""
    if fc.seconds_to_full is not None:
        return float(fc.seconds_to_full)
    return None if fc.confidence == "none" else math.inf


@dataclass
class Entry:
    """One target's state between scrapes. `lock` serialises observations; a scrape that arrives while one
    is in flight waits for it and shares its result."""

    target: Target
    sampler: SamplerLike
    budget: ClientListBudget  # CLIENT LIST within 1% of the server's time (watch's budget, one home)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_scrape: float = 0.0
    done_at: float = -math.inf
    view: ProbeView | None = None
    window: LiveWindow = field(default_factory=LiveWindow)  # restarts, the forecast, the rules' Snapshots
    listed: Snapshot | None = None  # the latest Snapshot with a CLIENT LIST
    listed_at: float | None = None
    client_metrics: tuple = ()  # client_families(listed): computed once per CLIENT LIST
    listed_pubsub: int | None = None
    refusals_at: dict = field(default_factory=dict)  # the Sampler's refusal count at each listed Snapshot's clock
    diagnosis: Diagnosis | None = None
    diagnosed_at: float = -math.inf
    diagnosing: bool = False  # a verdict is being computed on the diagnosis thread
    state: str | None = None  # "up" or the probe error's reason: logged once per change, not per scrape
    backoff: ReconnectBackoff = field(default_factory=ReconnectBackoff)  # when the next (re)connect may be tried
    topk: StickyTopK = field(default_factory=lambda: StickyTopK(10))  # which hosts get a `source` label
    maxclients: int | None = None  # the last maxclients seen: what census usage is measured against
    generation: int = 0  # bumped when a newer verdict is set here: a verdict computed from before is dropped


@dataclass(frozen=True)
class ExporterSettings:
    top_sources: int = TOP_SOURCES
    diagnose_every_s: float = DIAGNOSE_EVERY_S
    clients_every_s: float = 0.0  # the floor between CLIENT LISTs; the 1% budget may stretch it
    target_idle_s: float = 600.0
    max_targets: int = 100
    window_s: float = 60.0
    connect_timeout_s: float = EXPORTER_CONNECT_TIMEOUT_S
    forecast_window_s: float = FORECAST_WINDOW_S
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_cap_s: float = BACKOFF_CAP_S
    doctor: DoctorSettings = DoctorSettings()


class TargetRegistry:
    """All targets this exporter holds connections to, keyed by endpoint; thread safe."""

    def __init__(self, settings: ExporterSettings, sampler_factory: Callable[[Target], SamplerLike],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._factory = sampler_factory
        self._clock = clock
        self._entries: dict[tuple[object, ...], Entry] = {}
        self._lock = threading.Lock()
        self._over_limit = StateLog(log)  # targets turned away by --max-targets, logged once each
        self._diagnoser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="connguard-diagnose")

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def targets(self) -> list[str]:
        """The redacted URLs of every target this exporter has been asked for and still keeps."""
        with self._lock:
            return sorted(e.target.redacted for e in self._entries.values())

    def held(self) -> int:
        """Targets this exporter holds a connection to (a target never reached holds nothing)."""
        with self._lock:
            return sum(1 for e in self._entries.values() if e.sampler.connected)

    @staticmethod
    def key(target: Target) -> tuple[object, ...]:
        return (target.scheme, *target.endpoint_key)

    def _entry(self, target: Target, now: float) -> Entry | None:
        key = self.key(target)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                # Targets never reached hold no connection and count only against a looser bound (they keep
                # their backoff and log state, so a bad target is retried and logged per step, not per scrape).
                reached = sum(1 for e in self._entries.values() if e.sampler.connects)
                if reached >= self.settings.max_targets or len(self._entries) >= 10 * self.settings.max_targets:
                    return None
                s = self.settings
                window = LiveWindow(span_s=s.window_s, max_snapshots=WINDOW_SNAPSHOTS,
                                    forecast_window_s=s.forecast_window_s)
                entry = Entry(target, self._factory(target), ClientListBudget(s.clients_every_s), window=window,
                              backoff=ReconnectBackoff(s.backoff_base_s, s.backoff_cap_s),
                              topk=StickyTopK(s.top_sources))
                self._entries[key] = entry
                self._over_limit.forget(key)
                log.info("target %s: added (%d targets)", target.redacted, len(self._entries))
            entry.last_scrape = now
            return entry

    def scrape(self, target: Target) -> ProbeView:
        """Observe `target` (or share an observation in flight) and return what the metrics need."""
        arrived = self._clock()
        entry = self._entry(target, arrived)
        if entry is None:
            self._over_limit.note(self.key(target), "max_targets", logging.WARNING,
                                  "target %s: refused, --max-targets %d targets already held", target.redacted,
                                  self.settings.max_targets)
            return ProbeView(snapshot=None, error_reason="max_targets")
        with entry.lock:
            if entry.view is not None and entry.done_at >= arrived:
                return entry.view  # an observation finished after we arrived: share it
            # Without a held connection, one (re)connect attempt per backoff step; between steps the scrape
            # answers from cached state (and the census of a local full server) without touching the network.
            connect = entry.sampler.connected or entry.backoff.due(arrived)
            view = self._observe(entry, connect)
            entry.view, entry.done_at = view, self._clock()
            if view.snapshot is not None:
                entry.backoff.succeeded()
            elif connect and not entry.sampler.connected:
                entry.backoff.failed(entry.done_at)
        return view

    def _observe(self, entry: Entry, connect: bool = True) -> ProbeView:
        s = self.settings
        started = self._clock()
        obs = entry.sampler.sample(client_list=connect and entry.budget.due(started), connect=connect)
        snap: Snapshot | None = obs.snapshot  # type: ignore[attr-defined]
        now = obs.monotonic  # type: ignore[attr-defined]
        target = entry.target.redacted
        census_used = None
        if snap is not None:
            if entry.state not in (None, "up"):
                log.info("target %s: observed again", target)
            entry.state = "up"
            entry.maxclients = snap.maxclients
            listed = bool(obs.client_list_included) and snap.clients is not None  # type: ignore[attr-defined]
            entry.budget.note(now, snap.info.sections, listed)
            entry.window.push(snap)  # restarts and the forecast's lifecycle: the window's, as in watch
            rules_window = entry.window.window(listed_only=True)  # the rules read CLIENT LIST Snapshots
            if listed:
                entry.listed, entry.listed_at = snap, now
                rows, entry.listed_pubsub = host_rows(snap, s.doctor.idle_threshold_s)
                chosen = entry.topk.choose(rows, now)
                entry.client_metrics = tuple(client_families(snap, s.top_sources, s.doctor.idle_threshold_s, rows,
                                                             chosen))
                refusals = getattr(obs, "refusals", 0)
                entry.refusals_at = {w.clock: entry.refusals_at.get(w.clock, refusals)
                                     for w in (rules_window.snapshots if rules_window else ())}
            if rules_window is not None and now - entry.diagnosed_at >= s.diagnose_every_s and not entry.diagnosing:
                # Refusals of our own (re)connects within the window: first-hand evidence the server refuses.
                refused_us = getattr(obs, "refusals", 0) - entry.refusals_at.get(rules_window.first.clock, 0)
                entry.diagnosed_at = now
                if entry.diagnosis is None:  # the first verdict comes with the first scrape
                    entry.diagnosis = diagnose(rules_window.snapshots, s.doctor, entry.target, refused_us=refused_us)
                else:  # later ones off the scrape's path: at 10k clients the rules take ~0.5 s
                    self._diagnose_later(entry, rules_window.snapshots, refused_us)
        else:
            failure = obs.failure  # type: ignore[attr-defined]
            state = probe_reason(failure) or "unobserved"
            # One line per change, not per scrape: a server down for an hour is one warning, not 240.
            if state != entry.state:
                log.warning("target %s: %s", target, failure.line() if failure else "not observed")
            entry.state = state
            if obs.refused and obs.census is not None:  # type: ignore[attr-defined]
                census_used = obs.census.accepted  # type: ignore[attr-defined]
            if obs.refused:  # type: ignore[attr-defined]
                # A full server seen from outside: the exhausted verdict (with the census when local).
                entry.diagnosis = diagnose_unreachable(
                    target, s.doctor, failure.message if failure else "refused", full=True,
                    census=obs.census, host=obs.host)  # type: ignore[attr-defined]
                entry.diagnosed_at = now
            else:
                entry.diagnosis = None  # no verdict about a server we cannot see
            entry.generation += 1  # a verdict still being computed from before is stale now
            entry.window.unobserved()  # no forecast while the server cannot be seen (never a stale one, never 0)
        # Refused at maxclients is the server saying it is full: 0, an observation. Otherwise the window's.
        refused = snap is None and bool(obs.refused)  # type: ignore[attr-defined]
        forecast_s = 0.0 if refused else exhaustion_seconds(entry.window.forecast)
        maxclients = entry.maxclients
        return ProbeView(
            snapshot=snap,
            listed=entry.listed if snap is not None else None,
            client_list_age_s=(now - entry.listed_at) if entry.listed_at is not None and snap is not None else None,
            refused=bool(obs.refused),  # type: ignore[attr-defined]
            error_reason=probe_reason(obs.failure),  # type: ignore[attr-defined]
            observer_connects=obs.observer_connects,  # type: ignore[attr-defined]
            observer_refusals=getattr(obs, "refusals", 0),
            diagnosis=entry.diagnosis,
            seconds_to_exhaustion=forecast_s,
            top_sources=s.top_sources,
            idle_threshold_s=s.doctor.idle_threshold_s,
            scrape_s=self._clock() - started,
            client_metrics=entry.client_metrics if snap is not None and entry.listed is not None else None,
            listed_pubsub=entry.listed_pubsub,
            census_used=census_used,
            known_maxclients=maxclients if census_used is not None else None,
        )

    def _diagnose_later(self, entry: Entry, window: tuple[Snapshot, ...], refused_us: int) -> None:
        entry.diagnosing = True
        generation = entry.generation

        def job() -> None:
            try:
                verdict = diagnose(window, self.settings.doctor, entry.target, refused_us=refused_us)
                if entry.generation == generation:
                    entry.diagnosis = verdict
            except Exception as exc:  # a rule's bug costs one refresh, not the exporter
                log.error("target %s: diagnosis failed: %s: %s", entry.target.redacted, type(exc).__name__, exc)
            finally:
                entry.diagnosing = False

        try:
            self._diagnoser.submit(job)
        except RuntimeError:  # shut down: the exporter is stopping
            entry.diagnosing = False

    def reap(self) -> int:
        """Close targets not scraped for `target_idle_s`; returns how many were closed."""
        now = self._clock()
        with self._lock:
            stale = [k for k, e in self._entries.items() if now - e.last_scrape >= self.settings.target_idle_s]
            gone = [self._entries.pop(k) for k in stale]
        for entry in gone:
            with entry.lock:  # never close under a scrape in flight
                entry.sampler.close()
            log.info("target %s: closed after %.0f s without a scrape", entry.target.redacted,
                     self.settings.target_idle_s)
        return len(gone)

    def close(self) -> None:
        self._diagnoser.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            entry.sampler.close()
