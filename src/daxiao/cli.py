"""The `daxiao` command. Subcommands only parse, build configs and call the modules that do the work.

argparse rather than Typer: the training flags are generated from the config dataclasses (one source
of truth for names, types and defaults), which argparse takes as data; it also costs no dependency.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.table import Table

from .config import add_config_flags, config_from_args
from .console import console as err
from .console import escape, out
from .errors import DaxiaoError


def cmd_train(args: argparse.Namespace) -> int:
    from .training.runs import train

    cfg = config_from_args(args)
    result = train(cfg)
    err.print(f"best val acc {result['best_val_acc']:.4f} at epoch {result['best_epoch']}; "
              f"run folder: [bold]{result['run_dir']}[/]")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from .training.lr_find import lr_find
    from .training.runs import build

    cfg = config_from_args(args).validate()
    model, bundle = build(cfg)
    r = lr_find(model, bundle, cfg, args.start_lr, args.end_lr, args.steps, args.out)
    out.print(f"suggested lr {r['suggested_lr']:.3g} (steepest loss descent; {len(r['lrs'])} steps); plot: {args.out}")
    return 0


def cmd_augment_preview(args: argparse.Namespace) -> int:
    import torch

    from .data import TensorSplit, load_data
    from .data.augment import parse_augment, preview_grid
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

    from .inference.report import evaluate_model
    from .models.saved import resolve_weights

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
    from .inference.predict import predict

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


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune import TuneSettings, tune

    cfg = config_from_args(args)
    settings = TuneSettings(space=args.space or {}, sampler=args.sampler, trials=args.trials, cv=args.cv,
                            pruner=args.pruner, jobs=args.jobs, storage=args.storage, study=args.study,
                            timeout=args.timeout)
    try:
        tune(cfg, settings)
    except KeyboardInterrupt:
        err.print("interrupted; finished trials are stored: continue with `daxiao tune --resume --name STUDY` "
                  "(the trial that was cut off runs again).")
        return 130
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from .inference.embed import embed

    r = embed(args.source, args.data, args.out, args.split, args.image_size, args.data_dir, args.batch_size,
              args.workers)
    out.print(f"wrote {r['features']} {tuple(r['shape'])}, {r['labels']} and {r['json']} "
              f"(rows: {', '.join(f'{k} {a}-{b}' for k, (a, b) in r['rows'].items())})")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .inference.profile import count_macs, count_params, human
    from .models import create_model, list_models, model_info

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


def cmd_profile(args: argparse.Namespace) -> int:
    from .inference.profile import human, human_bytes, load_for_profile, profile_model

    model, size, chans, label = load_for_profile(args.source, args.input_size, args.in_chans, args.num_classes)
    r = profile_model(model, size, chans, repeats=args.repeats)
    if args.json:
        print(json.dumps({"model": label, **r}, indent=2))
        return 0
    table = Table(title=f"{label} at {chans}x{size}x{size}, fp32, eval mode")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("how", style="dim")

    def lat(x: dict) -> str:
        return f"{x['median_ms']:.3f} ms (IQR {x['q1_ms']:.3f}-{x['q3_ms']:.3f})"

    t = r["throughput"]
    for row in [("parameters", f"{r['params']:,}", "all tensors of model.parameters()"),
                ("MACs per image", human(r["macs"]), "torch.utils.flop_counter, FLOPs / 2"),
                ("size on disk, fp32", human_bytes(r["size_fp32_bytes"]), "safetensors bytes of the state dict"),
                ("size, int8 (estimate)", human_bytes(r["size_int8_bytes"]), "per-channel weights, fp32 biases/norms"),
                ("peak activations, 1 image", human_bytes(r["peak_activation_bytes"]), "live tensor bytes, forward"),
                ("latency, batch 1, 1 thread", lat(r["latency_1thread"]), f"median of {r['latency_1thread']['runs']}"),
                (f"latency, batch 1, {r['latency_all_threads']['threads']} threads", lat(r["latency_all_threads"]),
                 f"median of {r['latency_all_threads']['runs']}"),
                (f"throughput, batch {t['batch']}, {t['threads']} threads",
                 f"{t['images_per_s']:,.0f} img/s (IQR {t['q1']:,.0f}-{t['q3']:,.0f})", f"median of {t['runs']}")]:
        table.add_row(*row)
    out.print(table)
    out.print("ONNX numbers: not yet (no exported model until the export issue lands).")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, compare_table

    if args.epochs is not None and args.budget_minutes is not None:
        raise DaxiaoError("give --epochs or --budget-minutes, not both.")
    cfg = config_from_args(args)
    r = compare(cfg, args.models, budget_minutes=args.budget_minutes, repeats=args.repeats,
                limits=(args.train_images, args.val_images, args.test_images))
    out.print(compare_table(r["rows"], r["recipe"]))
    for f in r["files"].values():
        out.print(f"wrote {f}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .models.saved import read_meta, resolve_weights
    from .training.distill import distill

    if args.data is None and not args.config:  # the data the teacher was trained on
        data = read_meta(resolve_weights(args.teacher)).get("config", {}).get("data", {})
        args.data, args.data_dir = data.get("data", "digits"), args.data_dir or data.get("data_dir")
    r = distill(config_from_args(args), args.teacher, args.kd_alpha, args.temperature, cache=args.teacher_cache)
    err.print(f"student best val acc {r['best_val_acc']:.4f} at epoch {r['best_epoch']} (teacher "
              f"{r['distill']['teacher_val_acc']:.4f}); run folder: [bold]{r['run_dir']}[/]")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`daxiao compare` on the embedded digits set: a small and a big model, the table and report.html."""
    from .compare import compare, compare_table
    from .config import RunConfig

    cfg = RunConfig.from_dict({"project": args.project, "name": "compare-digits", "exist_ok": True,
                               "image_size": args.image_size})
    r = compare(cfg, args.models, epochs=args.epochs, repeats=10)
    out.print(compare_table(r["rows"], r["recipe"]))
    out.print(f"report: [bold]{r['files']['report']}[/] (with pareto.png, curves.png, compare.csv and compare.json "
              f"beside it)")
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

    tu = sub.add_parser(
        "tune", help="hyperparameter search (grid, random, TPE) with cross-validation and pruning",
        description="Search training settings with Optuna. The other flags set the base config every trial starts "
                    "from; --space names what varies: choices a,b,c or ranges low:high[:log|:step]. Example: "
                    "daxiao tune --model seed-tiny-cnn --space optimizer=adam,sgd activation=relu,tanh "
                    "batch_size=10,20,50 lr=1e-4:1e-1:log --sampler tpe --trials 30 --cv 3")
    tu.add_argument("--config", help="YAML file of base settings (as for train)")
    tu.add_argument("--space", nargs="+", metavar="NAME=VALUES",
                    help="name=a,b,c | name=low:high[:log|:step] | a YAML file of them (label_smoothing too)")
    tu.add_argument("--sampler", default="tpe", help="grid | random | tpe (Bayesian; default)")
    tu.add_argument("--trials", type=int, help="number of trials (default: the whole grid for grid, else 20)")
    tu.add_argument("--cv", type=int, default=3, help="stratified folds (default 3, as the article); 0: hold-out")
    tu.add_argument("--pruner", default="median", help="median | halving | hyperband | none")
    tu.add_argument("--jobs", type=int, default=1, help="worker processes (threads per worker: cores / jobs)")
    tu.add_argument("--storage", help="Optuna storage URL (sqlite:///x.db, postgresql://...) or a journal file; "
                                      "default: study.journal in the study folder. Workers elsewhere join by "
                                      "--storage and --study")
    tu.add_argument("--study", help="study name in the storage (default: the study folder's name)")
    tu.add_argument("--timeout", type=float, help="minutes; no new trial starts after this")
    add_config_flags(tu)
    tu.set_defaults(fn=cmd_tune)

    em = sub.add_parser("embed", help="pooled backbone features of a data set, as .npy, for use elsewhere",
                        description="Features of a trained run (its preprocessing) or of a pretrained model by "
                                    "name (its ImageNet weights, input size and normalization). Writes OUT.npy "
                                    "(N x F float32), OUT.labels.npy (int64) and OUT.json (classes, item names, "
                                    "rows of each split).")
    em.add_argument("source", metavar="RUN_OR_MODEL", help="a run folder or weights file, or a model name")
    em.add_argument("--data", help="built-in name, folder or CSV (default for a run: the data it was trained on)")
    em.add_argument("--data-dir")
    em.add_argument("--out", default="features.npy", help="features file (.npy); labels and names go beside it")
    em.add_argument("--split", default="all", choices=["train", "val", "test", "all"])
    em.add_argument("--image-size", type=int, help="a model name's input side (default: its weights' own)")
    em.add_argument("--batch-size", type=int, default=256)
    em.add_argument("--workers", type=int, default=2)
    em.set_defaults(fn=cmd_embed)

    m = sub.add_parser("models", help="the model zoo with parameters and MACs")
    m.add_argument("--input-size", type=int, default=224)
    m.add_argument("--in-chans", type=int, default=3, choices=[1, 3])
    m.set_defaults(fn=cmd_models)

    d = sub.add_parser("datasets", help="built-in datasets and where each looks for its files")
    d.set_defaults(fn=cmd_datasets)

    pf = sub.add_parser("profile", help="params, MACs, size, peak activations, latency and throughput of a model",
                        description="Profile a run folder or weights file (at its own input size) or a model name "
                                    "(default 3x224x224, 1000 classes).")
    pf.add_argument("source", metavar="MODEL_OR_RUN")
    pf.add_argument("--input-size", type=int, help="pixels per side (default: the run's, or 224 for a name)")
    pf.add_argument("--in-chans", type=int, choices=[1, 3], help="default: the run's, or 3 for a name")
    pf.add_argument("--num-classes", type=int, default=1000, help="a model name's classifier width")
    pf.add_argument("--repeats", type=int, default=30, help="timed runs per latency (after warm-up)")
    pf.add_argument("--json", action="store_true", help="print every number as JSON")
    pf.set_defaults(fn=cmd_profile)

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

    di = sub.add_parser("distill", help="knowledge distillation: train a small student on a big teacher's logits",
                        description="Hinton-style distillation: loss = kd_alpha * KL(teacher/T || student/T) * T^2 "
                                    "+ (1 - kd_alpha) * CE. The other flags are train's and configure the student; "
                                    "--data defaults to the teacher's training data.")
    di.add_argument("--teacher", required=True, metavar="RUN", help="a run folder or weights file")
    di.add_argument("--student", dest="model", metavar="MODEL", help="the student model (same as --model)")
    # --kd-alpha, not --alpha: --alpha is already mobilenet-v1's width multiplier, which a student may need
    di.add_argument("--kd-alpha", type=float, default=0.5, help="weight of the teacher term, 0..1 (Hinton's alpha)")
    di.add_argument("--temperature", type=float, default=4.0, help="softmax temperature T")
    di.add_argument("--teacher-cache", action=argparse.BooleanOptionalAction, default=True,
                    help="compute the teacher's logits once when there is no augmentation (default)")
    di.add_argument("--config", help="YAML file of the student's settings (as for train)")
    add_config_flags(di)
    di.set_defaults(fn=cmd_distill)

    de = sub.add_parser("demo", help="compare a small and a big model on the embedded digits set; writes report.html")
    de.add_argument("--models", default="mobilenet-v1,resnet18")
    de.add_argument("--epochs", type=int, default=10)
    de.add_argument("--image-size", type=int, default=None, help="upscale digits to this many pixels per side")
    de.add_argument("--project", default="runs/demo")
    de.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
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
