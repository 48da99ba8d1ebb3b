"""Where daxiao talks: `console` (stderr) for progress and log lines, `out` (stdout) for results.

Defined once so every module writes through the same objects: a test or a notebook can redirect or
quiet them in one place, and log lines and progress bars never interleave from two Consoles.

`progress(phase, total)` is the one way a long phase reports itself: a rich bar on a terminal, and,
when stderr is a file or a pipe (a job script, CI), a plain line every `PLAIN_INTERVAL` seconds with
the phase, done/total, rate and time left, so a log shows progress instead of silence. `set_quiet(True)`
(the CLI's --quiet) silences both, and every other log line; results on stdout and errors still appear.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType

from rich.console import Console
from rich.errors import LiveError
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True, soft_wrap=True)  # one line per epoch, also in CI logs
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)  # wide tables stay whole in logs and pipes

__all__ = ["Phase", "console", "escape", "out", "progress", "progress_bar", "set_quiet"]

# Seconds between plain progress lines when stderr is not a terminal; DAXIAO_PROGRESS_INTERVAL overrides it
# (tests use a fraction of a second to see lines in a short phase).
PLAIN_INTERVAL = 10.0


def set_quiet(quiet: bool = True) -> None:
    """Silence (or restore) progress and log lines on stderr; stdout results are unaffected."""
    console.quiet = quiet


def progress_bar(info: bool = False) -> Progress:
    """A transient bar on stderr: description, bar, done/total, an optional info field, time left."""
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if info:
        cols.append(TextColumn("{task.fields[info]}"))
    return Progress(*cols, TimeRemainingColumn(), console=console, transient=True)


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("DAXIAO_PROGRESS_INTERVAL", PLAIN_INTERVAL)))  # 0: every update
    except ValueError:
        return PLAIN_INTERVAL


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")


class Phase:
    """One phase's progress. Use as a context manager (or `start()`/`close()`); call `advance(n)` as work
    is done and `update(info=...)` for a short status (loss, img/s). `unit` names what is counted."""

    def __init__(self, phase: str, total: int | None, unit: str = "", enabled: bool = True):
        self.phase, self.total, self.unit, self.info = phase, total, unit, ""
        self.done, self.enabled = 0, enabled and not console.quiet
        self.bar = console.is_terminal and not console.is_dumb_terminal
        self._progress: Progress | None = None
        self._task = None
        self.t0 = self._last = time.perf_counter()

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> Phase:
        self.t0 = self._last = time.perf_counter()
        if self.enabled and self.bar:
            self._progress = progress_bar(info=True)
            try:
                self._progress.start()
            except LiveError:  # a bar is already showing (a phase inside a phase): that one says enough
                self._progress, self.enabled = None, False
                return self
            self._task = self._progress.add_task(escape(self.phase), total=self.total, info="")
        return self

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        elif self.enabled and time.perf_counter() - self.t0 >= _interval():
            self._line(final=True)  # a long phase's log ends with its total time, a short one stays quiet

    def __enter__(self) -> Phase:
        return self.start()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- reporting --------------------------------------------------------------------------------------
    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.done += n
        self._report(info)

    def update(self, completed: int | None = None, info: str | None = None) -> None:
        if completed is not None:
            self.done = completed
        self._report(info)

    def _report(self, info: str | None) -> None:
        if info is not None:
            self.info = info
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, info=escape(self.info))
            return
        now = time.perf_counter()
        if now - self._last >= _interval():
            self._last = now
            self._line()

    def _line(self, final: bool = False) -> None:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.done / elapsed
        unit = f" {self.unit}" if self.unit else ""
        count = f"{self.done:,}/{self.total:,}{unit}" if self.total else f"{self.done:,}{unit}"
        parts = [f"{self.phase}: {count}"]
        if self.total and not final:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        parts.append(f"{rate:,.1f}/s" if rate < 10 else f"{rate:,.0f}/s")
        if final:
            parts.append(f"done in {_duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        if self.info:
            parts.append(self.info)
        console.print(", ".join(parts), markup=False, highlight=False)


def progress(phase: str, total: int | None, unit: str = "", enabled: bool = True) -> Phase:
    """A `Phase` for `phase` with `total` steps: `with progress("decode train", n, "images") as p: p.advance()`.
    `enabled=False` (a caller's verbose=False) makes it silent."""
    return Phase(phase, total, unit, enabled=enabled)
