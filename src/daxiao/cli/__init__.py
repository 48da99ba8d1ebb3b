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
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: `train --nproc N` hands it to torchrun
    for k in ("batch_size", "top_k", "input_size", "epochs", "jobs", "trials", "nproc"):
        if isinstance(getattr(args, k, None), int) and getattr(args, k) < 1:
            err.print(f"[red]error:[/] --{k.replace('_', '-')} must be >= 1 (received {getattr(args, k)}).")
            return 2
    was_quiet = err.quiet
    set_quiet(args.quiet)
    try:
        return args.fn(args)
    except DaxiaoError as e:
        set_quiet(False)  # --quiet silences progress, never the reason a command failed
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)  # escaped: "mobilenet-v1[alpha=2]" is not markup
        return 2
    except KeyboardInterrupt:
        set_quiet(False)
        err.print("interrupted; the last finished epoch is saved: continue with `daxiao train --resume --name RUN`.")
        return 130
    finally:
        set_quiet(was_quiet)


if __name__ == "__main__":
    sys.exit(main())
