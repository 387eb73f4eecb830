"""The Console every command prints with, so piped output is never wrapped mid-sentence at 80 columns."""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console

PIPE_WIDTH = 10_000  # piped output: one line per line, never wrapped mid-sentence at 80 columns


def console_for(stream: TextIO | None = None) -> Console:
    """The terminal's width on a TTY; on a pipe (logs, CI, grep) no wrapping at all, so each message
    stays on one line."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    return Console(file=stream, highlight=False, soft_wrap=not tty, width=None if tty else PIPE_WIDTH)
