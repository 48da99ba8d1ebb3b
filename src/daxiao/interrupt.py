"""Ctrl-C and SIGTERM: stop cleanly, say what was saved and the exact command that continues this job.

The jobs record what they have saved as they go (`begin`, `note_saved`); the CLI installs `handle_signals`
around a command and, when it is interrupted, prints `interrupted_message`. SIGTERM (what a scheduler or
``kill`` sends) is handled like Ctrl-C. A second Ctrl-C while the first is being handled exits at once.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Job:
    kind: str                 # "run" | "study" | "compare"
    folder: Path
    saved: str | None = None  # what is on disk so far ("epoch 3", "4 trials"), None: nothing yet


_job: Job | None = None


def begin(kind: str, folder: str | Path) -> None:
    """The folder this command continues from. The outermost job wins (a compare's runs, a tune's trials)."""
    global _job
    if _job is None:
        _job = Job(kind, Path(folder))


def note_saved(folder: str | Path, what: str) -> None:
    """Something resumable was written in `folder` (or inside the outer job's folder)."""
    global _job
    if _job is None:
        _job = Job("run", Path(folder))
    if Path(folder) == _job.folder:
        _job.saved = what
    else:  # an inner run of a compare: name it
        _job.saved = f"{Path(folder).name}: {what}"


def reset() -> None:
    global _job
    _job = None


def current() -> Job | None:
    return _job


RESUME_DROPS = {"--name": 1, "--project": 1, "--resume": 0, "--no-resume": 0, "--exist-ok": 0, "--no-exist-ok": 0}


def resume_command(argv: list[str], folder: Path, flag: str = "--resume") -> str:
    """`argv` (the command as typed, without the program) pointed at `folder`: its own --name/--project/
    --resume/--exist-ok replaced by ``flag --name NAME --project PARENT``."""
    out, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        key = a.split("=", 1)[0]
        if key in RESUME_DROPS:
            skip = RESUME_DROPS[key] if "=" not in a else 0
            continue
        out.append(a)
    out += [flag, "--name", folder.name]
    if folder.parent != Path("runs"):
        out += ["--project", str(folder.parent)]
    return "daxiao " + shlex.join(out)


def interrupted_message(argv: list[str], why: str = "interrupted") -> str:
    """One line: what was saved and the exact command that continues this job, or that nothing was saved."""
    job = _job
    if job is None:
        return f"{why}; nothing was saved."
    if job.saved is None:
        return (f"{why}; nothing was saved yet in {job.folder} (no epoch had finished). Start again with: "
                f"{resume_command(argv, job.folder, '--exist-ok')}")
    return f"{why}; {job.saved} is saved in {job.folder}. Continue with: {resume_command(argv, job.folder)}"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so the same clean-up runs."""


@contextmanager
def handle_signals() -> Iterator[None]:
    """SIGTERM raises `Terminated` (a KeyboardInterrupt); after a first Ctrl-C or SIGTERM, a second one
    exits at once (status 130) instead of waiting for the clean-up. Only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def now(signum, frame):  # the second signal: no clean-up, no traceback
        os.write(2, b"\ninterrupted again: exiting now.\n")
        os._exit(130)

    def first(signum, frame):
        signal.signal(signal.SIGINT, now)
        signal.signal(signal.SIGTERM, now)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, first)
    reset()
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def argv() -> list[str]:
    return sys.argv[1:]
