"""Presenting a storm run: a rich table, a JSON file, a PNG plot, and the demo's short act."""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import Any, Callable

from rich import box
from rich.console import Console
from rich.table import Table

from connguard.lab.storm import StormResult, run_storm

EXPECTED_FEWER = 50.0  # the guard must make at least this many times fewer attempts than redis-py's defaults


def machine() -> dict[str, Any]:
    """nproc and CPU model, so numbers are read with the box that produced them."""
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def _fmt(value: float | None, unit: str = "s") -> str:
    return "—" if value is None else f"{value:.2f}{unit}"


def render_table(result: StormResult, console: Console) -> None:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"Storm on {result.server}: maxclients {result.maxclients}, {result.workers} workers, "
                        f"full for {result.full_s:g}s, watched {result.after_s:g}s after the leak cleared")
    table.add_column("arm", no_wrap=True)
    for name in ("attempts", "per s", "rejected", "ok\nfull", "ok\nafter", "recovery", "served", "errors\nstop"):
        table.add_column(name, justify="right", no_wrap=True)
    for arm in result.arms:
        table.add_row(
            arm.arm, f"{arm.client_attempts_full:,}", f"{arm.attempts_per_s_full:,.1f}" if arm.attempts_per_s_full < 100 else f"{arm.attempts_per_s_full:,.0f}", f"{arm.rejected_full:,}",
            f"{arm.ok_full:,}", f"{arm.ok_after:,}", _fmt(arm.recovery_s), _fmt(arm.served_s), _fmt(arm.errors_stop_s),
        )
    console.print(table)
    arms = "; ".join(f"{a.arm} = {a.label}" for a in result.arms)
    console.print(f"{arms}. While the server was full: attempts = sockets the clients tried to open (the server's "
                  "rejected_connections + total_connections_received agree), rejected = refused by the server, "
                  "ok full = commands that succeeded. After the leak cleared: ok after = commands that succeeded, "
                  "recovery = until usage < 80% and no more rejections, served = until every worker had a command "
                  "succeed again, errors stop = until the last command that failed."
                  + (f" Each client held {held} live connection(s) from before the leak (the guard asks INFO "
                     "over them whether room has returned)." if (held := result.arms[0].held if result.arms else 0)
                     else ""), style="dim")


RECOVERY_FACTOR = 1.5  # the guard recovers within this many times redis-py's defaults (issue #11)


def verdict(result: StormResult) -> tuple[bool, str]:
    fewer = result.fewer_attempts()
    guard = result.arm("guard")
    if fewer is None or guard is None:
        return True, "run both the redis-py and guard arms to compare them"
    base = result.arm("redis-py")
    base_s = _recovered(base) if base is not None else None
    # Recovery: within RECOVERY_FACTOR x redis-py's own time in the same run (never under 0.25 s, a few sample
    # ticks: both may be near 0); 5 s when redis-py never recovered.
    limit = max(0.25, RECOVERY_FACTOR * base_s) if base_s is not None else 5.0
    guard_s = _recovered(guard)
    ok = fewer >= EXPECTED_FEWER and guard_s is not None and guard_s <= limit
    return ok, (f"the guard made {fewer:,.0f}x fewer connection attempts than redis-py's defaults while the server "
                f"was full (expected >= {EXPECTED_FEWER:g}x) and every worker was served with no more errors "
                f"{_fmt(guard_s)} after the leak cleared (redis-py: {_fmt(base_s)}; expected <= {limit:.2f}s)")


def _recovered(arm: Any) -> float | None:
    """Clear -> every worker served and no command failing any more: the later of the two."""
    if arm.served_s is None:
        return None
    return max(arm.served_s, arm.errors_stop_s or 0.0)


def write_json(result: StormResult, path: Path) -> None:
    payload = result.to_dict()
    payload["machine"] = machine()
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_plot(result: StormResult, path: Path) -> bool:
    """Usage and rejections per second, one line per arm. False when matplotlib (the `lab` extra) is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (usage_ax, reject_ax) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for arm in result.arms:
        ts = [s.t for s in arm.series]
        usage_ax.plot(ts, [100 * s.usage for s in arm.series], marker="o", markersize=3, label=arm.label)
        reject_ax.plot(ts, [max(s.rejected, 0.5) for s in arm.series], marker="o", markersize=3, label=arm.label)
    for ax in (usage_ax, reject_ax):
        ax.axvline(result.full_s, color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    usage_ax.axhline(80, color="red", linestyle=":", linewidth=1)
    usage_ax.set_ylabel("server usage (% of maxclients)")
    usage_ax.set_ylim(0, 105)
    usage_ax.legend(loc="center right", fontsize=8)
    reject_ax.set_yscale("log")
    reject_ax.set_ylabel("rejected connections / s\n(log scale; 0 drawn at 0.5)")
    reject_ax.set_xlabel(f"seconds since the workers started (dashed: leak cleared at {result.full_s:g}s)")
    title = f"Retry storm against a full server: {result.workers} workers, maxclients {result.maxclients}"
    guard, base, fewer = result.arm("guard"), result.arm("redis-py"), result.fewer_attempts()
    if guard is not None and base is not None and fewer is not None:
        # Both numbers at once: what the full server was spared, and how soon the workers were served again.
        title += (f"\nguard: {fewer:,.0f}x fewer refused attempts than redis-py, every worker served with no error "
                  f"{_fmt(_recovered(guard))} after the clear (redis-py {_fmt(_recovered(base))})")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def demo_act(url: str, *, console: Console, step: Callable[[str], None] = lambda text: None) -> bool:
    """The short form for `connguard demo`: redis-py's defaults, then the guard, against the demo's server."""
    console.print("A leak fills the server again. Eight workers keep sending commands for 4 s, first with "
                  "redis-py's default retries, then through connguard's guard; then the leak is cleared and we "
                  "watch 4.5 s more (the guard's breaker probes at most every 3.75 s by default).")
    quiet = logging.getLogger("connguard.guard")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the breaker's own log lines would interleave with the show
    try:
        result = run_storm(("redis-py", "guard"), workers=8, full_s=4.0, after_s=4.5, url=url,
                           log=lambda line: console.print(f"  {line}", style="dim"))
    finally:
        quiet.setLevel(level)
    render_table(result, console)
    fewer = result.fewer_attempts() or 0.0
    guard = result.arm("guard")
    ok = fewer >= 5 and guard is not None and guard.served_s is not None
    style = "bold green" if ok else "bold red"
    console.print(f"{'✓' if ok else '✗'} the guard made {fewer:,.0f}x fewer connection attempts while the server "
                  f"was full, and served every worker again {_fmt(guard.served_s if guard else None)} after the "
                  "leak cleared", style=style)
    return ok
