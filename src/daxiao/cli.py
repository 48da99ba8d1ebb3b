"""The `daxiao` command. Subcommands only parse, build configs and call the modules that do the work.

argparse rather than Typer: the training flags are generated from the config dataclasses (one source
of truth for names, types and defaults), which argparse takes as data; it also costs no dependency.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console
from rich.table import Table

from .config import add_config_flags, config_from_args
from .errors import DaxiaoError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def cmd_train(args: argparse.Namespace) -> int:
    from .runs import train

    cfg = config_from_args(args)
    result = train(cfg)
    err.print(f"best val acc {result['best_val_acc']:.4f} at epoch {result['best_epoch']}; "
              f"run folder: [bold]{result['run_dir']}[/]")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from .lr_find import lr_find
    from .runs import build

    cfg = config_from_args(args).validate()
    model, bundle = build(cfg)
    r = lr_find(model, bundle, cfg, args.start_lr, args.end_lr, args.steps, args.out)
    out.print(f"suggested lr {r['suggested_lr']:.3g} (steepest loss descent; {len(r['lrs'])} steps); plot: {args.out}")
    return 0


def cmd_augment_preview(args: argparse.Namespace) -> int:
    import torch

    from .augment import parse_augment, preview_grid
    from .data import TensorSplit, load_data
    from .data.folder import ImageFiles

    cfg = config_from_args(args).validate()
    bundle = load_data(cfg.data, cfg.train.seed)
    split = bundle.train
    firsts = [int(i[0]) for c in range(len(bundle.classes)) if len(i := (split.targets == c).nonzero().flatten())]
    if isinstance(split, TensorSplit):
        images = split.images[firsts]
    else:
        files = ImageFiles([split.files.paths[i] for i in firsts], [0] * len(firsts), bundle.preprocess)
        images = torch.stack([files[k][0] for k in range(len(firsts))])
    path = preview_grid(images, split.targets[firsts], bundle.classes, parse_augment(cfg.data.augment), args.out,
                        per_class=args.per_class, seed=cfg.train.seed)
    out.print(f"wrote {path}: per class, an original and {args.per_class} augmented versions ({cfg.data.augment})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .checkpoint import resolve_weights
    from .report import evaluate_model

    weights = resolve_weights(args.weights)
    out_dir = args.out or (weights.parent / f"eval-{args.split}" if Path(args.weights).is_dir() else None)
    r = evaluate_model(weights, args.data, args.split, out_dir, args.batch_size, args.data_dir, args.workers)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    table = Table(title=f"{r['data']} ({r['split']}, {r['n']} images)")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c, m in r["per_class"].items():
        table.add_row(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    out.print(table)
    top5 = f"   top-5 {r['top5']:.4f}" if "top5" in r else ""
    out.print(f"accuracy {r['acc']:.4f}{top5}   loss {r['loss']:.4f}")
    for f in r.get("files", []):
        out.print(f"wrote {f}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict

    results = predict(args.weights, args.images, top_k=args.top_k)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                out.print(f"{r['file']}: [red]{r['error']}[/]")
            else:
                out.print(f"{r['file']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"]))
    return 1 if all("error" in r for r in results) else 0


def cmd_models(args: argparse.Namespace) -> int:
    from .profile import count_macs, count_params, human
    from .registry import create_model, list_models, model_info

    names = sorted(list_models(), key=lambda n: (model_info(n).size != "small", n))
    table = Table(title=f"daxiao models at {args.in_chans}x{args.input_size}x{args.input_size}, 1000 classes "
                        "(any timm model also works as timm:<name>)")
    for col in ("name", "camp", "family", "params", "MACs", "what it is"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left", no_wrap=col != "what it is")
    for n in names:
        info = model_info(n)
        m = create_model(n, num_classes=1000, in_chans=args.in_chans, input_size=args.input_size)
        table.add_row(n, info.size, info.family, human(count_params(m)),
                      human(count_macs(m, args.input_size, args.in_chans)), info.description)
    out.print(table)
    out.print("camp: the seed article's grouping. Inputs under 64 px get a stride-1 stem (see README).")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data.builtin import BUILTIN

    table = Table(title="built-in datasets (or --data FOLDER / --data list.csv)")
    table.add_column("name")
    table.add_column("where it looks")
    for d in BUILTIN.values():
        table.add_row(d.name, d.where)
    out.print(table)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a small and a big model on the embedded digits set and compare them side by side."""
    from .config import RunConfig
    from .runs import train

    rows = []
    for name in args.models.split(","):
        cfg = RunConfig()
        cfg.model.name, cfg.train.epochs, cfg.project = name.strip(), args.epochs, args.project
        cfg.data.image_size = args.image_size
        t0 = time.perf_counter()
        r = train(cfg)
        rows.append((name, r["params"], r["best_val_acc"], time.perf_counter() - t0, r["run_dir"]))
    from .profile import human

    table = Table(title=f"digits, {args.epochs} epochs each, same recipe")
    for col in ("model", "params", "val accuracy", "train time", "run folder"):
        table.add_column(col, justify="left" if col in ("model", "run folder") else "right",
                         overflow="fold", no_wrap=col != "run folder")
    for name, params, acc, secs, run in rows:
        table.add_row(name, human(params), f"{acc:.4f}", f"{secs:.1f} s", run)
    out.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="daxiao", description="Image recognition with big and small models.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model; writes a run folder",
                       description="Train a model. Settings: defaults < --config YAML < flags.")
    t.add_argument("--config", help="YAML file of settings (nested or flat keys, as in a run's config.yaml)")
    add_config_flags(t)
    t.set_defaults(fn=cmd_train)

    lf = sub.add_parser("lr-find", help="learning-rate range test: plot loss against lr, suggest a value",
                        description="Takes the same settings as train (model, data, optimizer, batch size, loss).")
    lf.add_argument("--config")
    add_config_flags(lf)
    lf.add_argument("--out", default="lr_find.png", help="plot file (PNG)")
    lf.add_argument("--start-lr", type=float, default=1e-7)
    lf.add_argument("--end-lr", type=float, default=10.0)
    lf.add_argument("--steps", type=int, default=100)
    lf.set_defaults(fn=cmd_lr_find)

    ap = sub.add_parser("augment-preview", help="a PNG grid of original vs augmented images per class",
                        description="See what --augment does before training: e.g. --augment seed --out grid.png")
    ap.add_argument("--config")
    add_config_flags(ap, sections=("data", "train"))
    ap.add_argument("--out", default="augment_preview.png")
    ap.add_argument("--per-class", type=int, default=6)
    ap.set_defaults(fn=cmd_augment_preview)

    e = sub.add_parser("evaluate", help="accuracy, per-class metrics, confusion matrix, predictions.csv")
    e.add_argument("weights", metavar="RUN_OR_WEIGHTS")
    e.add_argument("--data", help="built-in name, folder or CSV (default: the data it was trained on)")
    e.add_argument("--data-dir")
    e.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="split of a built-in set (default test; val where there is no test split)")
    e.add_argument("--out", help="folder for confusion_matrix.png and predictions.csv (default: RUN/eval-SPLIT)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--workers", type=int, default=2)
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(fn=cmd_evaluate)

    pr = sub.add_parser("predict", help="top-k classes for images or folders of images")
    pr.add_argument("weights", metavar="RUN_OR_WEIGHTS")
    pr.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    pr.add_argument("--top-k", type=int, default=5)
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.set_defaults(fn=cmd_predict)

    m = sub.add_parser("models", help="the model zoo with parameters and MACs")
    m.add_argument("--input-size", type=int, default=224)
    m.add_argument("--in-chans", type=int, default=3, choices=[1, 3])
    m.set_defaults(fn=cmd_models)

    d = sub.add_parser("datasets", help="built-in datasets and where each looks for its files")
    d.set_defaults(fn=cmd_datasets)

    de = sub.add_parser("demo", help="small vs big on the embedded digits set")
    de.add_argument("--models", default="mobilenet-v1,resnet18")
    de.add_argument("--epochs", type=int, default=10)
    de.add_argument("--image-size", type=int, default=None, help="upscale digits to this many pixels per side")
    de.add_argument("--project", default="runs/demo")
    de.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for k in ("batch_size", "top_k", "input_size", "epochs"):
        if isinstance(getattr(args, k, None), int) and getattr(args, k) < 1:
            err.print(f"[red]error:[/] --{k.replace('_', '-')} must be >= 1 (received {getattr(args, k)}).")
            return 2
    try:
        return args.fn(args)
    except DaxiaoError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted; the last finished epoch is saved: continue with `daxiao train --resume --name RUN`.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
