"""The `daxiao` command. Subcommands only parse, build configs and call the packages that do the work;
each file here holds one group of commands and registers its parsers in `add_commands`.

argparse rather than Typer: the training flags are generated from the config dataclasses (one source
of truth for names, types and defaults), which argparse takes as data; it also costs no dependency.
"""

from __future__ import annotations

import argparse
import sys

from ..console import console as err
from ..console import escape
from ..errors import DaxiaoError
from . import comparing, inspect, training

GROUPS = (training, inspect, comparing)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="daxiao", description="Image recognition with big and small models.")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from ..allocator import reuse_memory

    reuse_memory()  # large batches 2.5x faster on glibc; before any tensor exists (benchmarks/allocator.py)
    args = build_parser().parse_args(argv)
    for k in ("batch_size", "top_k", "input_size", "epochs", "jobs", "trials"):
        if isinstance(getattr(args, k, None), int) and getattr(args, k) < 1:
            err.print(f"[red]error:[/] --{k.replace('_', '-')} must be >= 1 (received {getattr(args, k)}).")
            return 2
    try:
        return args.fn(args)
    except DaxiaoError as e:
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)  # escaped: "mobilenet-v1[alpha=2]" is not markup
        return 2
    except KeyboardInterrupt:
        err.print("interrupted; the last finished epoch is saved: continue with `daxiao train --resume --name RUN`.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
