"""The Fashion-MNIST speedrun: `daxiao train --recipe speedrun`, then the test set, per seed, timed from
process start to the final test accuracy.

Each seed runs in a fresh process (python start, imports, data loading, bf16 decision, training, test) that
does exactly what these two commands do, in one process:

    daxiao train --data fashion-mnist --recipe speedrun --seed S --project runs/speedrun --name speedrun-sS
    daxiao evaluate runs/speedrun/speedrun-sS          # the full 10,000-image test set, with the run's TTA

Printed per seed and as a mean: wall seconds (from the process's start to its test accuracy), the CPU
seconds the process used (user + system: on a machine shared with other work, wall / CPU shows the share
it got; on 2 idle cores wall is about CPU / 2), epochs,
test accuracy, training images/s, achieved training GFLOP/s (torch's FLOP counter on one training step of
the model, times the images trained, over the seconds the epochs took) and MFU: that rate over this
machine's fp32 matmul peak, measured first with a big torch.matmul loop (benchmarks/machine.py; the bf16
peak is printed too, since --precision auto may train in bf16 on AMX). With the CPU's model and flags.

Run from the repository root, under the shared lock (3 x ~10 minutes):

    flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/speedrun.py
    flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/speedrun.py --recipe speedrun-30   # 30-minute tier

Writes benchmarks/results/speedrun.json (speedrun-30.json for the other tier) with top-level
mean_test_accuracy and mean_wall_seconds, the per-seed rows, the CPU, the peak and the load averages.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))


def child(recipe: str, seed: int, project: str, data_dir: str | None) -> dict:
    """One seed, as the two CLI commands do it; prints a JSON line."""
    from daxiao.cli import main
    from daxiao.inference.report import evaluate_model

    name = f"{recipe}-s{seed}"
    argv = ["train", "--data", "fashion-mnist", "--recipe", recipe, "--seed", str(seed), "--project", project,
            "--name", name, "--exist-ok"] + (["--data-dir", data_dir] if data_dir else [])
    if main(argv) != 0:
        raise SystemExit("training failed")
    test = evaluate_model(Path(project) / name, split="test")
    return {"test_accuracy": test["acc"], "test_images": test["n"], "run": str(Path(project) / name)}


def train_flops_per_image(run: Path) -> float:
    """FLOPs of one training step (forward + backward) per image, by torch's FLOP counter, for the run's model."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from daxiao.models.saved import load_run

    loaded = load_run(run)
    model, pre = loaded.model.train(), loaded.preprocess
    x = torch.randn(8, pre.channels, pre.image_size, pre.image_size)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(8, dtype=torch.long)).backward()
    return counter.get_total_flops() / 8


def one_seed(recipe: str, seed: int, project: str, data_dir: str | None, peak: dict) -> dict:
    from machine import load_average

    load_before = load_average()
    cmd = [sys.executable, __file__, "--child", "--recipe", recipe, "--seed", str(seed), "--project", project]
    cmd += ["--data-dir", data_dir] if data_dir else []
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)  # what a busy machine cannot steal
    if p.returncode:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        raise SystemExit(f"seed {seed} failed")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    rows = list(csv.DictReader((Path(out["run"]) / "metrics.csv").open()))
    train_s = sum(float(r["epoch_seconds"]) for r in rows)
    images = sum(float(r["images_per_s"]) * float(r["epoch_seconds"]) for r in rows)
    flops = train_flops_per_image(Path(out["run"])) * images
    gflops = flops / train_s / 1e9
    return {"seed": seed, "wall_seconds": wall, "cpu_seconds": cpu_s, "epochs": len(rows), "train_seconds": train_s,
            "test_accuracy": out["test_accuracy"], "test_images": out["test_images"],
            "best_val_accuracy": max(float(r["val_acc"]) for r in rows), "images_per_s": images / train_s,
            "train_gflops_per_s": gflops, "mfu_fp32": gflops / peak["fp32_gflops"],
            "mfu_bf16": gflops / peak["bf16_gflops"] if peak.get("bf16_gflops") else None,
            "load_before": load_before, "load_after": load_average(), "run": out["run"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="speedrun", help="speedrun (10 minutes) or speedrun-30 (30 minutes)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--project", default="runs/speedrun")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.recipe, args.seed, args.project, args.data_dir)))
        return
    from machine import cpu_summary, load_average, matmul_peak
    from rich.console import Console
    from rich.table import Table

    from daxiao.config.recipes import RECIPES

    cpu, load_start = cpu_summary(), load_average()
    peak = matmul_peak()
    rows = [one_seed(args.recipe, s, args.project, args.data_dir, peak) for s in args.seeds]
    table = Table(title=f"{args.recipe} on Fashion-MNIST - {cpu['model']}, {cpu['cores']} cores ({cpu['flags']}); "
                        f"fp32 matmul peak {peak['fp32_gflops']:.0f} GFLOP/s, bf16 {peak.get('bf16_gflops', 0):.0f}")
    for col in ("seed", "wall s", "CPU s", "epochs", "test acc", "img/s", "GFLOP/s", "MFU fp32", "MFU bf16", "load"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["seed"]), f"{r['wall_seconds']:.0f}", f"{r['cpu_seconds']:.0f}", str(r["epochs"]),
                      f"{r['test_accuracy']:.4f}",
                      f"{r['images_per_s']:,.0f}", f"{r['train_gflops_per_s']:.0f}", f"{r['mfu_fp32']:.0%}",
                      f"{r['mfu_bf16']:.0%}" if r["mfu_bf16"] else "-", r["load_before"])
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("wall_seconds", "test_accuracy", "images_per_s",
                                                               "train_gflops_per_s", "mfu_fp32")}
    table.add_row("mean", f"{mean['wall_seconds']:.0f}", "", "", f"{mean['test_accuracy']:.4f}",
                  f"{mean['images_per_s']:,.0f}", f"{mean['train_gflops_per_s']:.0f}", f"{mean['mfu_fp32']:.0%}",
                  "", "")
    Console(width=160).print(table)
    name = "speedrun.json" if args.recipe == "speedrun" else f"{args.recipe}.json"
    path = ROOT / "benchmarks" / "results" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "recipe": args.recipe, "settings": RECIPES[args.recipe],
        "command": f"daxiao train --data fashion-mnist --recipe {args.recipe} --seed S && daxiao evaluate RUN",
        "mean_test_accuracy": mean["test_accuracy"], "mean_wall_seconds": mean["wall_seconds"],
        "std_test_accuracy": statistics.stdev(r["test_accuracy"] for r in rows) if len(rows) > 1 else 0.0,
        "mean_images_per_s": mean["images_per_s"], "mean_train_gflops_per_s": mean["train_gflops_per_s"],
        "mean_mfu_fp32": mean["mfu_fp32"], "peak": peak, "cpu": cpu, "load_start": load_start,
        "load_end": load_average(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seeds": rows,
    }, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
