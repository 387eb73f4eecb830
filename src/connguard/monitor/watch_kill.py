"""Act from the held slot: preview, then (only on confirmation) kill one source's idle connections through
the connection watch already holds. Selection is `remedy.kill.plan_kill`, the one `connguard kill` uses."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from rich.console import Group, RenderableType

from connguard.probe.client_list import parse_client_list
from connguard.remedy.kill import KillFilter, KillPlan, plan_kill

PREVIEW_ROWS = 8


@dataclass(frozen=True)
class KillPreview:
    host: str
    idle_min_s: int
    plan: KillPlan


def plan_for_source(client_list_text: str | bytes, host: str, idle_min_s: float, own_client_id: int | None) -> KillPreview:
    """Pure: from a fresh CLIENT LIST, the kill that `connguard kill --source HOST --idle N` would plan."""
    idle = int(idle_min_s)
    clients = parse_client_list(client_list_text).records()
    plan = plan_kill(clients, KillFilter(sources=(host,), idle_min_s=idle), own_client_id)
    return KillPreview(host, idle, plan)


def preview_renderable(preview: KillPreview) -> RenderableType:
    plan = preview.plan
    head = Text(f"Kill {len(plan.targets)} connection(s) from {preview.host} idle >= {preview.idle_min_s} s "
                f"(by CLIENT ID, through watch's own connection)?", style="bold magenta")
    table = Table("id", "addr", "name", "idle s", "age s", title=None)
    for c in plan.targets[:PREVIEW_ROWS]:
        table.add_row(str(c.id), c.addr, c.name or "", str(c.idle_s), str(c.age_s))
    notes = []
    if len(plan.targets) > PREVIEW_ROWS:
        notes.append(f"… and {len(plan.targets) - PREVIEW_ROWS} more")
    if plan.skipped:
        notes.append(f"{len(plan.skipped)} protected, not touched ({plan.skipped[0].reason}…)")
    if plan.over_limit:
        notes.append(f"{plan.over_limit} more beyond the kill limit")
    confirm = Text("press y to kill them, n or Esc to cancel" if plan.targets else "nothing to kill: press n",
                   style="bold")
    return Group(head, table, *(Text(n, style="dim") for n in notes), confirm)


def kill_log_line(wall_clock: str, preview: KillPreview, killed: int, gone: int) -> str:
    return (f"{wall_clock} killed {killed} idle connection(s) from {preview.host} (idle >= {preview.idle_min_s} s)"
            + (f", {gone} already gone" if gone else ""))
