"""The watch loop: sample on a schedule over the Sampler's held connection, fold into frames, show or print
them, fire the alert hook, record, and (interactively) kill from the held slot on confirmation."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, TextIO

import redis
from rich.console import Console
from rich.live import Live

from connguard.analysis.diagnosis import DoctorSettings, diagnose, diagnose_unreachable
from connguard.errors import ConnguardError, ServerFull, Unreachable
from connguard.monitor.watch_kill import KillPreview, kill_log_line, plan_for_source, preview_renderable
from connguard.monitor.watch_model import WatchFrame, WatchModel, WatchSettings
from connguard.monitor.watch_notify import AlertHook
from connguard.monitor.watch_view import WAIT_CAP_S, ViewState, clock, render
from connguard.probe.census import compare_censuses
from connguard.probe.model import Snapshot, SocketCensus
from connguard.probe.recording import Recorder
from connguard.probe.sampler import Sampler
from connguard.remedy.kill import execute_kills
from connguard.target import Target

if TYPE_CHECKING:
    from connguard.discovery.sentinel_url import SentinelSpec

WAIT_BASE_S = 0.25  # the first backoff step at a full server; doubling to WAIT_CAP_S
# The kill preview's idle thresholds, stepped with [ and ]: from "idle a few seconds" to "idle an hour".
KILL_IDLE_STEPS_S = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
SENTINEL_RECHECK_S = 1.0  # how often, at most, watch asks the Sentinels whether the primary moved


@dataclass(frozen=True)
class WatchOptions:
    settings: WatchSettings = WatchSettings()
    as_json: bool = False
    count: int | None = None  # stop after this many ticks (None: until Ctrl-C / q)
    alert_cmd: str | None = None
    alert_timeout_s: float = 10.0
    record: str | None = None
    connect_timeout_s: float = 10.0


def _doctor_settings(settings: WatchSettings) -> DoctorSettings:
    return DoctorSettings(interval_s=settings.diagnose_every_s, idle_threshold_s=settings.idle_threshold_s,
                          top=settings.top)


def snapshot_causes(target: Target, settings: WatchSettings) -> Callable[[Snapshot | None, Snapshot, float], tuple[str, ...]]:
    """The doctor over watch's window: the snapshot of the previous verdict and now."""
    ds = _doctor_settings(settings)

    def run(base: Snapshot | None, now: Snapshot, wall: float) -> tuple[str, ...]:
        window = (base, now) if base is not None else (now,)
        return tuple(f.cause for f in diagnose(window, ds, target).findings)

    return run


def census_causes(target: Target, settings: WatchSettings) -> Callable[[SocketCensus | None, SocketCensus, str, Any], tuple[str, ...]]:
    """The doctor when the server refuses us: from two socket censuses (turnover tells a storm)."""
    ds = _doctor_settings(settings)

    def run(before: SocketCensus | None, now: SocketCensus, error: str, host: Any) -> tuple[str, ...]:
        turnover = compare_censuses(before, now) if before is not None else None
        diag = diagnose_unreachable(target, ds, error, full=True, census=now, host=host, turnover=turnover)
        return tuple(f.cause for f in diag.findings)

    return run


def _open_recorder(path: str | None, target: Target, settings: WatchSettings) -> Recorder | None:
    """The probe's recorder: raw observations that `doctor --replay` reads, and watch's kills beside them."""
    if path is None:
        return None
    return Recorder(path, target=target, tool="watch", settings=asdict(settings))


