"""`daxiao evaluate`, `predict`, `embed`, `profile`, `models` and `datasets`: the commands that read."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from ..console import escape, out
from .deploy import add_runtime_flags, print_predictions


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..deploy.runtime import is_deploy_source

    if is_deploy_source(args.weights):  # a bundle or .onnx: onnxruntime, no torch
        from .deploy import evaluate_bundle

        r = evaluate_bundle(args)
    else:
        from ..inference.report import evaluate_model
        from ..models.saved import resolve_weights

        weights = resolve_weights(args.weights)
        out_dir = args.out or (weights.parent / f"eval-{args.split}" if Path(args.weights).is_dir() else None)
        r = evaluate_model(weights, args.data, args.split, out_dir, args.batch_size, args.data_dir, args.workers)
        _report_skipped([(p, why) for p, why in r["skipped"]])
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    table = Table(title=escape(f"{r['data']} ({r['split']}, {r['n']} images)"))
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c, m in r["per_class"].items():
        table.add_row(escape(c), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    out.print(table)
    top5 = f"   top-5 {r['top5']:.4f}" if "top5" in r else ""
    out.print(f"accuracy {r['acc']:.4f}{top5}   loss {r['loss']:.4f}")
    for f in r.get("files", []):
        out.print(f"wrote {f}", markup=False)
    return 0

def cmd_predict(args: argparse.Namespace) -> int:
    from ..deploy.runtime import is_deploy_source

    if is_deploy_source(args.weights):  # a bundle or .onnx: onnxruntime, no torch
        from .deploy import predict_bundle

        return predict_bundle(args)
    from ..inference.predict import predict

    results = predict(args.weights, args.images, top_k=args.top_k)
    _report_skipped([(r["file"], r["error"].removeprefix("bad image: ")) for r in results if "error" in r])
    return print_predictions(results, args.json)

def cmd_embed(args: argparse.Namespace) -> int:
    from ..inference.embed import embed

    r = embed(args.source, args.data, args.out, args.split, args.image_size, args.data_dir, args.batch_size,
              args.workers)
    _report_skipped(r["skipped"])
    out.print(f"wrote {r['features']} {tuple(r['shape'])}, {r['labels']} and {r['json']} "
              f"(rows: {', '.join(f'{k} {a}-{b}' for k, (a, b) in r['rows'].items())})", markup=False)
    return 0

def _report_skipped(skipped: list) -> None:
    """One line on stderr: how many files were skipped, by reason (results stay alone on stdout)."""
    if skipped:
        from ..console import console, escape
        from ..data.folder import skipped_summary

        console.print(f"[yellow]{escape(skipped_summary(skipped))}[/]")


def cmd_models(args: argparse.Namespace) -> int:
    from ..inference.profile import count_macs, count_params, human
    from ..models import create_model, list_models, model_info

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
    from ..data.builtin import BUILTIN

    if args.inspect:
        return _inspect(args)
    table = Table(title="built-in datasets (or --data FOLDER / --data list.csv)")
    table.add_column("name")
    table.add_column("where it looks")
    for d in BUILTIN.values():
        table.add_row(d.name, d.where)
    out.print(table)
    return 0

def _inspect(args: argparse.Namespace) -> int:
    from ..data.inspect import inspect_data

    r = inspect_data(args.inspect, args.val, args.val_split)
    if args.json:
        print(json.dumps(r, indent=2, ensure_ascii=False))
        return 0
    out.print(r["layout"], markup=False, highlight=False)
    table = Table(title=escape(f"{r['path']}: {len(r['classes'])} classes"))
    table.add_column("class")
    for name in r["splits"]:
        table.add_column(name, justify="right")
    for c in r["classes"]:
        table.add_row(escape(c), *(f"{s['counts'][c]:,}" for s in r["splits"].values()))
    table.add_row("[bold]all readable[/]", *(f"[bold]{s['images']:,}[/]" for s in r["splits"].values()))
    table.add_row("unreadable", *(f"{s['unreadable']:,}" for s in r["splits"].values()))
    out.print(table)
    for name, s in r["splits"].items():
        out.print(f"sizes ({name}): {s['sizes']}", markup=False, highlight=False)
    out.print("modes: " + ", ".join(f"{m} {n:,}" for m, n in sorted(r["modes"].items())), markup=False)
    out.print(f"training would use {r['channels']}x{r['image_size']}x{r['image_size']}: {r['size_rule']}; "
              f"channels {r['channels']} ({'every image is greyscale' if r['channels'] == 1 else 'colour images'})",
              markup=False, highlight=False)
    for f, why in r["unreadable"][:20]:
        out.print(f"unreadable: {f} ({why})", markup=False, highlight=False)
    if len(r["unreadable"]) > 20:
        out.print(f"... and {len(r['unreadable']) - 20} more unreadable files (--json lists them all)")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from ..inference.profile import human, human_bytes, load_for_profile, profile_model

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
    out.print("ONNX and int8 latencies: `daxiao export RUN [--int8]` measures them and records them in the bundle.")
    return 0


def add_commands(sub) -> None:
    e = sub.add_parser("evaluate", help="accuracy, per-class metrics, confusion matrix, predictions.csv")
    e.add_argument("weights", metavar="RUN_BUNDLE_OR_ONNX")
    e.add_argument("--data", help="built-in name, folder or CSV (default: the data it was trained on)")
    e.add_argument("--data-dir")
    e.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="split of a built-in set (default test; val where there is no test split)")
    e.add_argument("--out", help="folder for confusion_matrix.png and predictions.csv (default: RUN/eval-SPLIT)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--workers", type=int, default=2)
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_runtime_flags(e)
    e.set_defaults(fn=cmd_evaluate)

    pr = sub.add_parser("predict", help="top-k classes for images or folders of images")
    pr.add_argument("weights", metavar="RUN_BUNDLE_OR_ONNX")
    pr.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    pr.add_argument("--top-k", type=int, default=5)
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    add_runtime_flags(pr)
    pr.set_defaults(fn=cmd_predict)

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

    d = sub.add_parser("datasets", help="built-in datasets and where each looks for its files; --inspect PATH: "
                                        "what daxiao sees in a folder or CSV")
    d.add_argument("--inspect", metavar="PATH", help="a folder or CSV: layout, classes and counts per split, sizes, "
                                                     "modes, unreadable files, the size training would use")
    d.add_argument("--val", help="a separate validation folder or CSV, as train's --val")
    d.add_argument("--val-split", type=float, default=0.1, help="as train's --val-split (for the layout line)")
    d.add_argument("--json", action="store_true", help="print everything as JSON")
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
