"""Big versus small on Fashion-MNIST, measured: the `daxiao compare` table under one wall-clock budget per model,
then knowledge distillation from the best big model into MobileNet-v1 (alpha 0.5).

Part 1, compare. Every model trains under the same recipe (adam 1e-3, cosine, batch 128, precision auto, seed 0)
for as many epochs as fit in --budget-minutes of wall time (measured per model by `daxiao compare`'s budget
probe), on a stratified subset of the training split (--train-images, 600 per class by default) with
--val-images held out for picking the best epoch; test accuracy on all 10,000 test images. Models:
    seed-cnn (the article's DNN), squeezenet1_1, mobilenet-v1 at alpha 0.25/0.5/1.0, mobilenetv2, resnet18
    (28 px, stride-1 stems), and efficientnet-lite0 fine-tuned from its ImageNet weights (every layer
    trains; images upscaled to 64 px and repeated over RGB: lite0's stem needs more than 28 px, and 224 px
    would take hours on this CPU, see benchmarks/transfer.py).
Latency is batch 1 on one thread (`daxiao profile`), fp32.

Part 2, distillation. Teacher: the most accurate model of the article's "big" camp in part 1. Student:
mobilenet-v1 alpha 0.5 with the epochs it got in part 1. For each seed, the student trains alone and with
distillation (--kd-alpha, --temperature), same data, epochs and seed; test accuracy on all 10,000 test
images. Target: distillation +0.5 points or more on the mean.

Run from the repository root with one thread. The parts can run as separate commands, and part 1 reuses
finished models (`compare --resume`), so it can also be run a few models at a time:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/big_vs_small.py                    # both parts, ~20 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/big_vs_small.py --part compare
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/big_vs_small.py --part distill --seeds 0 1

Writes benchmarks/results/big_vs_small.json and benchmarks/results/big_vs_small_pareto.png (and
_curves.png); the run folders and report.html go to runs/big_vs_small/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from daxiao.compare.runner import DataCache, compare, compare_table
from daxiao.config import RunConfig, apply_overrides
from daxiao.inference.report import evaluate_model
from daxiao.models import model_info
from daxiao.training.distill import distill
from daxiao.training.runs import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("seed-cnn,squeezenet1_1,mobilenet-v1[alpha=0.25],mobilenet-v1[alpha=0.5],mobilenet-v1,mobilenetv2,"
          "resnet18,efficientnet-lite0[pretrained=true,image_size=64]")
STUDENT = "mobilenet-v1[alpha=0.5]"
console = Console(width=None if sys.stdout.isatty() else 170)


def recipe(args: argparse.Namespace, seed: int = 0, name: str = "compare") -> RunConfig:
    return apply_overrides(RunConfig(), {
        "data": "fashion-mnist", "batch_size": 128, "optimizer": "adam", "schedule": "cosine", "seed": seed,
        "project": str(args.runs), "name": name, "workers": 0,
    }).validate()


# ---- part 1 -------------------------------------------------------------------------------------------------
def part_compare(args: argparse.Namespace) -> dict:
    cfg = recipe(args)
    cfg.resume = True  # finished models are reused: the part can be run in pieces
    r = compare(cfg, args.models, budget_minutes=args.budget_minutes, limits=(args.train_images, args.val_images, None))
    console.print(compare_table(r["rows"], r["recipe"]))
    for kind in ("pareto", "curves"):
        shutil.copy(r["files"][kind], RESULTS / f"big_vs_small_{kind}.png")
    keep = ("label", "model", "test_acc", "best_val_acc", "epochs", "train_seconds", "params", "macs",
            "size_fp32_bytes", "size_int8_bytes", "peak_activation_bytes", "latency_ms", "latency_iqr_ms",
            "latency_all_threads_ms", "throughput_images_per_s", "pareto", "run_dir")
    return {"recipe": r["recipe"], "budget_minutes": args.budget_minutes, "train_images": args.train_images,
            "val_images": args.val_images, "test_images": 10_000, "report": r["files"]["report"],
            "rows": [{k: row[k] for k in keep} for row in r["rows"]]}


# ---- part 2 -------------------------------------------------------------------------------------------------
def part_distill(args: argparse.Namespace, compared: dict) -> dict:
    rows = compared["rows"]
    big = [r for r in rows if model_info(r["model"]).size == "big"]
    teacher = max(big, key=lambda r: r["test_acc"])
    teacher_run = Path(teacher["run_dir"])
    student_row = next(r for r in rows if r["label"] == STUDENT)
    epochs = args.student_epochs or student_row["epochs"]
    console.rule(escape(f"distillation: {teacher['label']} ({teacher['test_acc']:.4f}) -> {STUDENT}, {epochs} epochs, "
                        f"kd_alpha {args.kd_alpha}, T {args.temperature}"))
    limits = (args.train_images, args.val_images, None)
    runs = []
    for seed in args.seeds:
        cfg = apply_overrides(recipe(args, seed, f"{args.tag}plain-s{seed}"),
                              {"model": "mobilenet-v1", "alpha": 0.5, "epochs": epochs, "exist_ok": True})
        t0 = time.perf_counter()
        train(cfg, bundle=DataCache(limits).get(cfg))
        plain = {"seconds": time.perf_counter() - t0, **_test(args.runs / cfg.name)}
        cfg.name = f"{args.tag}kd-s{seed}"
        t0 = time.perf_counter()
        distill(cfg, teacher_run, args.kd_alpha, args.temperature, limits=limits)
        kd = {"seconds": time.perf_counter() - t0, **_test(args.runs / cfg.name)}
        runs.append({"seed": seed, "alone": plain, "distilled": kd, "gain_points": 100 * (kd["acc"] - plain["acc"])})
        console.print(f"seed {seed}: alone {plain['acc']:.4f}, distilled {kd['acc']:.4f} "
                      f"({runs[-1]['gain_points']:+.2f} pt)")
    gain = statistics.mean(r["gain_points"] for r in runs)
    return {"teacher": teacher["label"], "teacher_test_acc": teacher["test_acc"], "student": STUDENT,
            "epochs": epochs, "kd_alpha": args.kd_alpha, "temperature": args.temperature, "seeds": runs,
            "alone_mean": statistics.mean(r["alone"]["acc"] for r in runs),
            "distilled_mean": statistics.mean(r["distilled"]["acc"] for r in runs),
            "gain_points_mean": gain, "target_points": 0.5, "target_met": gain >= 0.5}


def _test(run: Path) -> dict:
    r = evaluate_model(run, split="test", workers=0)
    return {"acc": r["acc"], "n": r["n"]}


def distill_table(d: dict) -> Table:
    t = Table(title=f"knowledge distillation on Fashion-MNIST ({d['epochs']} epochs, same data and seed): teacher "
                    f"{escape(d['teacher'])} ({100 * d['teacher_test_acc']:.2f} %), kd_alpha {d['kd_alpha']}, "
                    f"T {d['temperature']}; test accuracy on 10,000 images")
    for col in ("seed", escape(f"{d['student']} alone"), "distilled", "gain"):
        t.add_column(col, justify="right")
    for r in d["seeds"]:
        t.add_row(str(r["seed"]), f"{100 * r['alone']['acc']:.2f} %", f"{100 * r['distilled']['acc']:.2f} %",
                  f"{r['gain_points']:+.2f} pt")
    t.add_row("mean", f"{100 * d['alone_mean']:.2f} %", f"{100 * d['distilled_mean']:.2f} %",
              f"{d['gain_points_mean']:+.2f} pt")
    return t


# ---- main ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["compare", "distill", "all"], default="all")
    p.add_argument("--models", default=MODELS)
    p.add_argument("--budget-minutes", type=float, default=1.5, help="wall-clock training minutes per model")
    p.add_argument("--train-images", type=int, default=6000)
    p.add_argument("--val-images", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--kd-alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--student-epochs", type=int, help="default: the epochs the student got in part 1")
    p.add_argument("--tag", default="", help="prefix of the part-2 run folders (to keep several settings)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "big_vs_small")
    args = p.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / "big_vs_small.json"
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if args.part in ("compare", "all"):
        results["load_average_compare"] = os.getloadavg()
        results["compare"] = part_compare(args)
        out_path.write_text(json.dumps(results, indent=2))
    if args.part in ("distill", "all"):
        results["load_average_distill"] = os.getloadavg()
        results["distill"] = part_distill(args, results["compare"])
        console.print(distill_table(results["distill"]))
        out_path.write_text(json.dumps(results, indent=2))
    console.print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
