"""The watch screen: one WatchFrame (and the keyboard's selection) drawn as rich renderables. Pure."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.segment import Segment
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from connguard.analysis.capacity import CRITICAL_RATIO, WARNING_RATIO
from connguard.analysis.forecast import describe
from connguard.monitor.watch_model import WatchFrame

BARS = "▁▂▃▄▅▆▇█"
WAIT_CAP_S = 2.0  # at a full server watch knocks at most once per this many seconds (monitor/watch.py)
GAUGE_WIDTH = 40


@dataclass(frozen=True)
class ViewState:
    """What the keyboard changed: the selected source and a kill preview or its result."""

    selected: int = 0
    interactive: bool = False
    preview: RenderableType | None = None
    message: str | None = None
    kill_idle_s: float | None = None  # the kill preview's idle threshold (changed with [ and ])
    switch: str | None = None  # a Sentinel failover watch followed: "primary 127.0.0.1:6380 since 12:01:07"


def clock(wall: float | None) -> str:
    return "--:--:--" if wall is None else time.strftime("%H:%M:%S", time.localtime(wall))


def sparkline(values: Sequence[float | None], gaps: Sequence[bool] = (), width: int = 60) -> Text:
    """Block characters scaled to the window's max; ' ' where unknown, a red '┆' at a restart."""
    values = list(values)[-width:]
    gaps = list(gaps)[-width:] if gaps else [False] * len(values)
    known = [v for v in values if v is not None]
    top = max(known) if known else 0.0
    text = Text()
    for v, gap in zip(values, gaps):
        if gap:
            text.append("┆", style="bold red")
        elif v is None:
            text.append(" ")
        else:
            level = 0 if top <= 0 else min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))
            text.append(BARS[level], style="cyan")
    return text


def gauge(frame: WatchFrame, width: int = GAUGE_WIDTH) -> Text:
    """The true ratio as a bar with the warning (0.8) and critical (0.9) lines marked."""
    ratio = frame.ratio
    text = Text("capacity  ")
    filled = 0 if ratio is None else min(width, round(ratio * width))
    warn, crit = round(WARNING_RATIO * width), round(CRITICAL_RATIO * width)
    style = "green" if ratio is None or ratio < WARNING_RATIO else "yellow" if ratio < CRITICAL_RATIO else "bold red"
    for i in range(width):
        if i in (warn, crit) and i >= filled:
            text.append("┃" if i == crit else "│", style="red" if i == crit else "yellow")
        elif i < filled:
            text.append("█", style=style)
        else:
            text.append("░", style="dim")
    if ratio is None:
        text.append("  ?", style="bold")
    else:
        text.append(f"  {frame.used}/{frame.maxclients} ({ratio:.0%})", style=style)
        text.append(f"  headroom {others_headroom(frame)}")
    if frame.used_from_census:
        text.append("  (socket census)", style="dim")
    marks = (" " * (10 + warn) + f"▲{WARNING_RATIO:.0%}").ljust(10 + crit) + f"▲{CRITICAL_RATIO:.0%}"
    text.append("\n" + marks, style="dim")
    return text


def _rate(value: float | None, unit: str = "/s") -> str:
    return "?" if value is None else f"{value:g}{unit}"


def status_line(frame: WatchFrame) -> Text:
    text = Text()
    text.append(f"connguard watch {frame.target}", style="bold")
    if frame.server:
        text.append(f"  {frame.server}", style="dim")
    text.append(f"  {clock(frame.wall)}", style="dim")
    if frame.refused:
        text.append(f"\nREFUSED: waiting for a slot (since {clock(frame.refusing_since)}): the server is at "
                    f"maxclients; one attempt per backoff step, at most one per {WAIT_CAP_S:g} s; watch keeps the "
                    "first slot that frees", style="bold red")
        if frame.used_from_census:
            text.append(" (usage and sources from this host's socket census)", style="red")
        else:
            text.append(" (a remote server: no census of its sockets from here)", style="red")
    elif not frame.reachable:
        text.append(f"\nNOT OBSERVED: {frame.failure or 'no connection'}; retrying with backoff", style="bold red")
    if frame.restarts:
        text.append(f"\nrestart seen at {', '.join(clock(w) for w in frame.restarts[-3:])} (┆ in the charts; "
                    "counters reset, rates skip it)", style="yellow")
    return text


def forecast_line(frame: WatchFrame) -> Text:
    fc = frame.forecast
    style = "bold red" if fc.seconds_to_full is not None and fc.seconds_to_full < 300 else (
        "yellow" if fc.seconds_to_full is not None else "green")
    text = Text("forecast  ")
    text.append(describe(fc), style=style)
    text.append(f"  (confidence {fc.confidence}, {fc.points} points over {fc.span_s:.0f} s)", style="dim")
    return text


def charts(frame: WatchFrame) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", style="bold")
    table.add_column()
    table.add_column(justify="right")
    h = frame.history
    gaps = [p.gap for p in h]
    rows = (("used", [p.used for p in h], _rate(frame.used, "")),
            ("rejected/s", [p.rejected_per_s for p in h], _rate(frame.rejected_per_s)),
            ("new conns/s", [p.new_per_s for p in h], _rate(frame.new_per_s) + " (ours excluded)"),
            ("blocked", [p.blocked for p in h], _rate(frame.blocked, "")))
    for label, values, now in rows:
        table.add_row(label, sparkline(values, gaps), now)
    return table


