"""Where daxiao talks: `console` (stderr) for progress and log lines, `out` (stdout) for results.

Defined once so every module writes through the same objects: a test or a notebook can redirect or
quiet them in one place, and log lines and progress bars never interleave from two Consoles.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True, soft_wrap=True)  # one line per epoch, also in CI logs
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)  # wide tables stay whole in logs and pipes

__all__ = ["console", "escape", "out", "progress_bar"]


def progress_bar(info: bool = False) -> Progress:
    """A transient bar on stderr: description, bar, done/total, an optional info field, time left."""
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if info:
        cols.append(TextColumn("{task.fields[info]}"))
    return Progress(*cols, TimeRemainingColumn(), console=console, transient=True)
