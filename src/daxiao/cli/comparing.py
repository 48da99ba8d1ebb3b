"""`daxiao compare` and `daxiao demo`: several models under one recipe."""

from __future__ import annotations

import argparse

from ..config import add_config_flags, config_from_args
from ..console import escape, out
from ..errors import DaxiaoError


def cmd_compare(args: argparse.Namespace) -> int:
    from ..compare import compare, compare_table

    if args.epochs is not None and args.budget_minutes is not None:
        raise DaxiaoError("give --epochs or --budget-minutes, not both.")
    cfg = config_from_args(args)
    r = compare(cfg, args.models, budget_minutes=args.budget_minutes, repeats=args.repeats,
                limits=(args.train_images, args.val_images, args.test_images))
    out.print(compare_table(r["rows"], r["recipe"]))
    for f in r["files"].values():
        out.print(f"wrote {f}", markup=False)
    return 0

def cmd_demo(args: argparse.Namespace) -> int:
    """`daxiao compare` on the embedded digits set: a small and a big model, the table and report.html."""
    from ..compare import compare, compare_table
    from ..config import RunConfig

    cfg = RunConfig.from_dict({"project": args.project, "name": "compare-digits", "exist_ok": True,
                               "image_size": args.image_size, "augment": args.augment})
    r = compare(cfg, args.models, epochs=args.epochs, repeats=10)
    out.print(compare_table(r["rows"], r["recipe"]))
    out.print(f"report: [bold]{escape(str(r['files']['report']))}[/] (with pareto.png, curves.png, compare.csv and "
              "compare.json beside it)")
    return 0


def add_commands(sub) -> None:
    co = sub.add_parser("compare", help="train or load several models under one recipe; table, Pareto plot, report",
                        description="Train every model of --models under the same recipe (the usual train flags) "
                                    "and budget, then test and profile each. Writes PROJECT/NAME (default "
                                    "runs/compare-DATA): one run folder per model, compare.csv, compare.json, "
                                    "pareto.png, curves.png and report.html. Entries may carry their own settings, "
                                    "mobilenet-v1[alpha=0.25], or be existing run folders (loaded, not trained).")
    co.add_argument("--models", required=True, metavar="A,B,C", help="e.g. seed-cnn,mobilenet-v1[alpha=0.5],resnet18")
    co.add_argument("--budget-minutes", type=float, help="wall minutes per model instead of --epochs: each model "
                                                         "trains for the epochs that fit (measured)")
    co.add_argument("--train-images", type=int, help="stratified subset of the training split (built-in sets)")
    co.add_argument("--val-images", type=int, help="stratified subset of the validation split")
    co.add_argument("--test-images", type=int, help="stratified subset of the test split")
    co.add_argument("--repeats", type=int, default=20, help="timed runs per latency measurement")
    co.add_argument("--config", help="YAML file of the shared recipe (as for train)")
    add_config_flags(co)
    co.set_defaults(fn=cmd_compare)

    de = sub.add_parser("demo", help="compare a small and a big model on the embedded digits set; writes report.html")
    de.add_argument("--models", default="mobilenet-v1,resnet18")
    # The ImageNet-style models' own from-scratch defaults (README's models table): compare trains every
    # model under one recipe and does not apply them, so the demo states them.
    de.add_argument("--epochs", type=int, default=20)
    de.add_argument("--augment", default="light", help="augmentation preset or Keras settings (default light)")
    de.add_argument("--image-size", type=int, default=32,
                    help="upscale digits (8x8) to this many pixels per side, so ImageNet-style strides still see "
                         "more than one pixel at the last stage (default 32)")
    de.add_argument("--project", default="runs/demo")
    de.set_defaults(fn=cmd_demo)
