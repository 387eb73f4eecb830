"""Human output, in the manner of LATENCY DOCTOR: verdict first, numbered findings, then top sources."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connguard.analysis.diagnosis import Diagnosis
from connguard.analysis.findings import Finding
from connguard.render.console import PIPE_WIDTH, console_for  # noqa: F401  (re-exported for the commands)

STYLE = {"ok": "bold green", "warning": "bold yellow", "critical": "bold red", "unknown": "bold magenta",
         "info": "cyan"}
MAX_EVIDENCE_CHARS = 160

HIDDEN_EVIDENCE = {"per_host", "turnover_by_host"}  # per-host tables, shown in the sources table instead


def verdict(diag: Diagnosis) -> str:
    """The headline. Findings are numbered as printed (serious first, in the Diagnosis's order), and the
    headline names them by those numbers: `exhausted` is the symptom, the first finding after it the cause."""
    serious = [f for f in diag.findings if f.severity != "info"]
    if not diag.reachable:
        return serious[0].summary if serious else (diag.error or "unreachable")
    if not serious:
        return "No connection problems found."
    count = f"{len(serious)} problem{'s' if len(serious) > 1 else ''} found"
    causes = [(n, f.cause) for n, f in enumerate(serious, 1) if f.cause != "exhausted"]
    if serious[0].cause == "exhausted":
        if not causes:
            return f"{count}; the server is full (1. exhausted)."
        n, cause = causes[0]
        return f"{count}; the server is full (1. exhausted), main cause: {n}. {cause}."
    n, cause = causes[0]
    return f"{count}; main cause: {n}. {cause}."


def _capacity_line(diag: Diagnosis) -> str | None:
    c = diag.capacity
    if c is None:
        return None
    ratio = f"{c.ratio:.0%}" if c.ratio is not None else "?"
    fd = f", fd limit {c.fd_limit}" if c.fd_limit else ""
    return (f"Capacity: {c.used}/{c.maxclients if c.maxclients is not None else '?'} slots ({ratio}) = "
            f"{c.connected_clients} clients + {c.connected_slaves} replicas + {c.cluster_connections} cluster bus; "
            f"headroom {c.headroom if c.headroom is not None else '?'}{fd}; "
            f"{c.rejected_connections} rejected since start")


def _rates_line(diag: Diagnosis) -> str | None:
    r = diag.rates
    if r is None:
        return None
    return (f"Over {r.interval_s:g}s: {r.connections_received_per_s:g} new connections/s, "
            f"{r.rejected_per_s:g} rejected/s, usage {r.used_delta:+d}")


def _value(v: Any) -> str:
    if isinstance(v, list):
        text = ", ".join(_value(x) for x in v)
    elif isinstance(v, dict):
        text = ", ".join(f"{k}={_value(x)}" for k, x in v.items())
    else:
        text = str(v)
    return text if len(text) <= MAX_EVIDENCE_CHARS else text[: MAX_EVIDENCE_CHARS - 1] + "…"


def render_finding(console: Console, n: int, f: Finding) -> None:
    console.print(f"[{STYLE[f.severity]}]{n}. {f.severity.upper()}[/] [bold]{f.cause}[/] "
                  f"(confidence {f.confidence:.2f})")
    console.print(f"   {escape(f.summary)}", soft_wrap=True)
    shown = {k: v for k, v in f.evidence.items() if v not in (None, [], {}) and k not in HIDDEN_EVIDENCE}
    if shown:
        console.print("   Evidence: " + escape("; ".join(f"{k}: {_value(v)}" for k, v in shown.items())),
                      soft_wrap=True)
    for i, a in enumerate(f.actions):
        mark = " [red](changes the server)[/]" if a.changes_server else ""
        console.print(f"   {chr(ord('a') + i)}) {escape(a.title)}{mark}", soft_wrap=True)
        if a.command:
            console.print(f"      [green]$ {escape(a.command)}[/]", soft_wrap=True, highlight=False)


def sources_table(diag: Diagnosis) -> Table | None:
    if not diag.sources:
        return None
    census = diag.sources_from_census
    title = "Connections by source (socket census)" if census else "Top sources"
    table = Table(title=title, title_justify="left")
    table.add_column("host")
    table.add_column("conns", justify="right")
    # Two censuses: how many of each host's connections are new since the first (a storm replaces its own).
    turnover = census and any(s.opened is not None for s in diag.sources)
    if turnover:
        table.add_column("new", justify="right")
    if not census:
        thr = f"{diag.settings.idle_threshold_s:g}s"
        for col in (f"idle>{thr}", "max idle", "median age", "blocked"):
            table.add_column(col, justify="right")
        table.add_column("names / libs")
    rows = list(diag.sources) + ([diag.sources_rest] if diag.sources_rest else [])
    for s in rows:
        if census:
            table.add_row(s.host, str(s.connections), *([str(s.opened or 0)] if turnover else []))
            continue
        who = ", ".join(s.names + s.libs) or "-"
        table.add_row(s.host, str(s.connections), str(s.idle_over_threshold), f"{s.max_idle_s}s",
                      f"{s.median_age_s}s", str(s.blocked), escape(who))
    return table


def render_text(diag: Diagnosis, console: Console | None = None) -> None:
    console = console or console_for()
    server = f" ({diag.server.flavor} {diag.server.version}, {diag.server.role})" if diag.server else ""
    console.print(f"[{STYLE[diag.status]}]{diag.status.upper()}[/]: {escape(diag.target)}{server} - "
                  f"{escape(verdict(diag))}", soft_wrap=True)
    if diag.error:
        console.print(f"Error: {escape(diag.error)}", soft_wrap=True)
    for line in (_capacity_line(diag), _rates_line(diag)):
        if line:
            console.print(line, soft_wrap=True)
    serious = [f for f in diag.findings if f.severity != "info"]
    notes = [f for f in diag.findings if f.severity == "info"]
    if serious:
        console.print()
        for n, f in enumerate(serious, 1):
            render_finding(console, n, f)
            console.print()
    if notes:
        console.print("[cyan]Notes (no action needed yet):[/]")
        for n, f in enumerate(notes, len(serious) + 1):
            render_finding(console, n, f)
        console.print()
    table = sources_table(diag)
    if table is not None:
        if not diag.findings:
            console.print()
        console.print(table)
    for lim in diag.limitations:
        console.print(f"[dim]Could not see: {escape(lim)}[/]", soft_wrap=True)
