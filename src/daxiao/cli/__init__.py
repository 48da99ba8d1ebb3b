"""The `daxiao` command. Subcommands only parse, build configs and call the packages that do the work;
each file here holds one group of commands and registers its parsers in `add_commands`.

argparse rather than Typer: the training flags are generated from the config dataclasses (one source
of truth for names, types and defaults), which argparse takes as data; it also costs no dependency.
"""

from __future__ import annotations

import argparse
import sys

from ..console import console as err
from ..console import escape, set_quiet
from ..errors import DaxiaoError
from . import comparing, deploy, inspect, training

GROUPS = (training, inspect, comparing, deploy)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="daxiao", description="Image recognition with big and small models.")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    for command in sub.choices.values():  # every command, so it can go anywhere after the command name
        command.add_argument("-q", "--quiet", action="store_true",
                             help="no progress bars or log lines on stderr (results and errors still print)")
    return p


def main(argv: list[str] | None = None) -> int:
    from ..allocator import reuse_memory

    reuse_memory()  # batch-64 inference about 2x faster on glibc; before torch is imported (benchmarks/allocator.py)

    from .. import interrupt

    typed = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: `train --nproc N` hands it to torchrun
    for k in ("batch_size", "top_k", "input_size", "epochs", "jobs", "trials", "nproc"):
        if isinstance(getattr(args, k, None), int) and getattr(args, k) < 1:
            err.print(f"[red]error:[/] --{k.replace('_', '-')} must be >= 1 (received {getattr(args, k)}).")
            return 2
    was_quiet = err.quiet
    set_quiet(args.quiet)
    with interrupt.handle_signals():  # SIGTERM as Ctrl-C; a second one exits at once
        try:
            return args.fn(args)
        except DaxiaoError as e:
            set_quiet(False)  # --quiet silences progress, never the reason a command failed
            # escaped: "mobilenet-v1[alpha=2]" is not markup
            err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
            return 2
        except KeyboardInterrupt as e:
            set_quiet(False)
            why = "terminated (SIGTERM)" if isinstance(e, interrupt.Terminated) else "interrupted"
            err.print(escape(interrupt.interrupted_message(typed, why)), highlight=False)
            return 130
        except torch_oom() as e:
            set_quiet(False)
            err.print(f"[red]error:[/] out of memory ({escape(str(e).splitlines()[0][:100])}); lower --batch-size "
                      "or --image-size, or use a smaller --model. "
                      + escape(interrupt.interrupted_message(typed, "stopped")), highlight=False)
            return 2
        finally:
            set_quiet(was_quiet)


def torch_oom() -> tuple[type[BaseException], ...]:
    """Out-of-memory errors: the process's own, and torch's for an accelerator (only if torch is loaded)."""
    oom = sys.modules.get("torch")
    if oom is not None and hasattr(oom, "OutOfMemoryError"):
        return (MemoryError, oom.OutOfMemoryError)
    return (MemoryError,)


if __name__ == "__main__":
    sys.exit(main())
