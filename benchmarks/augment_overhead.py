"""What does augmentation cost per epoch? seed-cnn on Fashion-MNIST with --augment none vs seed.

The article's ImageDataGenerator settings (`--augment seed`) run as one combined affine per image on
the whole uint8 batch (affine_grid + grid_sample). Target: an epoch with `seed` costs at most 15 % more
wall time than without. Epochs alternate none/seed so drifting machine load hits both alike; the table
reports medians.

    .venv/bin/python benchmarks/augment_overhead.py          # ~1-2 min on 2 cores

Writes benchmarks/results/augment_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from daxiao import create_model
from daxiao.config import DataConfig, OptimConfig
from daxiao.data import load_data, make_loader
from daxiao.data.augment import build_augment
from daxiao.training.loop import train_one_epoch
from daxiao.training.losses import build_criterion
from daxiao.training.optim import build_optimizer, build_scheduler
from daxiao.training.session import Session

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "augment_overhead.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per setting")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    a = p.parse_args()
    bundle = load_data(DataConfig(data="fashion-mnist"), seed=0)
    specs = {"none": None, "seed": build_augment("seed", 10)}
    times: dict[str, list[float]] = {k: [] for k in specs}
    torch.manual_seed(0)
    model = create_model("seed-cnn", num_classes=10, in_chans=1, input_size=28).to(memory_format=torch.channels_last)
    o = OptimConfig(lr=2e-3)
    opt = build_optimizer(model, o)
    loaders = {k: make_loader(bundle.train, a.batch_size, bundle.preprocess, shuffle=True, augment=aug)
               for k, aug in specs.items()}
    sched = build_scheduler(opt, o, len(loaders["none"]), 2 * (a.repeats + 1))
    criterion = build_criterion()
    bf16 = a.precision == "bf16"
    for epoch in range(a.repeats + 1):  # epoch 0 of each is an untimed warm-up
        for k, loader in loaders.items():
            loader.set_epoch(epoch)
            t0 = time.perf_counter()
            train_one_epoch(Session(model, loader, None, criterion, opt, sched, bf16, torch.device("cpu"),
                                    bundle.preprocess, bundle.classes))
            if epoch:
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["seed"] / med["none"]
    table = Table(title=f"seed-cnn epoch on Fashion-MNIST ({len(bundle.train):,} images, batch {a.batch_size}, "
                        f"{a.precision}), median of {a.repeats}")
    for col in ("augment", "epoch s (median)", "spread", "images/s", "vs none"):
        table.add_column(col, justify="left" if col == "augment" else "right")
    for k, v in times.items():
        table.add_row(k, f"{med[k]:.2f}", f"{max(v) - min(v):.2f}", f"{len(bundle.train) / med[k]:,.0f}",
                      f"{med[k] / med['none']:.3f}x")
    Console().print(table)
    verdict = "meets" if ratio <= 1.15 else "misses"
    print(f"augment seed costs {100 * (ratio - 1):+.1f} % per epoch ({verdict} the <= 15 % target)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"epoch_seconds": times, "median": med, "ratio": ratio,
                                   "batch_size": a.batch_size, "precision": a.precision,
                                   "threads": torch.get_num_threads(), "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