class WatchRunner:
    """Owns the Sampler, the model, the hook and the recorder for one `connguard watch`."""

    def __init__(self, target: Target, options: WatchOptions, *, sampler: Sampler | None = None,
                 out: TextIO | None = None, sentinel: "SentinelSpec | None" = None) -> None:
        self.target, self.options = target, options
        self.settings = options.settings
        self.sentinel = sentinel  # set: follow the primary the Sentinels name, across failovers
        self.sampler = sampler or self._sampler_for(target)
        self.model = WatchModel(sentinel.redacted if sentinel else target.redacted, self.settings,
                                snapshot_causes(target, self.settings), census_causes(target, self.settings))
        self.out = out or sys.stdout
        self.hook = AlertHook(options.alert_cmd, target.redacted, timeout_s=options.alert_timeout_s) \
            if options.alert_cmd else None
        self.recorder = None
        self.ticks = 0
        self.observed = 0  # ticks with a snapshot
        self.last_failure: ConnguardError | None = None
        self.frame: WatchFrame | None = None
        self.view = ViewState()
        self.pending: KillPreview | None = None
        self.kill_idle_s = self.settings.idle_threshold_s  # the kill preview's, changed with [ and ]
        self.waiting = False  # the server refused the first connect: wait for a slot instead of exiting
        self.wait_step = 0
        self.next_attempt = 0.0
        self.attempts = 0  # connection attempts made while waiting (each one a rejected_connections if refused)
        self.switches: list[tuple[float, str]] = []  # (wall, "host:port") of each primary followed to
        self._sentinel_asked = 0.0
        self._first: Any = None  # open()'s observation, the first tick's

    def _sampler_for(self, target: Target) -> Sampler:
        # One connection attempt per call: watch paces its own attempts at a full server (see _attempt_due),
        # instead of open_connection's tight retry loop that ended the run after 20-25 refusals.
        return Sampler(target, connect_timeout_s=0.0, reconnect_timeout_s=0.0)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Fail fast: a bad URL, a wrong password or nothing listening is one line and an exit code, as in status."""
        self.recorder = _open_recorder(self.options.record, self.target, self.settings)
        now = time.monotonic()
        obs = self.sampler.sample(client_list=False)  # one attempt; never raises
        if obs.snapshot is not None or obs.refused:
            self._first = obs
            if obs.refused:  # exactly when an SRE opens watch: show what can be seen and wait for a slot
                self._refused(now)
            return
        if self.recorder is not None:
            self.recorder.close()
        raise obs.failure or Unreachable(f"{self.target.redacted} could not be observed")

    def close(self) -> None:
        if self.hook is not None:
            self.hook.close()
        if self.recorder is not None:
            self.recorder.close()
        self.sampler.close()

    def _refused(self, now: float) -> None:
        """One more refused attempt: the next waits one backoff step longer, at most WAIT_CAP_S."""
        self.waiting = True
        self.attempts += 1
        self.next_attempt = now + min(WAIT_CAP_S, WAIT_BASE_S * 2 ** self.wait_step)
        self.wait_step += 1

    def _attempt_due(self, now: float) -> bool:
        return self.sampler.connected or not self.waiting or now >= self.next_attempt

    def gave_up(self) -> bool:
        """Never observed, and not because the server is full (a full server is waited out)."""
        failure = self.never_observed()
        return failure is not None and not isinstance(failure, ServerFull)

    def never_observed(self) -> ConnguardError | None:
        """Why a run that ticked but never saw the server observed nothing (its exit code: 2 when refused at
        maxclients, 3 otherwise), else None. The run loops stop at a first tick that observed nothing (like a
        failed open(), before any output); a run that observed once stays up through faults and exits 0."""
        return self.last_failure if self.ticks and not self.observed else None

    def done(self) -> bool:
        return self.options.count is not None and self.ticks >= self.options.count

    # -- one tick ---------------------------------------------------------------------------------------------
    def tick(self) -> WatchFrame:
        now = time.monotonic()
        knock = self._attempt_due(now)
        was_connected = self.sampler.connected
        if self._first is not None:
            obs, self._first, knock = self._first, None, False
        else:
            obs = self.sampler.sample(client_list=self.model.wants_client_list(now), connect=knock)
        if obs.snapshot is not None:
            self.waiting, self.wait_step = False, 0
        elif knock and not was_connected and obs.refused:
            self._refused(now)
        if self.sentinel is not None:
            obs = self._follow_primary(obs, now)
        frame = self.model.update(obs)
        self.ticks += 1
        if obs.snapshot is not None:
            self.observed += 1
        elif obs.refused and not isinstance(obs.failure, ServerFull):
            self.last_failure = ServerFull(f"{self.target.redacted} is at maxclients and refused watch's connection")
        else:
            self.last_failure = obs.failure or Unreachable(f"{self.target.redacted} could not be observed")
        if self.recorder is not None:
            self.recorder.write(obs)
        if self.hook is not None:
            for event in frame.events:
                self.hook.submit(event)
        self.frame = frame
        return frame

    def run_json(self) -> int:
        next_at = time.monotonic()
        while not self.done():
            frame = self.tick()
            if self.gave_up():  # fail fast, as open() does: the caller prints why
                return 3
            try:
                self.out.write(json.dumps(self._json(frame)) + "\n")
                self.out.flush()
            except BrokenPipeError:  # `connguard watch | head`: the reader left, so do we
                return 0
            if self.done():
                break
            next_at = _sleep_until(next_at + self.settings.interval_s)
        return 0

    def run_live(self, console: Console, keys: Any) -> int:
        self.view = ViewState(interactive=keys is not None, kill_idle_s=self.kill_idle_s)
        first = self.tick()
        if self.gave_up():  # fail fast, as open() does: the caller prints why
            return 3
        with Live(render(first, self.view), console=console, screen=True, auto_refresh=False,
                  redirect_stdout=False, redirect_stderr=False) as live:
            next_at = time.monotonic() + self.settings.interval_s
            while not self.done():
                while True:  # keys until the next tick is due
                    wait = next_at - time.monotonic()
                    if wait <= 0:
                        break
                    key = keys.get(wait) if keys is not None else _nap(wait)
                    if key is None:
                        continue
                    if self.on_key(key) == "quit":
                        return 0
                    live.update(render(self.frame, self._view()), refresh=True)  # type: ignore[arg-type]
                self.tick()
                live.update(render(self.frame, self._view()), refresh=True)  # type: ignore[arg-type]
                next_at = max(next_at + self.settings.interval_s, time.monotonic())
        return 0

    def _view(self) -> ViewState:
        problem = self.hook.last_problem() if self.hook else None
        msg = self.view.message
        if problem:
            msg = f"{msg}\n{problem}" if msg else problem
        n = len(self.frame.sources) if self.frame else 0
        selected = min(self.view.selected, max(0, n - 1))
        return replace(self.view, selected=selected, message=msg, kill_idle_s=self.kill_idle_s,
                       switch=self._switch_line())

    # -- keys: select, preview, confirm ---------------------------------------------------------------------------
    def on_key(self, key: str) -> str | None:
        """Act on a key, or say at once why it cannot act yet: a key that does nothing for 40 s looks broken."""
        frame = self.frame
        if key in ("q", "Q"):
            return "quit"
        if key in ("[", "]", "-", "+"):
            self.step_kill_idle(1 if key in ("]", "+") else -1)
        elif key in ("up", "k", "down", "j") and self.pending is not None:
            self._say("a kill preview is open: y to confirm, n or Esc to cancel")
        elif key in ("up", "k"):
            self.view = replace(self.view, selected=max(0, self.view.selected - 1))
        elif key in ("down", "j"):
            n = len(frame.sources) if frame else 0
            self.view = replace(self.view, selected=min(max(0, n - 1), self.view.selected + 1))
        elif key in ("x", "X"):
            why = self._cannot_kill_yet()
            if why:
                self._say(f"x: cannot preview a kill yet: {why}")
            else:
                self.preview(frame.sources[min(self.view.selected, len(frame.sources) - 1)].host)  # type: ignore[union-attr]
        elif key in ("y", "Y"):
            if self.pending is None:
                self._say("y: nothing to confirm: x previews a kill first")
            else:
                self.confirm()
        elif key in ("n", "N", "esc"):
            if self.pending is not None:
                self.pending = None
                self.view = replace(self.view, preview=None, message="kill cancelled: nothing was touched")
        else:
            self._say(f"key {key!r} does nothing: ↑/↓ j/k select · x preview a kill · [ ] idle threshold · q quit")
        return None

    def _say(self, message: str) -> None:
        self.view = replace(self.view, message=message)

    def _cannot_kill_yet(self) -> str | None:
        if not self.sampler.connected:
            if self.waiting:
                return ("the server is full and refused watch (waiting for a slot); a kill needs watch's own "
                        "connection: use `connguard kill` from a shell that has one")
            return "watch holds no connection right now (reconnecting)"
        if self.frame is None or not self.frame.sources:
            return "no sources listed yet (CLIENT LIST has not run)"
        return None

    def step_kill_idle(self, direction: int) -> None:
        """[ / ]: the kill preview's idle threshold one step down / up; an open preview is made again with it."""
        steps = KILL_IDLE_STEPS_S
        now = self.kill_idle_s
        if direction > 0:
            self.kill_idle_s = next((s for s in steps if s > now), steps[-1])
        else:
            self.kill_idle_s = next((s for s in reversed(steps) if s < now), steps[0])
        self._say(f"kill preview: connections idle more than {self.kill_idle_s:g} s")
        if self.pending is not None:
            self.preview(self.pending.host)

    def preview(self, host: str) -> None:
        """A fresh CLIENT LIST over the held connection, then the same plan `connguard kill` would make."""
        try:
            listing = self.sampler.execute("CLIENT", "LIST")
        except Exception as exc:  # no connection held (refused), or CLIENT LIST denied
            self.view = replace(self.view, message=f"cannot preview a kill: {_one_line(exc)}")
            return
        try:
            self.pending = plan_for_source(listing, host, self.kill_idle_s, self.sampler.client_id)
        except ValueError as exc:  # a host the kill filter refuses (not an IP, not unix): say so, touch nothing
            self.view = replace(self.view, message=f"cannot preview a kill: {_one_line(exc)}")
            return
        self.view = replace(self.view, preview=preview_renderable(self.pending), message=None)

    def confirm(self) -> None:
        preview, self.pending = self.pending, None
        assert preview is not None
        try:
            result = execute_kills(self.sampler, preview.plan)  # the one way connguard disconnects clients
            killed, gone = result.killed, result.already_gone
        except (ConnguardError, redis.exceptions.RedisError) as exc:
            self.view = replace(self.view, preview=None, message=f"kill failed: {_one_line(exc)}")
            return
        line = kill_log_line(clock(time.time()), preview, killed, len(gone))
        self.model.note_kill(line)
        if self.recorder is not None:
            self.recorder.event({"event": "kill", "target": self.target.redacted, "source": preview.host,
                                 "idle_min_s": preview.idle_min_s, "ids": list(preview.plan.ids), "killed": killed,
                                 "already_gone": list(gone), "wall": time.time()})
        self.view = replace(self.view, preview=None, message=line)


    # -- following a Sentinel-managed primary ----------------------------------------------------------------
    def _follow_primary(self, obs: Any, now: float) -> Any:
        """Ask the Sentinels (at most every SENTINEL_RECHECK_S) when the primary is lost or says it is a replica;
        when they name another address, hold a connection there instead and mark the switch."""
        snap = obs.snapshot
        if snap is not None and snap.info.role == "master":
            return obs
        if now - self._sentinel_asked < SENTINEL_RECHECK_S:
            return obs
        self._sentinel_asked = now
        from connguard.discovery.sentinel import current_primary

        try:
            primary = current_primary(self.sentinel, connect_timeout_s=1.0)  # type: ignore[arg-type]
        except ConnguardError:
            return obs  # no Sentinel can say yet (a failover in progress): ask again next tick
        if primary.endpoint_key == self.target.endpoint_key:
            return obs
        self.sampler.close()
        self.target, self.sampler = primary, self._sampler_for(primary)
        self.model.diagnoser = snapshot_causes(primary, self.settings)
        self.model.census_diagnoser = census_causes(primary, self.settings)
        self.waiting, self.wait_step = False, 0
        self.switches.append((time.time(), f"{primary.host}:{primary.port}"))
        if self.recorder is not None:
            self.recorder.event({"event": "primary_switch", "target": primary.redacted, "wall": time.time()})
        return self.sampler.sample(client_list=self.model.wants_client_list(now))

    def _switch_line(self) -> str | None:
        if not self.switches:
            return None
        wall, where = self.switches[-1]
        return f"FAILOVER followed: the Sentinels name {where} as primary since {clock(wall)} (switch {len(self.switches)})"

    def _json(self, frame: WatchFrame) -> dict[str, Any]:
        doc = frame.to_json()
        if self.sentinel is not None:
            doc["primary"] = f"{self.target.host}:{self.target.port}"
            doc["primary_switches"] = [{"ts": round(w, 3), "primary": p} for w, p in self.switches]
        return doc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "message", exc)).split())[:120]