def sources_table(frame: WatchFrame, view: ViewState) -> Table:
    age = "" if frame.sources_wall is None else f", {max(0.0, frame.wall - frame.sources_wall):.0f} s old"
    origin = {"client_list": "CLIENT LIST", "census": "socket census"}.get(frame.sources_from or "", "none yet")
    table = Table(title=f"top sources ({origin}{age})", title_justify="left", expand=False)
    for col, just in (("", "left"), ("host", "left"), ("conns", "right"), ("idle>thr", "right"), ("growth/min", "right"),
                      ("Δ", "right"), ("names", "left"), ("lib", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for i, s in enumerate(frame.sources):
        pointer = "▶" if view.interactive and i == view.selected else ""
        mark = "*" if s.changed else ""
        table.add_row(
            pointer + mark, s.host, str(s.connections),
            "?" if s.idle_over_threshold is None else str(s.idle_over_threshold),
            "?" if s.growth_per_min is None else f"{s.growth_per_min:+.1f}",
            f"{s.delta:+d}" if s.delta else "", escape(", ".join(s.names)[:30]), escape(", ".join(s.libs)[:20]),
            style="bold" if s.changed else None,
        )
    return table


def alerts_panel(frame: WatchFrame) -> Text:
    text = Text("alerts    ")
    if not frame.alerts:
        text.append("none", style="green")
    for i, a in enumerate(frame.alerts):
        if i:
            text.append("\n          ")
        text.append(f"{a.severity.upper():8} {a.name}", style="bold red" if a.severity == "critical" else "yellow")
        text.append(f"  since {clock(a.since)}  {a.detail}")
    return text


def doctor_line(frame: WatchFrame) -> Text:
    text = Text("doctor    ")
    if frame.last_causes is None:
        text.append("not yet run", style="dim")
    else:
        text.append(", ".join(frame.last_causes) or "no cause found", style="bold" if frame.last_causes else "green")
        text.append(f"  (at {clock(frame.last_diagnosis_wall)})", style="dim")
    return text


def budget_line(frame: WatchFrame) -> Text:
    b = frame.budget
    cost = "cost not measured yet" if b.cost_ms is None else f"{b.cost_ms:.2f} ms/call"
    share = "" if b.share is None else f", {b.share:.2%} of server time"
    mode = "fixed" if b.fixed else f"adaptive, budget {b.budget_share:.0%}"
    return Text(f"CLIENT LIST every {b.every_s:.1f} s ({mode}; {cost}{share}; {b.calls} calls)", style="dim")


def others_headroom(frame: WatchFrame) -> int | None:
    """Slots other clients can still open. Over a held connection capacity leaves watch's own slot out of
    `used`, so its headroom still counts that slot as free: it is not (a refusing server showed "headroom 1").
    A census already counts every socket, watch's too."""
    if frame.headroom is None or frame.used_from_census or not frame.reachable:
        return frame.headroom
    return max(0, frame.headroom - 1)


def left_out_line(frame: WatchFrame) -> Text | None:
    """What the top-sources table leaves out, so a long tail of small sources is never invisible."""
    sources, connections = frame.sources_left_out
    if not sources:
        return None
    return Text(f"+{sources} more source{'s' if sources != 1 else ''} ({connections} connection"
                f"{'s' if connections != 1 else ''})", style="dim")


def keys_line(view: ViewState) -> Text:
    idle = "" if view.kill_idle_s is None else f" (idle > {_duration(view.kill_idle_s)})"
    return Text(f"keys: ↑↓/jk select · x kill preview{idle} · [ ] idle threshold · q quit", style="dim")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


class Fit:
    """The screen cut to the terminal's height with a marked cut, the key line always kept: a silently cropped
    full-screen view (80×24) hid the sources table and the keys without a word."""

    def __init__(self, body: RenderableType, footer: RenderableType | None = None) -> None:
        self.body, self.footer = body, footer

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or console.height
        free = options.update(height=None)
        lines = console.render_lines(self.body, free, pad=False)
        tail = console.render_lines(self.footer, free, pad=False) if self.footer is not None else []
        room = max(1, height - len(tail))
        if len(lines) > room:
            cut = len(lines) - (room - 1)
            lines = lines[: room - 1]
            marker = Text(f"▼ {cut} more line{'s' if cut != 1 else ''} cut: enlarge the terminal "
                          f"(now {options.max_width}×{height})", style="reverse")
            lines += console.render_lines(marker, free, pad=False)
        for line in [*lines, *tail]:
            yield from line
            yield Segment.line()


def render(frame: WatchFrame, view: ViewState = ViewState()) -> RenderableType:
    """The full-screen view: the body cut to the terminal with a marker, the key line kept below it."""
    return Fit(render_body(frame, view), keys_line(view) if view.interactive else None)


def render_body(frame: WatchFrame, view: ViewState = ViewState()) -> RenderableType:
    # What the operator is acting on comes first, so a short terminal never cuts off a kill confirmation.
    parts: list[RenderableType] = [status_line(frame)]
    if view.switch:
        parts.append(Text(view.switch, style="bold yellow"))
    if view.preview is not None:
        parts.append(view.preview)
    if view.message:
        parts.append(Text(view.message, style="bold magenta"))
    parts += [gauge(frame), forecast_line(frame), alerts_panel(frame), doctor_line(frame), charts(frame),
              sources_table(frame, view)]
    more = left_out_line(frame)
    if more is not None:
        parts.append(more)
    parts.append(budget_line(frame))
    if frame.kills:
        parts.append(Text("kills     " + "\n          ".join(frame.kills), style="magenta"))
    return Panel(Group(*parts), border_style="red" if any(a.severity == "critical" for a in frame.alerts) else "blue")


def render_watch_snapshot(frame: WatchFrame) -> RenderableType:
    """A still of the screen (no keys, never cut): for `connguard demo` and any non-interactive look."""
    return render_body(frame, ViewState())
