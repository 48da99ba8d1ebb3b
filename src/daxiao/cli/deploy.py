"""`daxiao export` and `daxiao serve`, and the bundle side of `predict`/`evaluate` (called from inspect.py
when they are given a bundle or an .onnx file). Nothing here imports torch unless exporting."""

from __future__ import annotations

import argparse
import json

from ..console import console as err
from ..console import escape, out


def cmd_export(args: argparse.Namespace) -> int:
    from ..deploy.export import export_run

    r = export_run(args.run, args.format, args.out, args.int8, args.calib, args.data, args.data_dir,
                   args.parity_images, args.exist_ok)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    lat = r["latency"]
    line = f"wrote {r['bundle']} (default {r['default']}; batch-1 fp32 {lat['fp32']['median_ms']:.3f} ms"
    if "int8" in lat:
        line += f", int8 {lat['int8']['median_ms']:.3f} ms"
    out.print(line + f" on {lat['threads']} threads)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..deploy.serve import serve

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"note: serving on {args.host}: reachable from other machines; there is no authentication.")
    serve(args.source, args.host, args.port, args.workers, max_bytes=int(args.max_mb * 1024 * 1024),
          timeout_s=args.timeout, top_k=args.top_k, threads=args.threads, variant=args.variant)
    return 0


def predict_bundle(args: argparse.Namespace) -> int:
    """`daxiao predict BUNDLE|MODEL.onnx images...` with onnxruntime."""
    from ..deploy.runtime import open_for_cli, predict_files

    engine = open_for_cli(args.weights, args)
    return print_predictions(predict_files(engine, args.images, k=args.top_k), args.json)


def print_predictions(results: list[dict], as_json: bool) -> int:
    """predict's output, for a run or a bundle: JSON, or a line per file with names printed literally;
    exit status 1 when no file could be predicted."""
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                out.print(f"{escape(r['file'])}: [red]{escape(r['error'])}[/]")
            else:
                out.print(f"{r['file']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"]),
                          markup=False, highlight=False)
    return 1 if all("error" in r for r in results) else 0


def evaluate_bundle(args: argparse.Namespace) -> dict:
    """`daxiao evaluate BUNDLE` with onnxruntime: the same report as for a run (printed by inspect.py)."""
    from pathlib import Path

    from ..deploy.evaluate import evaluate_engine
    from ..deploy.runtime import open_for_cli

    engine = open_for_cli(args.weights, args)
    home = engine.bundle.path if engine.bundle else Path(args.weights).parent
    out_dir = args.out or home / f"eval-{args.split}"
    return evaluate_engine(engine, args.data, args.split, out_dir, min(args.batch_size, 256), args.data_dir,
                           args.workers)


def add_runtime_flags(p: argparse.ArgumentParser) -> None:
    """Flags of predict/evaluate that only apply to bundles and .onnx files."""
    g = p.add_argument_group("bundles and .onnx files")
    g.add_argument("--variant", choices=["fp32", "int8"], help="a bundle's model (default: the bundle's default)")
    g.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: one per core)")
    g.add_argument("--classes", help="for a bare .onnx file: class names a,b,c or a file with one per line")
    g.add_argument("--image-size", type=int, help="for a bare .onnx file: input side in pixels")
    g.add_argument("--resize", choices=["squash", "crop", "pad"], help="for a bare .onnx file (default squash)")
    g.add_argument("--mean", help="for a bare .onnx file: per-channel mean, e.g. 0.485,0.456,0.406 (default 0.5)")
    g.add_argument("--std", help="for a bare .onnx file: per-channel std (default 0.5)")


def add_commands(sub) -> None:
    ex = sub.add_parser("export", help="a run -> a verified bundle (ONNX or TorchScript, optionally int8)",
                        description="Export a run folder or weights file to a bundle folder: the model, its "
                                    "preprocessing, classes, the run's config and metrics, and a parity report "
                                    "against PyTorch on real validation images (an export that predicts "
                                    "differently is refused and writes nothing).")
    ex.add_argument("run", metavar="RUN_OR_WEIGHTS")
    ex.add_argument("--format", default="onnx", help="onnx (default) or torchscript")
    ex.add_argument("--int8", action="store_true",
                    help="also an int8 model (onnxruntime static quantization); it becomes the default only if "
                         "measured faster here with at most 1 point of accuracy lost")
    ex.add_argument("--calib", type=int, default=256, help="training images to calibrate int8 on (default 256)")
    ex.add_argument("--out", help="bundle folder (default: RUN/bundle-FORMAT, never overwriting)")
    ex.add_argument("--exist-ok", action="store_true", help="replace an existing --out bundle")
    ex.add_argument("--data", help="labelled images for parity and calibration (default: the run's own data)")
    ex.add_argument("--data-dir")
    ex.add_argument("--parity-images", type=int, default=1000, help="validation images compared (default 1000)")
    ex.add_argument("--json", action="store_true", help="print the summary as JSON")
    ex.set_defaults(fn=cmd_export)

    sv = sub.add_parser("serve", help="HTTP service with a web page for a bundle (or a run folder)",
                        description="POST /predict, GET /model, /health, /docs, and a page at /.")
    sv.add_argument("source", metavar="BUNDLE_OR_RUN")
    sv.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default 1)")
    sv.add_argument("--threads", type=int, help="onnxruntime intra-op threads per process (default: one per core)")
    sv.add_argument("--variant", choices=["fp32", "int8"], help="a bundle's model (default: the bundle's default)")
    sv.add_argument("--max-mb", type=float, default=10.0, help="upload limit in MB (default 10; larger -> 413)")
    sv.add_argument("--timeout", type=float, default=30.0, help="seconds per request body and per prediction")
    sv.add_argument("--top-k", type=int, default=5)
    sv.set_defaults(fn=cmd_serve)