def _nap(seconds: float) -> None:
    time.sleep(max(0.0, seconds))
    return None


def _sleep_until(at: float) -> float:
    """Sleep to the next tick; a tick that overran (a reconnect) starts the schedule again from now."""
    now = time.monotonic()
    if at > now:
        time.sleep(at - now)
        return at
    return now


def demo_watch(url: str, console: Console, *, seconds: float = 21.0, interval_s: float = 0.5,
               idle_threshold_s: float = 2.0) -> WatchFrame:
    """`connguard demo`'s look at watch: run it for `seconds` (the forecast needs 20 s of data), live on a
    terminal (transient, not full-screen), then print the final screen as a still; returns that frame."""
    from connguard.monitor.watch_view import render_watch_snapshot
    from connguard.target import parse_target

    settings = WatchSettings(interval_s=interval_s, idle_threshold_s=idle_threshold_s, diagnose_every_s=5.0)
    runner = WatchRunner(parse_target(url), WatchOptions(settings=settings, connect_timeout_s=15.0))
    runner.open()
    try:
        frame = runner.tick()
        deadline = time.monotonic() + seconds
        with Live(render_watch_snapshot(frame), console=console, transient=True, auto_refresh=False) as live:
            next_at = time.monotonic()
            while time.monotonic() < deadline:
                next_at = _sleep_until(next_at + interval_s)
                frame = runner.tick()
                if console.is_terminal:
                    live.update(render_watch_snapshot(frame), refresh=True)
        console.print(render_watch_snapshot(frame))
        return frame
    finally:
        runner.close()
