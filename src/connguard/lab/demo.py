"""The `connguard demo` show: a throwaway server, a leak and a retry storm diagnosed live, then the guard."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from rich.console import Console
from rich.markup import escape

from connguard.analysis.findings import DoctorSettings
from connguard.lab.scenarios import run_scenario
from connguard.lab.servers import ServerBinary, ServerProcess
from connguard.lab.storm_render import demo_act
from connguard.target import parse_target

DEMO_MAXCLIENTS = 64
# Short on purpose so the demo fits in a minute; the production defaults live in DoctorSettings.
PRODUCTION = DoctorSettings()
DEMO_INTERVAL_S = 1.0
DEMO_IDLE_THRESHOLD_S = 2.0


@dataclass(frozen=True)
class ActResult:
    """What one act showed, for the summary: did it show what it set out to, in one line."""

    title: str
    ok: bool
    detail: str


@dataclass
class Demo:
    """Runs the acts in order on one server; everything it starts is stopped by `close()`."""

    console: Console
    binary: ServerBinary
    step: Callable[[str], None] = lambda text: None  # advances the progress display
    server: ServerProcess | None = None
    results: list[ActResult] = field(default_factory=list)

    def say(self, text: str, style: str = "") -> None:
        self.console.print(f"[{style}]{escape(text)}[/]" if style else escape(text), soft_wrap=True)

    def start_server(self) -> None:
        self.step("starting a throwaway server")
        self.server = ServerProcess(self.binary, maxclients=DEMO_MAXCLIENTS)
        self.server.start()
        self.say(f"✓ {self.binary.label} on {self.server.url}, maxclients {DEMO_MAXCLIENTS} (pid {self.server.pid})",
                 "green")

    def doctor(self, label: str, expected: tuple[str, ...]) -> ActResult:
        """Run the doctor against the demo server and show its verdict as a person would see it."""
        from connguard.doctor import run_doctor
        from connguard.render.text import render_text

        assert self.server is not None
        settings = DoctorSettings(interval_s=DEMO_INTERVAL_S, idle_threshold_s=DEMO_IDLE_THRESHOLD_S)
        self.step(f"{label}: the doctor takes two snapshots {DEMO_INTERVAL_S:g}s apart")
        self.say(f"$ connguard doctor {self.server.url} --interval {DEMO_INTERVAL_S:g} "
                 f"--idle-threshold {DEMO_IDLE_THRESHOLD_S:g}", "bold")
        diag = run_doctor(parse_target(self.server.url), settings, connect_timeout_s=15.0)
        render_text(diag, self.console)
        named = tuple(f.cause for f in diag.findings if f.severity != "info")
        missing = [c for c in expected if c not in named]
        if not expected:  # the check after a fix: the server is healthy again
            ok = diag.status == "ok"
            line = ("the server has recovered: no connection problems" if ok
                    else f"the server has not recovered: status {diag.status}, {', '.join(named) or 'no findings'}")
        elif missing:
            ok, line = False, f"expected the doctor to name {', '.join(missing)}; it named {', '.join(named) or 'nothing'}"
        else:
            ok, line = True, f"the doctor named {', '.join(expected)} (status {diag.status})"
        self.say(("✓ " if ok else "✗ ") + line, "bold green" if ok else "bold red")
        result = ActResult(label, ok, line)
        self.results.append(result)
        return result

    def act(self, title: str, scenario: str, expected: tuple[str, ...], intro: str) -> None:
        assert self.server is not None
        self.console.rule(f"[bold]{title}")
        self.say(intro)
        self.step(f"{title}: reproducing it")
        with run_scenario(scenario, url=self.server.url, log=lambda line: self.say(f"  {line}", "dim")):
            self.doctor(title, expected)
            if scenario == "connection_leak":  # the same leak, live: the forecast says when it fills
                from connguard.monitor.watch import demo_watch
                self.say(f"$ connguard watch {self.server.url} --interval 0.5 --idle-threshold 2", "bold")
                demo_watch(self.server.url, self.console, idle_threshold_s=DEMO_IDLE_THRESHOLD_S)
        self.check_server()

    def guard_act(self) -> None:
        title = "Act 3: the same storm, through the guard"
        self.console.rule(f"[bold]{title}")
        assert self.server is not None
        self.step(f"{title}: naive clients, then guarded ones")
        outcome = demo_act(self.server.url, console=self.console, step=self.step)
        self.check_server()
        self.results.append(ActResult(title, outcome is not False, "redis-py's defaults against the guard, "
                                      "measured at the server (table above)"))
        self.doctor("After the storm", ())

    def check_server(self) -> None:
        if self.server is not None and not self.server.alive():
            from connguard.errors import LabError

            raise LabError(f"the demo server died: {self.server.log_tail()}")

    def close(self) -> None:
        if self.server is not None:
            pid, workdir = self.server.pid, self.server.workdir
            self.server.stop()
            self.say(f"✓ stopped the server (pid {pid}) and removed {workdir}", "green")
            self.server = None


ACTS = (
    ("Act 1: a connection leak", "connection_leak", ("connection_leak",),
     "One host (127.0.0.66, 'orders-worker') opens connections and never uses them again, "
     "while two others do steady work."),
    ("Act 2: a retry storm", "retry_storm", ("retry_storm", "exhausted"),
     "The server is full; its clients reconnect at once on every refusal, and some connections churn."),
)


def run_demo(demo: Demo) -> list[ActResult]:
    """The whole show; the caller owns `demo.close()` so Ctrl-C and errors also clean up."""
    demo.say(f"Everything runs on this machine against a throwaway server; the doctor uses short settings "
             f"(--interval {DEMO_INTERVAL_S:g} --idle-threshold {DEMO_IDLE_THRESHOLD_S:g}) so the demo takes under a "
             f"minute. In production the defaults are --interval {PRODUCTION.interval_s:g} "
             f"--idle-threshold {PRODUCTION.idle_threshold_s:g}.")
    demo.start_server()
    for title, scenario, expected, intro in ACTS:
        demo.act(title, scenario, expected, intro)
    demo.guard_act()
    return demo.results


def progress_steps() -> int:
    """Ticks of the progress bar: the server, two per act, two for the guard act."""
    return 1 + 2 * len(ACTS) + 2
